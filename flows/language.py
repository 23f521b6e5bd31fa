"""Choosing a resident's language: a greeting word list, then langdetect, only es, en or fr."""

from __future__ import annotations

import re
from functools import cache

from langdetect import DetectorFactory, detect_langs
from langdetect.lang_detect_exception import LangDetectException

from flows.model import LANGUAGES
from flows.normalise import normalise

__all__ = ["detect_language", "parse_language_choice"]

# Short words langdetect gets wrong (it calls "hola" Finnish and "hi" Swahili).
GREETINGS = {
    "es": {"hola", "buenas", "buenos dias", "buenas tardes", "buenas noches", "que tal",
           "gracias", "si", "saludos", "ola", "holi", "buen dia", "que onda"},
    "en": {"hi", "hello", "hey", "good morning", "good afternoon", "good evening", "thanks",
           "thank you", "yes", "hiya", "howdy"},
    "fr": {"bonjour", "salut", "bonsoir", "coucou", "merci", "oui", "allo", "bonjour a tous",
           "bonne journee"},
}  # fmt: skip
_WORD_TO_LANGUAGE = {word: lang for lang, words in GREETINGS.items() for word in words}
MENU_CHOICES = {
    "1": "es", "es": "es", "espanol": "es", "spanish": "es", "castellano": "es",
    "espagnol": "es",
    "2": "en", "en": "en", "english": "en", "ingles": "en", "anglais": "en",
    "3": "fr", "fr": "fr", "francais": "fr", "french": "fr", "frances": "fr",
}  # fmt: skip
# Function words: on short messages a vote on these beats langdetect's character statistics.
FUNCTION_WORDS = {
    "es": {"el", "la", "los", "las", "de", "del", "que", "y", "en", "un", "una", "hay", "mi",
           "por", "con", "no", "es", "esta", "muy", "para", "calle", "se", "lo", "al", "mas"},
    "en": {"the", "and", "is", "of", "to", "in", "my", "on", "for", "with", "there", "have",
           "has", "it", "are", "this", "that", "street", "no", "not", "very", "we", "our"},
    "fr": {"le", "la", "les", "de", "des", "du", "et", "est", "un", "une", "ma", "mon", "dans",
           "pour", "avec", "il", "y", "a", "sur", "rue", "pas", "ne", "tres", "nous", "au"},
}  # fmt: skip
MIN_PROBABILITY = 0.80
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)


@cache
def _seeded() -> None:
    # langdetect is random by default; a fixed seed makes the same text give the same answer.
    DetectorFactory.seed = 0


def detect_language(text: str | None) -> str | None:
    """es, en or fr when the text says so clearly enough; None when unsure."""
    norm = normalise(text)
    if not norm:
        return None
    if norm in _WORD_TO_LANGUAGE:
        return _WORD_TO_LANGUAGE[norm]
    letters = len(_LETTERS.findall(norm))
    if (letters < 12 and len(norm.split()) < 2) or letters < 4:
        return None
    votes = sorted(
        ((sum(w in FUNCTION_WORDS[lang] for w in norm.split()), lang) for lang in LANGUAGES),
        reverse=True,
    )
    if votes[0][0] >= 2 and votes[0][0] > votes[1][0]:
        return votes[0][1]
    _seeded()
    try:
        guesses = {g.lang: g.prob for g in detect_langs(text or "") if g.lang in LANGUAGES}
    except LangDetectException:
        return None
    total = sum(guesses.values())
    if not total or total < 0.5:  # mostly another language: unsure among ours
        return None
    best = max(guesses, key=guesses.__getitem__)
    return best if guesses[best] / total >= MIN_PROBABILITY else None


def parse_language_choice(text: str | None) -> str | None:
    """The answer to the three-language menu: a digit or a language's name."""
    return MENU_CHOICES.get(normalise(text))
