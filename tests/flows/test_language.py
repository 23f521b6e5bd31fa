"""Language choice: greetings, sentences, unsure cases, the menu, and determinism."""

from __future__ import annotations

import pytest

from flows.language import detect_language, parse_language_choice


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("hola", "es"),
        ("Buenas", "es"),
        ("buenos días", "es"),
        ("¡Hola!", "es"),
        ("hi", "en"),
        ("Hello", "en"),
        ("good morning", "en"),
        ("bonjour", "fr"),
        ("Salut", "fr"),
        ("coucou", "fr"),
        ("Me gustaría que arreglen el alumbrado de mi calle", "es"),
        ("Hay un bache enorme", "es"),
        ("The streetlights on my street have been broken for weeks", "en"),
        ("There is a huge pothole", "en"),
        ("Les lampadaires de ma rue sont cassés depuis des semaines", "fr"),
        ("Il y a un nid de poule", "fr"),
    ],
)
def test_detects_the_three_languages(text: str, lang: str) -> None:
    assert detect_language(text) == lang


@pytest.mark.parametrize(
    "text", ["1", "", None, "👍", "ok", "agua", "Guten Tag, wie geht es Ihnen heute?"]
)
def test_unsure_when_the_text_does_not_say(text: str | None) -> None:
    assert detect_language(text) is None


def test_detection_is_deterministic() -> None:
    text = "El agua llega sucia desde hace dos semanas"
    assert {detect_language(text) for _ in range(20)} == {"es"}


@pytest.mark.parametrize(
    ("answer", "lang"),
    [
        ("1", "es"),
        ("2", "en"),
        ("3", "fr"),
        ("Español", "es"),
        ("english", "en"),
        ("Français", "fr"),
        ("francais", "fr"),
        (" 3. ", "fr"),
    ],
)
def test_the_language_menu(answer: str, lang: str) -> None:
    assert parse_language_choice(answer) == lang


def test_the_language_menu_refuses_other_answers() -> None:
    assert parse_language_choice("4") is None
    assert parse_language_choice("deutsch") is None
