"""A new resident's first message, through the engine and the shipped flows: answered in its
language as a resident known to speak it would be, or with the three-language menu."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consulta.flows.check import load_library
from consulta.flows.engine import (
    Conversation,
    Engine,
    Message,
    Outcome,
    Resident,
    SetLanguage,
    command_of,
)
from consulta.flows.i18n import t
from tests.flows.first_messages import AMBIGUOUS, ENGLISH, FRENCH, SPANISH

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SETS = {"es": SPANISH, "en": ENGLISH, "fr": FRENCH}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_library(), new_id=lambda: "s1", new_folio=lambda: "FOLIO123")


def first_contact(engine: Engine, text: str, language: str | None = None) -> Outcome:
    return engine.handle(Conversation(), Resident(language), Message(text=text), NOW)


def replies(outcome: Outcome) -> list[str]:
    return [prompt.text for prompt in outcome.replies]


def answered_in(engine: Engine, text: str) -> str | None:
    """The language the engine settled on and answered in, or None for the menu."""
    outcome = first_contact(engine, text)
    menu = t(engine.default_language, "language-menu")
    chosen = {e.language for e in outcome.effects if isinstance(e, SetLanguage)}
    if menu in replies(outcome):
        assert not chosen, text
        return None
    assert len(chosen) == 1, f"{text!r}: no language set"
    lang = chosen.pop()
    # The same replies a resident already known to speak it gets: the whole turn is in it.
    assert replies(outcome) == replies(first_contact(engine, text, lang)), text
    return lang


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Hello, good afternoon", "en"),
        ("I'd like to report a broken streetlight", "en"),
        ("Buenas tardes, quiero participar", "es"),
        ("Salut, j'ai reçu le lien", "fr"),
    ],
)
def test_the_issues_examples_are_answered_in_their_language(
    engine: Engine, text: str, lang: str
) -> None:
    assert answered_in(engine, text) == lang


@pytest.mark.parametrize("lang", SETS)
def test_first_messages_are_answered_in_their_language(engine: Engine, lang: str) -> None:
    found = {text: answered_in(engine, text) for text in SETS[lang]}
    wrong = {text: got for text, got in found.items() if got not in (lang, None)}
    menu = [text for text, got in found.items() if got is None]
    assert not wrong, f"answered in a wrong language: {wrong}"
    assert len(menu) <= 0.05 * len(found), f"the menu for {menu}"


@pytest.mark.parametrize(
    # "?" asks for help, and a flow keyword starts its flow in its language: not first contact.
    "text",
    [text for text in AMBIGUOUS if command_of(text) is None],
)
def test_ambiguous_first_messages_get_the_menu(engine: Engine, text: str) -> None:
    assert engine.flow_for_keyword(text) == (None, None)
    assert answered_in(engine, text) is None
