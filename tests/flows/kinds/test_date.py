"""The `date` kind: days as residents type them in Spanish, English and French, bounds, the
re-prompts in their language, the stored and exported forms, and what `flows check` refuses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from consulta.flows.check import check_paths
from consulta.flows.engine import Conversation, Engine, Message, Resident, SaveAnswer
from consulta.flows.i18n import t
from consulta.flows.kinds import KINDS, Invalid, Reply
from consulta.flows.kinds.date import read_day
from consulta.flows.model import State, load_flow
from consulta.flows.normalise import normalise

FIXTURES = Path(__file__).parents[2] / "fixtures" / "flows"
TODAY = date(2026, 11, 22)  # a Sunday
DATE = KINDS["date"]


@pytest.mark.parametrize(
    ("typed", "day"),
    [
        # Spanish
        ("hoy", "2026-11-22"),
        ("Mañana", "2026-11-23"),
        ("manana", "2026-11-23"),
        ("¡MAÑANA!", "2026-11-23"),
        ("pasado mañana", "2026-11-24"),
        ("ayer", "2026-11-21"),
        ("antier", "2026-11-20"),
        ("antes de ayer", "2026-11-20"),
        ("15 de diciembre", "2026-12-15"),
        ("el 15 de diciembre de 2026", "2026-12-15"),
        ("15 de diciembre del 2027", "2027-12-15"),
        ("diciembre 15", "2026-12-15"),
        ("15 dic", "2026-12-15"),
        ("15-dic", "2026-12-15"),
        ("primero de mayo", "2027-05-01"),
        ("1º de mayo", "2027-05-01"),
        ("3 de septiembre", "2026-09-03"),
        ("3 setiembre", "2026-09-03"),
        ("el viernes", "2026-11-20"),
        ("el próximo viernes", "2026-11-27"),
        ("el viernes que viene", "2026-11-27"),
        ("el viernes pasado", "2026-11-20"),
        ("este miércoles", "2026-11-25"),
        ("el sábado", "2026-11-21"),
        ("el domingo", "2026-11-22"),
        ("el próximo 15 de marzo", "2027-03-15"),
        ("viernes 18", "2026-12-18"),
        # English
        ("today", "2026-11-22"),
        ("Tomorrow", "2026-11-23"),
        ("the day after tomorrow", "2026-11-24"),
        ("yesterday", "2026-11-21"),
        ("the day before yesterday", "2026-11-20"),
        ("Dec 15", "2026-12-15"),
        ("Dec. 15th", "2026-12-15"),
        ("December 15, 2026", "2026-12-15"),
        ("15 December 2026", "2026-12-15"),
        ("the 1st of January", "2027-01-01"),
        ("friday", "2026-11-20"),
        ("next Friday", "2026-11-27"),
        ("last friday", "2026-11-20"),
        ("this Tuesday", "2026-11-24"),
        ("Fri, Dec 18", "2026-12-18"),
        # French
        ("aujourd'hui", "2026-11-22"),
        ("aujourd’hui", "2026-11-22"),
        ("demain", "2026-11-23"),
        ("après-demain", "2026-11-24"),
        ("apres demain", "2026-11-24"),
        ("hier", "2026-11-21"),
        ("avant-hier", "2026-11-20"),
        ("12 décembre", "2026-12-12"),
        ("le 12 decembre 2026", "2026-12-12"),
        ("12 déc.", "2026-12-12"),
        ("le 1er mai", "2027-05-01"),
        ("3 févr.", "2027-02-03"),
        ("vendredi", "2026-11-20"),
        ("vendredi prochain", "2026-11-27"),
        ("vendredi dernier", "2026-11-20"),
        ("mardi 24 novembre", "2026-11-24"),
        # numbers, day first, any of / - .
        ("15/12", "2026-12-15"),
        ("15/12/2026", "2026-12-15"),
        ("15-12-26", "2026-12-15"),
        ("15.12.2026", "2026-12-15"),
        ("15 / 12", "2026-12-15"),
        ("1/1", "2027-01-01"),
        ("3/4", "2027-04-03"),  # the nearest 3 April: next year's
        ("2026-12-15", "2026-12-15"),
        ("12/15", "2026-12-15"),  # day first cannot be a date: month first
        ("29/02/2028", "2028-02-29"),
    ],
)
def test_days_as_residents_type_them(typed: str, day: str) -> None:
    assert read_day(typed, TODAY) == date.fromisoformat(day)


@pytest.mark.parametrize(
    "typed",
    [
        "mañanaa",  # a typo is re-asked, not guessed
        "hola",
        "32/13",
        "31/04",
        "0/12",
        "29/02",  # no 29 February near 2026
        "29/02/2027",
        "15",  # a bare number: a digit reflex, not a day
        "diciembre",
        "2026",
        "15 de diciembre hola",
        "mañana viernes",
        "mañana a las 5",
        "1/2/3",
        "15/12/202",
        "in 3 days",
        "",
        "🙂",
    ],
)
def test_what_is_not_a_day_is_refused(typed: str) -> None:
    assert read_day(typed, TODAY) is None


def test_relative_days_need_to_know_today() -> None:
    assert read_day("mañana", None) is None and read_day("15/12", None) is None
    assert read_day("15/12/2026", None) == date(2026, 12, 15)


def test_the_bounds_pick_among_the_readings() -> None:
    def past(day: date) -> bool:
        return day <= TODAY

    def coming(day: date) -> bool:
        return day >= TODAY

    assert read_day("15 de enero", TODAY, past) == date(2026, 1, 15)
    assert read_day("15 de enero", TODAY, coming) == date(2027, 1, 15)
    assert read_day("el martes", TODAY, past) == date(2026, 11, 17)
    assert read_day("el martes", TODAY, coming) == date(2026, 11, 24)


def _state(name: str) -> State:
    return load_flow(FIXTURES / "dates.yaml").state(name)


def _reply(text: str, today: date | None = TODAY) -> Reply:
    return Reply(text, normalise(text), today=today)


def test_a_day_is_kept_as_an_iso_date() -> None:
    assert DATE.parse(_state("since"), _reply("ayer")) == "2026-11-21"
    assert DATE.parse(_state("visit"), _reply("15/12")) == "2026-12-15"


@pytest.mark.parametrize(
    ("lang", "said"),
    [
        ("es", "Por favor escribe una fecha hasta el 22 de noviembre de 2026."),
        ("en", "Please type a date no later than November 22, 2026."),
        ("fr", "Merci d'écrire une date au plus tard le 22 novembre 2026."),
    ],
)
def test_a_day_out_of_bounds_is_reasked_with_the_bounds_in_the_residents_language(
    lang: str, said: str
) -> None:
    with pytest.raises(Invalid) as caught:
        DATE.parse(_state("since"), _reply("mañana"))
    assert caught.value.text(lang) == said


def test_a_window_names_both_ends() -> None:
    with pytest.raises(Invalid) as caught:
        DATE.parse(_state("visit"), _reply("ayer"))
    assert caught.value.text("es") == (
        "Por favor escribe una fecha entre el 22 de noviembre de 2026 y el 31 de diciembre de 2030."
    )


def test_a_day_from_today_on() -> None:
    state = _state("visit")
    with pytest.raises(Invalid) as caught:
        DATE.parse(replace(state, max=None), _reply("ayer"))
    assert caught.value.text("en") == "Please type a date on or after November 22, 2026."


@pytest.mark.parametrize("lang", ["es", "en", "fr"])
def test_what_is_no_day_gets_examples_in_the_residents_language(lang: str) -> None:
    with pytest.raises(Invalid) as caught:
        DATE.parse(_state("since"), _reply("hola"))
    assert caught.value.text(lang) == t(lang, "reprompt-date")
    assert "15/12" in t(lang, "reprompt-date")


def test_exported_as_the_day_in_the_exports_language_or_as_its_code() -> None:
    state = _state("since")
    assert DATE.export_cell(state, "2026-12-15", "es", codes=False) == "15 de diciembre de 2026"
    assert DATE.export_cell(state, "2026-12-15", "en", codes=False) == "December 15, 2026"
    assert DATE.export_cell(state, "2026-12-15", "fr", codes=False) == "15 décembre 2026"
    assert DATE.export_cell(state, "2026-12-15", "fr", codes=True) == "2026-12-15"
    assert DATE.export_cell(state, "not a day", "es", codes=False) == "not a day"


# --- in a conversation -------------------------------------------------------------------

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _talk(*texts: str, lang: str = "es") -> tuple[list[str], list[SaveAnswer]]:
    engine = Engine({"dates": load_flow(FIXTURES / "dates.yaml")})
    conv, replies, saved = Conversation(), [], []
    for message in (Message(start="fechas"), *(Message(text=x) for x in texts)):
        outcome = engine.handle(conv, Resident(lang), message, NOW)
        conv = outcome.conversation
        replies.extend(p.text for p in outcome.replies)
        saved.extend(e for e in outcome.effects if isinstance(e, SaveAnswer))
    return replies, saved


def test_the_engine_reads_relative_days_from_the_messages_date() -> None:
    replies, saved = _talk("sí", "antier", "24 de diciembre")
    assert [(s.question, s.value, s.raw) for s in saved[1:]] == [
        ("since", "2026-11-20", "antier"),
        ("visit", "2026-12-24", "24 de diciembre"),
    ]
    assert replies[-1] == "¡Feliz Nochebuena!"  # a condition on a day: `answer: 2026-12-24`


def test_the_engine_reasks_then_moves_on() -> None:
    replies, saved = _talk("yes", "tomorrow", "someday", "last friday", "0", lang="en")
    assert replies[2:4] == [
        "Please type a date no later than November 22, 2026.",
        t("en", "reprompt-date"),
    ]
    assert [s.value for s in saved] == [True, "2026-11-20"]  # "0" skips the optional visit
    assert replies[-1] == "Thank you"


# --- flows check -------------------------------------------------------------------------

FLOW = """\
id: when
version: 1
title: {es: Cuándo, en: When, fr: Quand}
start: consent
states:
  consent:
    type: consent
    text: {es: Acepto, en: Agreed, fr: Accord}
    next: day
  day:
    type: date
    min: 2026-12-01
    max: 2026-12-31
    text: {es: Día, en: Day, fr: Jour}
    next: bye
  bye:
    type: end
    text: {es: Adiós, en: Bye, fr: Au revoir}
