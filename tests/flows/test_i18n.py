"""System messages: every message exists in es, en and fr, with the same placeholders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

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


# --- the translators' path: `make translations` --------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"t": (2,), "Invalid": (1,), "N_": None}  # as the Makefile's pybabel extract


def _template() -> Catalog:
    with (ROOT / "locales" / "consulta.pot").open("rb") as f:
        return read_po(f)


def test_the_template_holds_exactly_the_messages_the_code_uses() -> None:
    """What `pybabel extract` finds in the code is what translators get: a message id used
    but missing from the template, or left there unused, fails here."""
    used = {
        str(message[2])
        for folder in ("bot", "flows", "adapters", "storage")
        for message in extract_from_dir(ROOT / folder, keywords=KEYWORDS, comment_tags=())
    }
    assert used == {str(m.id) for m in _template() if m.id}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_catalog_has_a_fuzzy_missing_or_obsolete_entry(lang: str) -> None:
    with (ROOT / "locales" / lang / "LC_MESSAGES" / "consulta.po").open("rb") as f:
        po = read_po(f)
    entries = [m for m in po if m.id]
    assert [m.id for m in entries if m.fuzzy] == []
    assert [m.id for m in entries if not str(m.string).strip()] == []
    assert list(po.obsolete) == []
    assert {m.id for m in entries} == {m.id for m in _template() if m.id}
