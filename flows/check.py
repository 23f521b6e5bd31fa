"""`consulta flows check`: the flow schema plus meaning checks, each as `file:line: message`.

`load_library` is what the processes use: it checks, loads, and refuses (`FlowCheckError`) when
anything is wrong, so an invalid survey never reaches a resident.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from consulta.flows.engine import declined_target
from consulta.flows.kinds import KINDS
from consulta.flows.model import (
    LANGUAGES,
    Flow,
    FlowFormatError,
    LineDict,
    State,
    flow_paths,
    load_yaml,
    parse_flow,
)

__all__ = ["FlowCheckError", "Problem", "check_paths", "load_library", "main"]

SCHEMA_PATH = Path(str(files("consulta.flows") / "schema.json"))  # package data
_PLACEHOLDER = re.compile(r"{(\w*)}")


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class FlowCheckError(ValueError):
    """The flows have problems; the message lists every one."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _validator() -> Draft202012Validator:
    return _validator_for(tuple(KINDS))


@cache
def _validator_for(kinds: tuple[str, ...]) -> Draft202012Validator:
    """The schema, its list of types being the kinds registered (the file lists the same for
    editors; a test keeps them in step)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    schema["properties"]["states"]["additionalProperties"]["properties"]["type"]["enum"] = [*kinds]
    return Draft202012Validator(schema)


# --- schema -----------------------------------------------------------------------------


def _line_of(data: Any, error: ValidationError) -> int:
    """The line of the node a schema error is about (its key's line when it has one)."""
    node, line = data, getattr(data, "line", 1)
    for part in error.absolute_path:
        if isinstance(node, LineDict) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            line = getattr(node, "line", line)
        else:
            break
    if error.validator == "additionalProperties" and isinstance(node, LineDict):
        extra = [k for k in node if k not in (error.schema.get("properties") or {})]
        if extra:
            line = node.lines.get(extra[0], line)
    return line


def _schema_message(error: ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "the flow"
    if error.validator == "oneOf" and isinstance(error.instance, Mapping | list):
        if "states" in error.absolute_path and error.absolute_path[-1] == "next":
            return f"{where}: must be a state name or a list of {{when, goto}}"
        return f"{where}: must be one text, or texts in es, en and fr"
    if error.validator == "additionalProperties":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def _schema_problems(data: Any, path: str) -> list[Problem]:
    return sorted(
        Problem(path, _line_of(data, e), _schema_message(e)) for e in _validator().iter_errors(data)
    )


# --- meaning ----------------------------------------------------------------------------


def _targets(state: State) -> list[tuple[str, int]]:
    return [(t.goto, t.line or state.lines.get("next", state.line)) for t in state.next]


def _meaning_problems(flow: Flow) -> list[Problem]:
    problems: list[Problem] = []

    def report(line: int, message: str) -> None:
        problems.append(Problem(flow.path, line or flow.line, message))

    states = flow.states
    if flow.start not in states:
        report(flow.lines.get("start", 1), f"start: unknown state {flow.start!r}")
    _check_text(flow, flow.title, flow.lines.get("title", 1), "title", report)
    if flow.keywords:
        for lang in LANGUAGES:
            if not flow.keywords.get(lang):
                report(flow.lines.get("keywords", 1), f"keywords: missing translation: {lang}")

    for state in states.values():
        where = f"state {state.name!r}"
        for target, line in _targets(state):
            if target not in states:
                report(line, f"{where}: unknown target state {target!r}")
        if state.kind.ends:
            if state.next:
                report(state.lines.get("next", state.line), f"{where}: an end state has no next")
        elif not state.next:
            report(state.line, f"{where}: no `next`: where does the flow go after it?")
        elif state.next[-1].when is not None:
            report(state.next[-1].line, f"{where}: the last transition needs no `when` (default)")
        _check_text(flow, state.text, state.lines.get("text", state.line), f"{where}", report)
        _check_choices(state, where, report)
        if state.profile and not state.kind.profile:
            report(
                state.lines.get("profile", state.line),
                f"{where}: a profile question must be {_profile_kinds()}",
            )
        state.kind.check(state, _about(where, report))

    problems.extend(_consent_problems(flow))
    reachable = _reachable(flow)
    for state in states.values():
        if state.name not in reachable:
            report(state.line, f"state {state.name!r} is unreachable from {flow.start!r}")
    ending = _can_end(flow)
    for state in states.values():
        if state.name in reachable and state.name not in ending:
            report(state.line, f"state {state.name!r} has no way to an end state")
    return problems


def _check_text(flow: Flow, text: Mapping[str, str], line: int, where: str, report) -> None:  # type: ignore[no-untyped-def]
    for lang in LANGUAGES:
        if not (text.get(lang) or "").strip():
            report(line, f"{where}: missing translation: {lang}")
    allowed = {"privacy_url"} | ({"folio"} if flow.is_report else set())
    for lang, value in text.items():
        for name in _PLACEHOLDER.findall(value or ""):
            if name not in allowed:
                hint = " (only report flows have a folio)" if name == "folio" else ""
                report(line, f"{where}: unknown placeholder {{{name}}} in {lang}{hint}")


def _about(where: str, report: Callable[[int, str], None]) -> Callable[[int, str], None]:
    """A kind's problems, said of its state."""
    return lambda line, message: report(line, f"{where}: {message}")


def _profile_kinds() -> str:
    names = [name for name, kind in KINDS.items() if kind.profile]
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def _check_choices(state: State, where: str, report) -> None:  # type: ignore[no-untyped-def]
    seen: set[str] = set()
    for choice in state.choices:
        if choice.key in seen:
            report(choice.line, f"{where}: duplicate choice key {choice.key!r}")
        seen.add(choice.key)
        for lang in LANGUAGES:
            if not (choice.label.get(lang) or "").strip():
                report(choice.line, f"{where}: choice {choice.key!r}: missing translation: {lang}")


def _consent_problems(flow: Flow) -> list[Problem]:
    """Nothing about a resident is kept for a survey they have not said yes to: a flow that
    asks anything asks for consent first, and a "no" asks nothing more (that consent is never
    skipped, the consent kind checks of its own state)."""
    problems: list[Problem] = []
    consents = [s for s in flow.states.values() if s.kind.consent]
    questions = [s for s in flow.states.values() if s.kind.waits and not s.kind.consent]
    if questions and not consents:
        line = flow.lines.get("start", flow.line or 1)
        problems.append(
            Problem(
                flow.path,
                line,
                "this flow asks questions but never for consent: start it with a `consent` "
                "question (nothing may be kept before a yes)",
            )
        )
        return problems
    before = _reachable(flow, stop_at={s.name for s in consents})
    for state in questions:
        if state.name in before:
            problems.append(
                Problem(
                    flow.path,
                    state.line,
                    f"state {state.name!r} asks a question before consent: ask for consent first",
                )
            )
    for state in consents:
        where = f"state {state.name!r}"
        declined = declined_target(state)
        after_no = _reachable(flow, start=declined) if declined else set()
        asked = sorted(n for n in after_no if flow.states[n].kind.waits)
        if asked:
            line = next(
                (t.line for t in state.next if t.goto == declined), state.lines.get("next", 0)
            )
            problems.append(
                Problem(
                    flow.path,
                    line or state.line,
                    f'{where}: a "no" must lead to an end, but it goes on to ask {asked[0]!r}',
                )
            )
    return problems


def _reachable(
    flow: Flow, *, start: str | None = None, stop_at: frozenset[str] | set[str] = frozenset()
) -> set[str]:
    """The states reachable from `start` (the flow's own by default), not going past
    `stop_at` states (which are not included)."""
    seen: set[str] = set()
    todo = [flow.start if start is None else start]
    while todo:
        name = todo.pop()
        if name in seen or name not in flow.states or name in stop_at:
            continue
        seen.add(name)
        todo.extend(t.goto for t in flow.states[name].next)
    return seen


def _can_end(flow: Flow) -> set[str]:
    ending = {n for n, s in flow.states.items() if s.kind.ends}
    changed = True
    while changed:
        changed = False
        for name, state in flow.states.items():
            if name not in ending and any(t.goto in ending for t in state.next):
                ending.add(name)
                changed = True
    return ending


# --- files ------------------------------------------------------------------------------


def check_file(path: Path) -> tuple[Flow | None, list[Problem]]:
    name = str(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, 1, f"cannot read the file: {exc}")]
    try:
        data = load_yaml(source, name)
    except FlowFormatError as exc:
        return None, [Problem(name, exc.line, f"not valid YAML: {exc.message}")]
    problems = _schema_problems(data, name)
    if problems:
        return None, problems
    try:
        flow = parse_flow(data, name)
    except FlowFormatError as exc:
        return None, [Problem(name, exc.line, exc.message)]
    return flow, sorted(_meaning_problems(flow))


def check_paths(paths: Iterable[str | Path] = ()) -> tuple[dict[str, Flow], list[Problem]]:
    """Check every flow file named (or in the folders named). Returns the flows and problems."""
    flows: dict[str, Flow] = {}
    problems: list[Problem] = []
    deep_links: dict[str, Flow] = {}
    files = flow_paths(paths)
    if not files:
        problems.append(Problem(str(next(iter(paths), ".")), 1, "no flow files found"))
    for path in files:
        if not path.exists():
            problems.append(Problem(str(path), 1, "no such file"))
            continue
        flow, found = check_file(path)
        problems.extend(found)
        if flow is None:
            continue
        if flow.id in flows:
            problems.append(
                Problem(
                    flow.path,
                    flow.lines.get("id", 1),
                    f"duplicate flow id {flow.id!r} (also in {flows[flow.id].path})",
                )
            )
        if flow.deep_link and flow.deep_link in deep_links:
            problems.append(
                Problem(
                    flow.path,
                    flow.lines.get("deep_link", 1),
                    f"duplicate deep_link {flow.deep_link!r} "
                    f"(also in {deep_links[flow.deep_link].path})",
                )
            )
        flows.setdefault(flow.id, flow)
        if flow.deep_link:
            deep_links.setdefault(flow.deep_link, flow)
    return flows, problems


def load_library(paths: Iterable[str | Path] = ()) -> dict[str, Flow]:
    """The checked flows by id; raises `FlowCheckError` listing every problem."""
    flows, problems = check_paths(list(paths))
    if problems:
        raise FlowCheckError(problems)
    return flows


def main(paths: list[str]) -> int:
    flows, problems = check_paths(paths)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"{len(flows)} flow{'s' if len(flows) != 1 else ''} OK: {', '.join(sorted(flows))}")
    return 0
