"""`consulta flows check`: each class of mistake is reported with its file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from consulta.flows.check import SCHEMA_PATH, FlowCheckError, check_paths, load_library, main
from consulta.flows.model import DEFINITIONS_DIR

GOOD = """\
id: tiny
version: 1
title: {es: Mini, en: Tiny, fr: Petit}
start: consent
states:
  ask:
    type: single_choice
    text: {es: Elige, en: Choose, fr: Choisissez}
    choices:
      - {key: a, es: A, en: A, fr: A}
      - {key: b, es: B, en: B, fr: B}
    next:
      - when: {answer: a}
        goto: bye
      - goto: bye
  bye:
    type: end
    text: {es: Adiós, en: Bye, fr: Au revoir}
  consent:
    type: consent
    text: {es: Acepto, en: Agreed, fr: Accord}
    next: ask
"""


def problems_of(tmp_path: Path, source: str, name: str = "flow.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(source, encoding="utf-8")
    return [str(p).removeprefix(f"{tmp_path}/") for p in check_paths([path])[1]]


def test_the_shipped_flows_are_clean_and_load() -> None:
    flows = load_library()
    assert set(flows) == {"priorities", "report"}
    assert flows["priorities"].default and flows["report"].is_report


def test_a_good_flow_has_no_problems(tmp_path: Path) -> None:
    assert problems_of(tmp_path, GOOD) == []


def test_the_schema_itself_is_valid() -> None:
    Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def test_shipped_flows_point_editors_to_the_schema() -> None:
    for path in DEFINITIONS_DIR.glob("*.yaml"):
        assert path.read_text(encoding="utf-8").startswith(
            "# yaml-language-server: $schema=../schema.json"
        )


def test_yaml_syntax_error(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, GOOD.replace("  bye:\n", "  bye: [\n"))
    assert problem.startswith("flow.yaml:18: not valid YAML")  # where the parser stops


def test_schema_error_unknown_field(tmp_path: Path) -> None:
    source = GOOD.replace("    type: end\n", "    type: end\n    colour: red\n")
    assert problems_of(tmp_path, source) == [
        "flow.yaml:18: states.bye: Additional properties are not allowed ('colour' was unexpected)"
    ]


def test_schema_error_unknown_type(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, GOOD.replace("type: end", "type: goodbye"))
    assert problem.startswith("flow.yaml:17: states.bye.type: 'goodbye' is not one of")


def test_schema_error_choice_key_read_as_a_boolean(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, GOOD.replace("{key: a,", "{key: yes,"))
    assert problem.startswith("flow.yaml:10: states.ask.choices.0.key: True is not of type")


def test_unknown_target_state(tmp_path: Path) -> None:
    source = GOOD.replace("      - goto: bye\n", "      - goto: byebye\n")
    assert problems_of(tmp_path, source) == [
        "flow.yaml:15: state 'ask': unknown target state 'byebye'"
    ]


def test_unknown_start_state(tmp_path: Path) -> None:
    source = GOOD.replace("start: consent", "start: begin")
    assert "flow.yaml:4: start: unknown state 'begin'" in problems_of(tmp_path, source)


def test_unreachable_state(tmp_path: Path) -> None:
    source = GOOD + "  lost:\n    type: end\n    text: {es: a, en: b, fr: c}\n"
    assert problems_of(tmp_path, source) == [
        "flow.yaml:23: state 'lost' is unreachable from 'consent'"
    ]


def test_a_state_with_no_way_to_the_end(tmp_path: Path) -> None:
    source = GOOD.replace(
        "        goto: bye\n      - goto: bye", "        goto: bye\n      - goto: loop"
    )
    source += (
        "  loop:\n    type: text\n    text: {es: a, en: b, fr: c}\n    next: loop_again\n"
        "  loop_again:\n    type: text\n    text: {es: a, en: b, fr: c}\n    next: loop\n"
    )
    assert problems_of(tmp_path, source) == [
        "flow.yaml:23: state 'loop' has no way to an end state",
        "flow.yaml:27: state 'loop_again' has no way to an end state",
    ]


def test_missing_translation(tmp_path: Path) -> None:
    source = GOOD.replace(
        "text: {es: Elige, en: Choose, fr: Choisissez}", "text: {es: Elige, en: Choose}"
    )
    assert problems_of(tmp_path, source) == ["flow.yaml:8: state 'ask': missing translation: fr"]


def test_missing_translation_of_the_title_and_keywords(tmp_path: Path) -> None:
    source = GOOD.replace("title: {es: Mini, en: Tiny, fr: Petit}", "title: {es: Mini, fr: Petit}")
    source = source.replace("start: consent", "keywords: {es: [mini]}\nstart: consent")
    assert problems_of(tmp_path, source) == [
        "flow.yaml:3: title: missing translation: en",
        "flow.yaml:4: keywords: missing translation: en",
        "flow.yaml:4: keywords: missing translation: fr",
    ]


def test_a_choice_missing_a_language_is_a_schema_error(tmp_path: Path) -> None:
    [problem] = problems_of(
        tmp_path, GOOD.replace("{key: b, es: B, en: B, fr: B}", "{key: b, es: B, en: B}")
    )
    assert problem == "flow.yaml:11: states.ask.choices.1: 'fr' is a required property"


def test_duplicate_choice_keys(tmp_path: Path) -> None:
    source = GOOD.replace("{key: b,", "{key: a,")
    assert problems_of(tmp_path, source) == ["flow.yaml:11: state 'ask': duplicate choice key 'a'"]


def test_a_condition_on_a_value_that_is_not_a_choice(tmp_path: Path) -> None:
    source = GOOD.replace("when: {answer: a}", "when: {answer: c}")
    assert problems_of(tmp_path, source) == [
        "flow.yaml:13: state 'ask': condition on 'c', which is not a choice"
    ]


def test_a_choice_question_without_choices(tmp_path: Path) -> None:
    source = GOOD.replace(
        "      - {key: a, es: A, en: A, fr: A}\n      - {key: b, es: B, en: B, fr: B}\n", ""
    ).replace("    choices:\n", "")
    source = source.replace("when: {answer: a}", "when: {profile: {gender: woman}}")
    assert problems_of(tmp_path, source) == [
        "flow.yaml:6: state 'ask': a single_choice question needs choices"
    ]


def test_a_scale_whose_max_is_not_above_its_min(tmp_path: Path) -> None:
    source = GOOD.replace("    type: single_choice\n", "    type: scale\n    min: 5\n    max: 5\n")
    source = source.replace("when: {answer: a}", "when: {at_least: 4}")
    assert problems_of(tmp_path, source) == ["flow.yaml:9: state 'ask': max must be above min"]


def test_no_default_transition(tmp_path: Path) -> None:
    source = GOOD.replace("      - goto: bye\n", "      - when: {answer: b}\n        goto: bye\n")
    assert problems_of(tmp_path, source) == [
        "flow.yaml:15: state 'ask': the last transition needs no `when` (default)"
    ]


def test_a_question_with_no_next(tmp_path: Path) -> None:
    source = GOOD.replace(
        "    next:\n      - when: {answer: a}\n        goto: bye\n      - goto: bye\n", ""
    )
    assert "flow.yaml:6: state 'ask': no `next`: where does the flow go after it?" in problems_of(
        tmp_path, source
    )


def test_unknown_placeholder(tmp_path: Path) -> None:
    source = GOOD.replace("fr: Au revoir}", 'fr: "Au revoir {folio}"}')
    assert problems_of(tmp_path, source) == [
        "flow.yaml:18: state 'bye': unknown placeholder {folio} in fr"
        " (only report flows have a folio)"
    ]


def test_a_profile_question_of_the_wrong_kind(tmp_path: Path) -> None:
    source = GOOD.replace(
        "    type: single_choice\n", "    type: multiple_choice\n    profile: gender\n"
    )
    assert problems_of(tmp_path, source) == [
        "flow.yaml:8: state 'ask': a profile question must be single_choice, text or location"
    ]


def test_duplicate_flow_ids_and_deep_links_across_files(tmp_path: Path) -> None:
    linked = GOOD.replace("start: consent", "deep_link: mini\nstart: consent")
    (tmp_path / "a.yaml").write_text(linked, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(linked, encoding="utf-8")
    problems = [str(p).removeprefix(f"{tmp_path}/") for p in check_paths([tmp_path])[1]]
    assert problems == [
        f"b.yaml:1: duplicate flow id 'tiny' (also in {tmp_path}/a.yaml)",
        f"b.yaml:4: duplicate deep_link 'mini' (also in {tmp_path}/a.yaml)",
    ]


def test_load_library_refuses_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        GOOD.replace("goto: bye\n      - goto: bye", "goto: x\n      - goto: y")
    )
    with pytest.raises(FlowCheckError) as caught:
        load_library([tmp_path])
    # two unknown targets, so neither "ask" nor "consent" before it can end; "bye" unreachable
    assert len(caught.value.problems) == 5
    assert "bad.yaml:13: state 'ask': unknown target state 'x'" in str(caught.value)


def test_main_prints_and_exits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    assert main([str(tmp_path / "good.yaml")]) == 0
    assert "1 flow OK: tiny" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text(
        GOOD.replace("start: consent", "start: nope"), encoding="utf-8"
    )
    assert main([str(tmp_path / "bad.yaml")]) == 1
    assert f"{tmp_path}/bad.yaml:4: start: unknown state 'nope'" in capsys.readouterr().out


# --- consent: nothing is kept about a resident before a yes --------------------------------


def test_a_flow_that_asks_questions_must_ask_for_consent(tmp_path: Path) -> None:
    source = GOOD.replace("start: consent", "start: ask").split("  consent:\n")[0]
    assert problems_of(tmp_path, source) == [
        "flow.yaml:4: this flow asks questions but never for consent: start it with a `consent` "
        "question (nothing may be kept before a yes)"
    ]


def test_a_question_before_consent_is_refused(tmp_path: Path) -> None:
    source = GOOD.replace("start: consent", "start: first") + (
        "  first:\n    type: text\n    text: {es: a, en: b, fr: c}\n    next: consent\n"
    )
    assert problems_of(tmp_path, source) == [
        "flow.yaml:23: state 'first' asks a question before consent: ask for consent first"
    ]


def test_consent_cannot_be_skipped(tmp_path: Path) -> None:
    source = GOOD.replace("    next: ask\n", "    on_fail: skip\n    next: ask\n")
    assert problems_of(tmp_path, source) == [
        "flow.yaml:22: state 'consent': consent cannot be skipped (on_fail: skip); without a yes "
        "the flow ends"
    ]
    ending = GOOD.replace("    next: ask\n", "    on_fail: end\n    next: ask\n")
    assert problems_of(tmp_path, ending) == []


def test_a_no_to_consent_asks_nothing_more(tmp_path: Path) -> None:
    source = GOOD.replace(
        "    next: ask\n",
        "    next:\n      - when: {answer: false}\n        goto: ask\n      - goto: ask\n",
    )
    assert problems_of(tmp_path, source) == [
        "flow.yaml:23: state 'consent': a \"no\" must lead to an end, but it goes on to ask 'ask'"
    ]
    polite = source.replace(
        "        goto: ask\n      - goto: ask", "        goto: bye\n      - goto: ask"
    )
    assert problems_of(tmp_path, polite) == []