"""


def problems_of(tmp_path: Path, source: str) -> list[str]:
    path = tmp_path / "flow.yaml"
    path.write_text(source, encoding="utf-8")
    return [str(p).removeprefix(f"{tmp_path}/") for p in check_paths([path])[1]]


def test_a_date_question_checks_clean(tmp_path: Path) -> None:
    assert problems_of(tmp_path, FLOW) == []
    assert problems_of(tmp_path, FLOW.replace("max: 2026-12-31", "max: today")) == []
    assert problems_of(tmp_path, FLOW.replace("max: 2026-12-31", 'max: "2026-12-31"')) == []


def test_bounds_that_are_not_days(tmp_path: Path) -> None:
    [shape] = problems_of(tmp_path, FLOW.replace("max: 2026-12-31", "max: tomorrow"))
    assert shape.startswith("flow.yaml:13: states.day.max: 'tomorrow' does not match")
    assert problems_of(tmp_path, FLOW.replace("max: 2026-12-31", "max: 2026-02-30")) == [
        "flow.yaml:13: state 'day': max: '2026-02-30' is not a date"
    ]
    [number] = problems_of(tmp_path, FLOW.replace("max: 2026-12-31", "max: 31"))
    assert number.startswith("flow.yaml:13: states.day.max: 31 is not of type 'string'")


def test_bounds_the_wrong_way_round(tmp_path: Path) -> None:
    assert problems_of(tmp_path, FLOW.replace("max: 2026-12-31", "max: 2026-11-30")) == [
        "flow.yaml:13: state 'day': max must not be before min"
    ]


def test_a_number_question_still_takes_only_numbers(tmp_path: Path) -> None:
    source = FLOW.replace("type: date", "type: number")
    [problem, _] = problems_of(tmp_path, source)
    assert problem.startswith("flow.yaml:12: states.day.min: '2026-12-01' is not of type 'number'")
