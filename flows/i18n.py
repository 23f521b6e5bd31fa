"""System messages (help, re-prompts, command replies) in es, en and fr, from gettext catalogs.

The catalogs in `locales/` are plain .po files, the format translators' tools open; they are
read directly with Babel, so there is no compile step to forget.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

__all__ = ["LANGUAGES", "LOCALES", "catalog", "message_ids", "t"]

LANGUAGES = ("es", "en", "fr")  # every resident-facing text is written in these
LOCALES = Path(str(files("consulta.locales")))  # package data
DOMAIN = "consulta"


def _read(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        po = read_po(f)
    return {str(m.id): str(m.string or "") for m in po if m.id}


@cache
def catalog(lang: str) -> dict[str, str]:
    """Every message of one language, msgid → text (empty when untranslated)."""
    if lang not in LANGUAGES:
        lang = "es"
    return _read(LOCALES / lang / "LC_MESSAGES" / f"{DOMAIN}.po")


@cache
def message_ids() -> list[str]:
    """The msgids of the template, `locales/consulta.pot`."""
    return list(_read(LOCALES / f"{DOMAIN}.pot"))


def t(lang: str, msgid: str, **params: Any) -> str:
    """The message `msgid` in `lang` (Spanish for an unknown language), with `params` filled in.

    An unknown msgid raises KeyError, so a typo fails the tests instead of reaching a resident.
    """
    messages = catalog(lang if lang in LANGUAGES else "es")
    text = messages[msgid] or catalog("es")[msgid]
    return text.format(**params) if params else text
