"""Fuzzing the flow loader: random YAML text and mutations of the shipped flows either load, or
are refused with problems that name the file and line (`FlowFormatError`, `FlowCheckError`);
never another exception, so `consulta flows check` and `serve` always say where to look."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from jsonschema import Draft202012Validator

from consulta.flows.check import FlowCheckError, load_library
from consulta.flows.model import DEFINITIONS_DIR, Flow, FlowFormatError, load_yaml, parse_flow

# Hypothesis's caches go to the system's temporary folder, not the working tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "consulta-hypothesis")
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
FIXTURES = Path(__file__).parents[1] / "fixtures" / "flows"
SHIPPED = sorted(DEFINITIONS_DIR.glob("*.yaml")) + sorted(FIXTURES.glob("*.yaml"))
SOURCES = [p.read_text(encoding="utf-8") for p in SHIPPED]

# What a flow file is made of, to build YAML that gets past the tokenizer often.
TOKENS = [
    "id: ",
    "version: ",
    "title: ",
    "start: ",
    "states:",
    "type: ",
    "text: ",
    "next: ",
    "choices:",
    "when: ",
    "goto: ",
    "answer: ",
    "key: ",
    "es: ",
    "en: ",
    "fr: ",
    "keywords: ",
    "retries: ",
    "collects: ",
    "notice_version: ",
    "end",
    "consent",
    "single_choice",
    "message",
    "report",
    "a",
    "b",
    "1",
    "-3",
    "1e400",
    ".nan",
    "null",
    "true",
    "2026-11-25",
    "{privacy_url}",
    "{",
    "}",
    "[",
    "]",
    ", ",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "'",
    '"',
    "# ",
    "&x ",
    "*x",
    "<<: *x",
    "!!str ",
    "!!binary ",
    "!!python/object ",
    "| ",
    "> ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\t",
    "ñé€😀",
]
yaml_texts = st.one_of(
    st.lists(st.sampled_from([*TOKENS, "? ", "\x07", "\0"]), max_size=60).map("".join),
    st.text(max_size=200),
    st.integers(0, 400).map(lambda depth: "a: " + "[" * depth + "]" * depth),
)


@st.composite
def mutated_flows(draw: st.DrawFn) -> str:
    """A shipped flow with a few lines deleted, repeated, swapped, re-indented, cut or
    overwritten with flow-file tokens."""
    lines = draw(st.sampled_from(SOURCES)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "repeat", "swap", "indent", "cut", "replace"]))
        if action == "delete":
            del lines[i]
        elif action == "repeat":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "indent":
            lines[i] = " " * draw(st.integers(0, 8)) + lines[i].lstrip()
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            head = lines[i].split(":", 1)[0] + ": " if ":" in lines[i] else ""
            lines[i] = head + draw(st.lists(st.sampled_from(TOKENS), max_size=4).map("".join))
    return "\n".join(lines) + "\n"


SCHEMA_FILE = DEFINITIONS_DIR.parent / "schema.json"
SCHEMA = Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): \S")


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def _fuzzed(source: str, folder: Path) -> None:
    _loads_or_says_where(source, folder)


def _loads_or_says_where(source: str, folder: Path) -> None:
    """The property: every entry point of the loader answers a flow or a file:line problem."""
    name = "fuzzed.yaml"
    try:
        data = load_yaml(source, name)
    except FlowFormatError as exc:
        assert exc.path == name and exc.line >= 1 and str(exc).startswith(f"{name}:{exc.line}: ")
        data = None
    if data is not None and SCHEMA.is_valid(data):  # as flows.check hands it to parse_flow
        try:
            assert isinstance(parse_flow(data, name), Flow)
        except FlowFormatError as exc:
            assert exc.line >= 1 and str(exc).startswith(f"{name}:")

    path = folder / name
    path.write_text(source, encoding="utf-8")
    try:
        flows = load_library([path])  # flows.check.check_paths, then refused on any problem
    except FlowCheckError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.path == str(path) and problem.line >= 1 and problem.message
        for line in str(exc).splitlines():
            found = LINE.match(line)
            assert found and found["path"] == str(path) and int(found["line"]) >= 1, line
    else:
        assert [flow.path for flow in flows.values()] == [str(path)]


@FUZZ
@given(source=yaml_texts)
def test_random_yaml_loads_or_is_refused_with_file_and_line(source: str, folder: Path) -> None:
    _fuzzed(source, folder)


@FUZZ
@given(source=mutated_flows())
def test_a_mutated_flow_loads_or_is_refused_with_file_and_line(source: str, folder: Path) -> None:
    _fuzzed(source, folder)


def test_the_shipped_flows_load_unchanged(folder: Path) -> None:
    for source in SOURCES:
        _loads_or_says_where(source, folder)


@pytest.mark.parametrize(
    "source",
    ["id: a\x07\n", "id: a\0\n", "? [a]\n: b\n", "{a: 1}: b\n", "a: " + "[" * 300 + "]" * 300],
    ids=["control-character", "nul", "list-as-key", "mapping-as-key", "deep-nesting"],
)
def test_what_once_crashed_the_loader_is_a_problem_with_a_line(source: str, folder: Path) -> None:
    """Found by the fuzzing above: each escaped load_yaml as a raw exception."""
    with pytest.raises(FlowFormatError):
        load_yaml(source, "fuzzed.yaml")
    _loads_or_says_where(source, folder)
