"""System messages: every message exists in es, en and fr, with the same placeholders."""

from __future__ import annotations

import re

import pytest

from consulta.flows.i18n import LANGUAGES, catalog, message_ids, t

PLACEHOLDER = re.compile(r"{(\w+)}")


def test_the_catalogs_hold_exactly_the_template_messages() -> None:
    for lang in LANGUAGES:
        assert set(catalog(lang)) == set(message_ids()), lang


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_message_is_translated(lang: str) -> None:
    missing = [msgid for msgid in message_ids() if not catalog(lang)[msgid].strip()]
    assert missing == []


@pytest.mark.parametrize("lang", ["es", "fr"])
def test_translations_keep_the_placeholders(lang: str) -> None:
    for msgid in message_ids():
        expected = set(PLACEHOLDER.findall(catalog("en")[msgid]))
        assert set(PLACEHOLDER.findall(catalog(lang)[msgid])) == expected, msgid


def test_placeholders_are_filled() -> None:
    assert t("es", "reprompt-choice", max=4) == "Por favor responde con un número del 1 al 4."
    assert "{" not in t("fr", "resume-offer", title="Priorités")


def test_an_unknown_language_falls_back_to_spanish() -> None:
    assert t("de", "yes") == "Sí"


def test_an_unknown_message_is_an_error() -> None:
    with pytest.raises(KeyError):
        t("es", "no-such-message")


def test_messages_fit_a_phone_screen() -> None:
    for lang in LANGUAGES:
        for msgid in message_ids():
            assert len(catalog(lang)[msgid]) <= 400, (lang, msgid)
