"""A flow definition — a survey or a neighbourhood report as a state machine — loaded from YAML.

Loading is lenient about meaning (unknown targets, unreachable states…): that is
`flows.check`'s job, which reports every problem with its file and line. What this module
refuses is a file whose shape it cannot read at all (`FlowFormatError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from consulta.flows.i18n import LANGUAGES
from consulta.flows.kinds import KINDS, Kind

__all__ = [
    "DEFINITIONS_DIR",
    "LANGUAGES",
    "PROFILE_FIELDS",
    "Choice",
    "Condition",
    "Flow",
    "FlowFormatError",
    "Kind",
    "State",
    "Text",
    "Transition",
    "load_flow",
    "load_yaml",
    "parse_flow",
]

# Profile questions: saved on the contact and skipped in later flows when already known.
PROFILE_FIELDS = ("age_group", "gender", "municipality", "neighbourhood", "sector")
DEFINITIONS_DIR = Path(str(files("consulta.flows") / "definitions"))  # package data


class FlowFormatError(ValueError):
    """The file cannot be read as a flow at all."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


class Text(dict):
    """A resident-facing text in every language: ``{"es": ..., "en": ..., "fr": ...}``."""

    def get_text(self, lang: str) -> str:
        return self.get(lang) or self.get("es") or next(iter(self.values()), "")


@dataclass(frozen=True)
class Choice:
    key: str
    label: Text
    line: int = 0


@dataclass(frozen=True)
class Condition:
    """All given parts must hold. ``answer`` is equality (membership for multiple choice)."""

    answer: Any = None
    answer_in: tuple[Any, ...] | None = None
    at_least: float | None = None
    at_most: float | None = None
    profile: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True)
class Transition:
    goto: str
    when: Condition | None = None
    line: int = 0


@dataclass(frozen=True)
class State:
    name: str
    kind: Kind  # from `flows.kinds.KINDS`: how the state is asked, read, checked, exported
    text: Text
    choices: tuple[Choice, ...] = ()
    next: tuple[Transition, ...] = ()
    key: str = ""  # the question key answers are stored under; defaults to the state name
    profile: str | None = None  # a PROFILE_FIELDS entry: ask once, reuse
    min: float | str | None = None  # a number; for a date question an ISO date or "today"
    max: float | str | None = None
    integer: bool = True  # for number questions
    max_length: int | None = None  # for text questions
    max_choices: int | None = None  # for multiple choice
    optional: bool = False  # photo/location/text: the resident may skip with 0
    retries: int = 2  # re-prompts before on_fail applies
    on_fail: str = "skip"  # "skip" (move on with no answer) or "end" (end politely)
    notice_version: str | None = None  # for consent
    line: int = 0
    lines: Mapping[str, int] = field(default_factory=dict)  # line of each field

    @property
    def question_key(self) -> str:
        return self.key or self.name

    def choice(self, key: str) -> Choice | None:
        return next((c for c in self.choices if c.key == key), None)


@dataclass(frozen=True)
class Flow:
    id: str
    version: int
    title: Text
    start: str
    states: Mapping[str, State]
    collects: str = "submission"  # or "report"
    keywords: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    deep_link: str | None = None
    privacy_url: str | None = None
    default: bool = False  # started when a resident writes without a keyword
    path: str = ""
    line: int = 0
    lines: Mapping[str, int] = field(default_factory=dict)

    @property
    def is_report(self) -> bool:
        return self.collects == "report"

    def state(self, name: str) -> State:
        return self.states[name]


# --- YAML with line numbers -------------------------------------------------------------


