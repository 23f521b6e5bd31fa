"""System messages (help, re-prompts, command replies) in es, en and fr, from gettext catalogs.

The catalogs in `locales/` are plain .po files, the format translators' tools open; they are
read directly with Babel, so there is no compile step to forget. `make translations` extracts
every message id the code uses — the second argument of `t()`, the first of a re-prompt's
`Invalid()`, and ids marked with `N_()` where they are chosen at run time — into the template,
and merges it into the three catalogs.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

__all__ = ["LANGUAGES", "LOCALES", "N_", "catalog", "message_ids", "t"]

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


def N_(msgid: str) -> str:
    """Mark a message id chosen at run time, so that extraction finds it; returns it as is."""
    return msgid


def t(lang: str, msgid: str, **params: Any) -> str:
    """The message `msgid` in `lang` (Spanish for an unknown language), with `params` filled in.

    An unknown msgid raises KeyError, so a typo fails the tests instead of reaching a resident.
    """
    messages = catalog(lang if lang in LANGUAGES else "es")
    text = messages[msgid] or catalog("es")[msgid]
    return text.format(**params) if params else text
