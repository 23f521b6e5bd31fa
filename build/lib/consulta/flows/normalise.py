"""Forgiving matching of what residents type: case, accents, punctuation and spacing ignored."""

import re
import unicodedata

__all__ = ["normalise", "words"]

_PUNCT = re.compile(r"[^\w\s,]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalise(text: str | None) -> str:
    """``"  ¡Sí! "`` → ``"si"``: lower case, no accents, no punctuation but commas, one space."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACE.sub(" ", _PUNCT.sub(" ", bare)).strip()


def words(text: str | None) -> list[str]:
    return normalise(text).replace(",", " ").split()
