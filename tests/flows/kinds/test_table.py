"""The table of kinds: every kind asked through `KINDS` (reading, asking, re-asking, exporting),
the schema listing the same types, and a kind added in a test being used by the engine,
`flows check`, the exports and the API without another line anywhere."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from consulta.bot.api import choice_labels, choice_questions
from consulta.bot.export import Export
from consulta.flows.check import SCHEMA_PATH, check_paths
from consulta.flows.engine import (
    Conversation,
    Engine,
    Location,
    Media,
    Message,
    Outcome,
    Resident,
    SaveAnswer,
)
from consulta.flows.i18n import t
from consulta.flows.kinds import KINDS, Ask, Invalid, Kind, Problem, Reply
from consulta.flows.model import State, load_flow
from consulta.flows.normalise import normalise

FIXTURES = Path(__file__).parents[2] / "fixtures" / "flows"
KINDS_FLOW = load_flow(FIXTURES / "kinds.yaml")
DATES_FLOW = load_flow(FIXTURES / "dates.yaml")
TODAY = date(2026, 11, 22)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def state(name: str) -> State:
    flow = DATES_FLOW if name in DATES_FLOW.states else KINDS_FLOW
    return flow.state(name)


def reply(text: str = "", **kwargs: Any) -> Reply:
    return Reply(text, normalise(text), today=TODAY, **kwargs)


def test_the_schema_lists_the_kinds_of_the_table() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    types = schema["properties"]["states"]["additionalProperties"]["properties"]["type"]["enum"]
    assert types == list(KINDS)


def test_each_kind_is_a_module_of_its_own() -> None:
    for name, kind in KINDS.items():
        assert kind.name == name
        assert type(kind).__module__ == f"consulta.flows.kinds.{name}"


def test_a_states_kind_is_the_tables() -> None:
    assert KINDS_FLOW.state("age").kind is KINDS["single_choice"]
    assert DATES_FLOW.state("since").kind is KINDS["date"]


def test_what_each_kind_says_of_itself() -> None:
    def having(flag: str) -> list[str]:
        return [name for name, kind in KINDS.items() if getattr(kind, flag)]

    assert [n for n, k in KINDS.items() if not k.waits] == ["message", "end"]
    assert having("ends") == ["end"]
    assert having("consent") == ["consent"]
    assert having("chooses") == ["single_choice", "multiple_choice"]  # a Telegram poll can ask
    assert having("multiple") == ["multiple_choice"]
    assert having("profile") == ["single_choice", "text", "location"]
    assert having("summarised") == ["single_choice", "multiple_choice", "yes_no", "scale"]


PIN = Location(19.43, -99.13, "Zócalo")
PHOTO = Media("media/x.jpg", "image/jpeg")


@pytest.mark.parametrize(
    ("name", "answer", "value"),
    [
        ("age", reply("Âgé"), "older"),
        ("age", reply("older"), "older"),  # a pressed button's key
        ("likes", reply("agua y parques"), ["water", "parks"]),
        ("likes", reply("2"), ["light"]),
        ("agree", reply("oui"), True),
        ("consent", reply("nel"), False),
        ("score", reply("4"), 4),
        ("count", reply("12"), 12),
        ("why_low", reply("Sin luz"), "Sin luz"),
        ("place", reply(location=PIN), {"latitude": 19.43, "longitude": -99.13, "label": "Zócalo"}),
        ("place", reply("Calle Hidalgo"), {"text": "Calle Hidalgo"}),
        ("pic", reply(media=(PHOTO,)), {"media": "media/x.jpg", "content_type": "image/jpeg"}),
        ("since", reply("ayer"), "2026-11-21"),
    ],
)
def test_each_kind_reads_its_answer(name: str, answer: Reply, value: Any) -> None:
    s = state(name)
    assert KINDS[s.kind.name].parse(s, answer) == value


def test_a_pressed_buttons_key_may_have_capitals() -> None:
    age = state("age")
    upper = replace(age, choices=tuple(replace(c, key=c.key.upper()) for c in age.choices))
    assert upper.kind.parse(upper, Reply("OLDER", "OLDER")) == "OLDER"  # as the engine passes it
    likes = state("likes")
    upper = replace(likes, choices=tuple(replace(c, key=c.key.upper()) for c in likes.choices))
    assert upper.kind.parse(upper, Reply("PARKS", "PARKS")) == ["PARKS"]


@pytest.mark.parametrize(
    ("name", "answer", "msgid", "params"),
    [
        ("age", "7", "reprompt-choice", {"max": 2}),
        ("likes", "1 2 3", "reprompt-multiple", {"max": 3}),
        ("agree", "quizás", "reprompt-yes-no", {}),
        ("consent", "quizás", "reprompt-yes-no", {}),
        ("score", "9", "reprompt-scale", {"min": 1, "max": 5}),
        ("count", "21", "reprompt-number", {"min": "0", "max": "20"}),
        ("parks_detail", "a" * 11, "reprompt-text-too-long", {"max": 10}),
        ("place", "1", "reprompt-location", {}),
        ("pic", "foto", "reprompt-photo", {}),
        ("since", "hola", "reprompt-date", {}),
        ("since", "mañana", "reprompt-date-until", {"max": TODAY}),
    ],
)
def test_each_kind_refuses_what_does_not_fit(
    name: str, answer: str, msgid: str, params: dict[str, Any]
) -> None:
    s = state(name)
    with pytest.raises(Invalid) as caught:
        s.kind.parse(s, reply(answer))
    assert (caught.value.msgid, caught.value.params, caught.value.counts) == (msgid, params, True)


@pytest.mark.parametrize(
    ("name", "msgid"),
    [
        ("age", "reprompt-choice"),
        ("likes", "reprompt-multiple"),
        ("agree", "reprompt-yes-no"),
        ("score", "reprompt-scale"),
        ("count", "reprompt-text"),
        ("why_low", "reprompt-text"),
        ("place", "reprompt-location"),
        ("pic", "reprompt-photo"),
        ("since", "reprompt-date"),
    ],
)
def test_each_kind_has_a_reprompt_for_a_stale_button(name: str, msgid: str) -> None:
    s = state(name)
    assert s.kind.reprompt(s).msgid == msgid


@pytest.mark.parametrize(
    ("name", "ask"),
    [
        (
            "age",
            Ask(("1. Jeune\n2. Âgé",), (("young", "Jeune"), ("older", "Âgé"))),
        ),
        (
            "likes",
            Ask(
                ("1. Eau\n2. Lumière\n3. Parcs", t("fr", "hint-multiple")),
                (("water", "Eau"), ("light", "Lumière"), ("parks", "Parcs")),
            ),
        ),
        ("agree", Ask(("1. Oui\n2. Non",), (("1", "Oui"), ("2", "Non")))),
        ("consent", Ask(("1. Oui\n2. Non",), (("1", "Oui"), ("2", "Non")))),
        ("score", Ask((), tuple((str(n), str(n)) for n in range(1, 6)))),
        ("count", Ask()),
        ("why_low", Ask()),
        ("place", Ask((t("fr", "hint-location"),), expects="location")),
        ("pic", Ask(expects="photo")),
        ("since", Ask()),
        ("hello", Ask()),
    ],
)
def test_each_kind_says_how_it_is_asked(name: str, ask: Ask) -> None:
    s = state(name)
    assert s.kind.prompt(s, "fr") == ask


@pytest.mark.parametrize(
    ("name", "value", "labels", "codes"),
    [
        ("age", "older", "Mayor", "older"),
        ("likes", ["water", "parks"], "Agua; Parques", "water; parks"),
        ("agree", False, "No", "no"),
        ("consent", True, "Sí", "yes"),
        ("score", 4, 4, 4),
        ("count", 12, 12, 12),
        ("why_low", "Sin luz", "Sin luz", "Sin luz"),
        ("place", {"latitude": 1.5, "longitude": -2.5}, "1.5, -2.5", "1.5, -2.5"),
        ("place", {"text": "Calle Hidalgo"}, "Calle Hidalgo", "Calle Hidalgo"),
        ("pic", {"media": "m/x.jpg", "content_type": "image/jpeg"}, "m/x.jpg", "m/x.jpg"),
        ("since", "2026-11-21", "21 de noviembre de 2026", "2026-11-21"),
    ],
)
def test_each_kind_fills_its_export_cell(name: str, value: Any, labels: Any, codes: Any) -> None:
    s = state(name)
    assert s.kind.export_cell(s, value, "es", codes=False) == labels
    assert s.kind.export_cell(s, value, "es", codes=True) == codes


def test_the_summary_names_the_answers_of_the_kinds_that_have_labels() -> None:
    assert KINDS["single_choice"].labels(state("age"), "en") == {"young": "Young", "older": "Older"}
    assert KINDS["yes_no"].labels(state("agree"), "fr") == {"True": "Oui", "False": "Non"}
    assert KINDS["scale"].labels(state("score"), "fr") == {}
    assert KINDS["date"].labels(state("since"), "fr") == {}


# --- a kind added in a test is used everywhere --------------------------------------------

COLOURS = {
    "red": {"es": "rojo", "en": "red", "fr": "rouge"},
    "blue": {"es": "azul", "en": "blue", "fr": "bleu"},
}


class Colour(Kind):
    """A colour, named in any of the three languages."""

    name = "colour"
    summarised = True

    def parse(self, state: State, reply: Reply) -> Any:
        for key, names in COLOURS.items():
            if reply.norm == key or reply.norm in names.values():
                return key
        raise self.reprompt(state)

    def prompt(self, state: State, lang: str) -> Ask:
        return Ask(("🔴 🔵",), tuple((key, names[lang]) for key, names in COLOURS.items()))

    def reprompt(self, state: State) -> Invalid:
        return Invalid("reprompt-choice", max=2)

    def labels(self, state: State, lang: str) -> Mapping[str, str]:
        return {key: names[lang] for key, names in COLOURS.items()}

    def export_cell(self, state: State, value: Any, lang: str, codes: bool) -> Any:
        return value if codes else COLOURS[value][lang]

    def check(self, state: State, problem: Problem) -> None:
        if state.optional:
            problem(state.lines["optional"], "a colour cannot be skipped")


FLOW = """\
id: colours
version: 1
title: {es: Colores, en: Colours, fr: Couleurs}
deep_link: colores
start: consent
states:
  consent:
    type: consent
    text: {es: "¿Aceptas?", en: "Agreed?", fr: "D'accord ?"}
    next: favourite
  favourite:
    type: colour
    text: {es: "¿Tu color?", en: "Your colour?", fr: "Ta couleur ?"}
    next: bye
  bye:
    type: end
    text: {es: Gracias, en: Thanks, fr: Merci}