class LineDict(dict):
    """A mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    lines: dict[Any, int]


class LineList(list):
    line: int = 0


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a key must be a plain name, not a list or a mapping",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _construct_text(loader: _LineLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
# `min: 2026-12-01` stays the text it is (a flow has no use for YAML's date objects, which the
# schema could not describe).
_LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)


def load_yaml(source: str, path: str = "<flow>") -> Any:
    """Parse YAML, keeping line numbers on every mapping (``.line``, ``.lines``) and list."""
    try:
        return yaml.load(source, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise FlowFormatError(path, (mark.line + 1) if mark else 1, str(exc.problem)) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, a bell…)
        line = source.count("\n", 0, exc.position) + 1
        raise FlowFormatError(
            path, line, f"a character that cannot be in YAML: {exc.reason}"
        ) from exc
    except RecursionError as exc:
        raise FlowFormatError(path, 1, "nested too deeply") from exc


def _line(node: Any, key: str | None = None) -> int:
    if key is not None and isinstance(node, LineDict):
        return node.lines.get(key, node.line)
    return getattr(node, "line", 0)


def _text(node: Any) -> Text:
    if isinstance(node, str):  # a single string is the same text in every language
        return Text({lang: node for lang in LANGUAGES})
    if isinstance(node, Mapping):
        return Text({str(k): "" if v is None else str(v) for k, v in node.items()})
    return Text()


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def _condition(node: Mapping[str, Any]) -> Condition:
    profile = node.get("profile") or {}
    return Condition(
        answer=node.get("answer"),
        answer_in=_as_tuple(node["answer_in"]) if "answer_in" in node else None,
        at_least=node.get("at_least"),
        at_most=node.get("at_most"),
        profile={str(k): tuple(str(v) for v in _as_tuple(vs)) for k, vs in profile.items()},
        line=_line(node),
    )


def _transitions(node: Any) -> tuple[Transition, ...]:
    if node is None:
        return ()
    if isinstance(node, str):
        return (Transition(goto=node, line=0),)
    result = []
    for item in node:
        if isinstance(item, str):
            result.append(Transition(goto=item, line=_line(node)))
        elif isinstance(item, Mapping):
            when = item.get("when")
            result.append(
                Transition(
                    goto=str(item.get("goto", "")),
                    when=_condition(when) if isinstance(when, Mapping) else None,
                    line=_line(item),
                )
            )
    return tuple(result)


def _choices(node: Any) -> tuple[Choice, ...]:
    result = []
    for item in node or ():
        if not isinstance(item, Mapping):
            continue
        label = {lang: item[lang] for lang in LANGUAGES if lang in item}
        result.append(Choice(key=str(item.get("key", "")), label=_text(label), line=_line(item)))
    return tuple(result)


def _state(name: str, node: Mapping[str, Any], path: str) -> State:
    type_ = node.get("type")
    kind = KINDS.get(type_) if isinstance(type_, str) else None
    if kind is None:
        raise FlowFormatError(path, _line(node, "type"), f"state {name!r}: unknown type {type_!r}")
    transitions = _transitions(node.get("next"))
    if transitions and transitions[0].line == 0:  # a plain `next: target`
        transitions = (Transition(goto=transitions[0].goto, line=_line(node, "next")),)
    return State(
        name=name,
        kind=kind,
        text=_text(node.get("text")),
        choices=_choices(node.get("choices")),
        next=transitions,
        key=str(node.get("key") or ""),
        profile=node.get("profile"),
        min=node.get("min"),
        max=node.get("max"),
        integer=bool(node.get("integer", True)),
        max_length=node.get("max_length"),
        max_choices=node.get("max_choices"),
        optional=bool(node.get("optional", False)),
        retries=int(node.get("retries", 2)),
        on_fail=str(node.get("on_fail", "skip")),
        notice_version=(
            str(node["notice_version"]) if node.get("notice_version") is not None else None
        ),
        line=_line(node),
        lines=dict(getattr(node, "lines", {})),
    )


def parse_flow(data: Any, path: str = "<flow>") -> Flow:
    """Build a `Flow` from parsed YAML (as returned by `load_yaml`)."""
    if not isinstance(data, Mapping):
        raise FlowFormatError(path, _line(data) or 1, "a flow file must be a mapping")
    states_node = data.get("states")
    if not isinstance(states_node, Mapping) or not states_node:
        raise FlowFormatError(path, _line(data, "states"), "a flow needs a `states` mapping")
    states = {}
    for name, node in states_node.items():
        if not isinstance(node, Mapping):
            raise FlowFormatError(
                path, _line(states_node, name), f"state {name!r} must be a mapping"
            )
        state = _state(str(name), node, path)
        # Point at the state's name, where a reader looks for it.
        states[str(name)] = replace(state, line=_line(states_node, name))
    keywords = data.get("keywords") or {}
    return Flow(
        id=str(data.get("id", "")),
        version=int(data.get("version", 1)),
        title=_text(data.get("title")),
        start=str(data.get("start") or next(iter(states))),
        states=states,
        collects=str(data.get("collects", "submission")),
        keywords={str(k): tuple(str(w) for w in _as_tuple(v)) for k, v in keywords.items()},
        deep_link=str(data["deep_link"]) if data.get("deep_link") else None,
        privacy_url=data.get("privacy_url"),
        default=bool(data.get("default", False)),
        path=path,
        line=_line(data),
        lines=dict(getattr(data, "lines", {})),
    )


def load_flow(path: str | Path) -> Flow:
    path = Path(path)
    return parse_flow(load_yaml(path.read_text(encoding="utf-8"), str(path)), str(path))


def flow_paths(paths: Iterable[str | Path] = ()) -> list[Path]:
    """The YAML files named, or found in the folders named (default: the shipped flows)."""
    result: list[Path] = []
    for p in [Path(p) for p in paths] or [DEFINITIONS_DIR]:
        if p.is_dir():
            result.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            result.append(p)
    return result