"""


@pytest.fixture
def colours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(KINDS, "colour", Colour())
    path = tmp_path / "colours.yaml"
    path.write_text(FLOW, encoding="utf-8")
    return path


def test_an_unregistered_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "colours.yaml"
    path.write_text(FLOW, encoding="utf-8")
    [problem] = check_paths([path])[1]
    assert "states.favourite.type: 'colour' is not one of" in str(problem)


def test_a_registered_kind_is_checked_by_flows_check(colours: Path) -> None:
    flows, problems = check_paths([colours])
    assert problems == [] and flows["colours"].state("favourite").kind is KINDS["colour"]
    colours.write_text(FLOW.replace("    next: bye\n", "    optional: true\n    next: bye\n"))
    assert [p.message for p in check_paths([colours])[1]] == [
        "state 'favourite': a colour cannot be skipped"
    ]


def test_a_registered_kind_is_asked_and_read_by_the_engine(colours: Path) -> None:
    engine = Engine(check_paths([colours])[0])
    conv = Conversation()

    def send(**message: Any) -> Outcome:
        nonlocal conv
        outcome = engine.handle(conv, Resident("fr"), Message(**message), NOW)
        conv = outcome.conversation
        return outcome

    send(start="colores")
    [prompt] = send(text="oui").replies
    assert prompt.text == "Ta couleur ?\n\n🔴 🔵"
    assert [(o.payload, o.label) for o in prompt.options] == [
        ("favourite:red", "rouge"),
        ("favourite:blue", "bleu"),
    ]
    assert [p.text for p in send(text="vert").replies] == [t("fr", "reprompt-choice", max=2)]
    saved = [e for e in send(text="BLEU").effects if isinstance(e, SaveAnswer)]
    assert [(s.question, s.value, s.raw) for s in saved] == [("favourite", "blue", "BLEU")]


def test_a_registered_kind_is_exported_and_summarised(colours: Path) -> None:
    flows, _ = check_paths([colours])
    flow = flows["colours"]
    favourite = flow.state("favourite")
    assert Export(flow, language="es").cell(favourite, "red") == "rojo"
    assert Export(flow, codes=True).cell(favourite, "red") == "red"
    assert choice_questions(flow) == ["favourite"]
    assert choice_labels(flow, "en")["favourite"] == {"red": "red", "blue": "blue"}
