"""`date`: a day, typed as residents write one in Spanish, English or French — "mañana",
"15/12", "12 décembre", "Dec 15", "el viernes" — kept as an ISO date ("2026-12-15"), within
`min` and `max` (ISO dates or `today`) when the flow gives them.

What is read (case, accents and punctuation ignored; "el", "the", "le", "de", "of"… skipped):
- relative days: hoy, mañana, pasado mañana, ayer, anteayer/antier; today, tomorrow, the day
  after tomorrow, yesterday, the day before yesterday; aujourd'hui, demain, après-demain, hier,
  avant-hier;
- numbers, day first: 15/12, 15-12-2026, 15.12.26 (a two-digit year is 20xx); year first when
  it has four digits (2026-12-15); month first only when day first cannot be a date (12/15);
- a month by name, full or short, in any of the three languages (from Babel's locale data),
  before or after the day: "15 de diciembre (de 2026)", "diciembre 15", "Dec 15th, 2026",
  "1er mai", "primero de mayo";
- a weekday: "el viernes", "friday", "vendredi"; with "próximo/que viene", "next",
  "prochain" the first one after today, with "este", "this", "ce" today or after, with
  "pasado", "last", "dernier" the last one before today; alone, the nearest one (a week
  either way). "viernes 15" is the 15th of last, this or next month that is a Friday; with a
  month ("vendredi 12 décembre") the weekday is only a courtesy, and is not checked.
"el próximo 15 de diciembre", "last 3 May": the direction words pick the year as well.
A day without its year, or a bare weekday, is the nearest such day to the message's date that
lies within the question's bounds (a tie goes to the future): with `max: today` "el viernes"
is last Friday, with `min: today` the coming one. Anything else — "mañanaa", "32/13", a bare
"15", "hola" — gets the re-prompt: nothing is guessed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from babel.dates import get_day_names, get_month_names

from consulta.flows.i18n import LANGUAGES
from consulta.flows.kinds.base import Invalid, Kind, Problem, Reply, written_date

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["Date", "read_day"]

TODAY = "today"  # a bound that moves with the message's date

_FILLERS = frozenset({"el", "la", "le", "l", "the", "on", "of", "de", "del", "du", "for", "para"})
_PHRASES = (("que viene", "proximo"), ("qui vient", "prochain"))  # said after the weekday
_RELATIVE_WORDS = {
    0: ("hoy", "today", "aujourd'hui", "aujourdhui"),
    1: ("mañana", "tomorrow", "demain"),
    2: ("pasado mañana", "the day after tomorrow", "après-demain"),
    -1: ("ayer", "yesterday", "hier"),
    -2: ("anteayer", "antier", "antes de ayer", "the day before yesterday", "avant-hier"),
}
_THIS = frozenset({"this", "este", "esta", "ce", "cette"})
_NEXT = frozenset({"next", "coming", "proximo", "proxima", "entrante", "prochain", "prochaine"})
_PAST = frozenset({"last", "pasado", "pasada", "dernier", "derniere", "passe", "passee"})
_FIRST = frozenset({"primero", "premier", "first"})  # "primero de mayo", "premier mai"

_DAY = re.compile(r"^(\d{1,2})(?:st|nd|rd|th|er|re|eme|e|o|ro|ero)?$")
_YEAR = re.compile(r"^\d{4}$")
_NUMERIC = re.compile(r"^(\d{1,4})([/.\-])(\d{1,2})(?:\2(\d{1,4}))?$")
_SPACED = re.compile(r"(?<=\d)\s*([/.\-])\s*(?=\d)")  # "15 / 12" → "15/12"
_NOT_WORD = re.compile(r"[^\w/.\-]+")
_LOOSE = re.compile(r"(?<!\d)[/.\-]|[/.\-](?!\d)")  # a separator that is not between digits


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _tokens(text: str) -> list[str]:
    """The words that matter: "¡El 15 de Dic.!" → ["15", "dic"]; "15 / 12" → ["15/12"]."""
    bare = _LOOSE.sub(" ", _NOT_WORD.sub(" ", _SPACED.sub(r"\1", _fold(text))))
    phrase = " ".join(word for word in bare.split() if word not in _FILLERS)
    for many, one in _PHRASES:
        phrase = re.sub(rf"\b{many}\b", one, phrase)
    return phrase.split()


@cache
def _relative() -> dict[str, int]:
    return {" ".join(_tokens(w)): days for days, words in _RELATIVE_WORDS.items() for w in words}


@cache
def _months() -> dict[str, int]:
    """Month names, full and short, of the three languages: "diciembre", "dic", "déc."…"""
    names: dict[str, int] = {}
    for lang in LANGUAGES:
        for width in ("wide", "abbreviated"):
            for context in ("format", "stand-alone"):
                for number, name in get_month_names(width, context, lang).items():
                    names[_fold(name).strip(".")] = number
    names.update(sep=9, setiembre=9)  # spellings Babel leaves out
    return names


@cache
def _weekdays() -> dict[str, int]:
    """Weekday names (Monday is 0, as `date.weekday`), full and short unless a short one is
    also a month ("mar": martes or marzo? marzo)."""
    names: dict[str, int] = {}
    for lang in LANGUAGES:
        for width in ("wide", "abbreviated"):
            for number, name in get_day_names(width, "format", lang).items():
                folded = _fold(name).strip(".")
                if width == "wide" or folded not in _months():
                    names[folded] = number
    return names


def _day_of_month(token: str) -> int | None:
    if token in _FIRST:
        return 1
    found = _DAY.match(token)
    return int(found[1]) if found else None


def _make(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _numeric(token: str) -> tuple[int, int, int | None] | None:
    """(day, month, year or None) of "15/12", "15-12-26", "2026-12-15", "12/15"."""
    found = _NUMERIC.match(token)
    if not found:
        return None
    first, second, last = found[1], int(found[3]), found[4]
    if len(first) == 4:  # year first
        return (int(last), second, int(first)) if last and len(last) <= 2 else None
    if len(first) > 2 or (last is not None and len(last) not in (2, 4)):
        return None
    year = None if last is None else int(last) + (2000 if len(last) == 2 else 0)
    day, month = int(first), second
    if not 1 <= month <= 12 and 1 <= day <= 12:  # 12/15: only month first can be a date
        day, month = month, day
    return day, month, year


def _named(tokens: list[str]) -> tuple[int, int, int | None] | None:
    """(day, month, year or None) of ["15", "diciembre"], ["dec", "15th", "2026"]…"""
    year = None
    if len(tokens) == 3 and _YEAR.match(tokens[2]):
        year, tokens = int(tokens[2]), tokens[:2]
    if len(tokens) != 2:
        return None
    months = _months()
    for day_token, month_token in (tokens, tokens[::-1]):
        day = _day_of_month(day_token)
        if day is not None and month_token in months:
            return day, months[month_token], year
    return None


def _closest(days: list[date], today: date | None, fits: Callable[[date], bool]) -> date | None:
    """The day nearest to today among those within the bounds (or among all, when none is:
    the caller then says what the bounds are). A tie goes to the future."""
    if not days:
        return None
    if today is None:
        return days[0]
    inside = [d for d in days if fits(d)] or days
    return min(inside, key=lambda d: (abs((d - today).days), d < today))


def read_day(
    text: str, today: date | None, fits: Callable[[date], bool] = lambda _: True
) -> date | None:
    """The day `text` names, or None. `today` (None: unknown) settles "mañana", weekdays and
    days without a year; among several readings, the nearest that `fits` is taken."""
    tokens = _tokens(text)
    phrase = " ".join(tokens)
    if phrase in _relative():
        return today + timedelta(days=_relative()[phrase]) if today else None
    weekday, direction, rest = None, None, []
    for token in tokens:
        if weekday is None and token in _weekdays():
            weekday = _weekdays()[token]
        elif direction is None and token in _THIS | _NEXT | _PAST:
            direction = token
        else:
            rest.append(token)

    if not rest:  # a weekday alone: within a week either way, as the direction says
        if weekday is None or today is None:
            return None
        span = (
            range(0, 7)
            if direction in _THIS
            else range(1, 8)
            if direction in _NEXT
            else range(-7, 0)
            if direction in _PAST
            else range(-6, 7)
        )
        near = [today + timedelta(days=n) for n in span]
        return _closest([d for d in near if d.weekday() == weekday], today, fits)

    if len(rest) == 1 and weekday is not None and today is not None:  # "viernes 15"
        day = _day_of_month(rest[0])
        if day is not None:
            months = [(today.year * 12 + today.month - 1 + k) for k in (-1, 0, 1)]
            dated = [_make(m // 12, m % 12 + 1, day) for m in months]
            return _closest([d for d in dated if d and d.weekday() == weekday], today, fits)

    parts = _numeric(rest[0]) if len(rest) == 1 else _named(rest)
    if parts is None:
        return None
    day, month, year = parts
    if year is not None:
        return _make(year, month, day)
    if today is None:
        return None
    days = [d for d in (_make(today.year + y, month, day) for y in (-1, 0, 1)) if d]
    if direction in _NEXT:
        days = [d for d in days if d > today]
    elif direction in _THIS:
        days = [d for d in days if d >= today]
    elif direction in _PAST:
        days = [d for d in days if d < today]
    return _closest(days, today, fits)


def bound(value: Any, today: date | None) -> date | None:
    """A `min`/`max` of a date question: an ISO date, or "today" (None when unknown)."""
    if value == TODAY:
        return today
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


class Date(Kind):
    name = "date"

    def parse(self, state: State, reply: Reply) -> Any:
        low, high = bound(state.min, reply.today), bound(state.max, reply.today)

        def fits(day: date) -> bool:
            return (low is None or day >= low) and (high is None or day <= high)

        day = read_day(reply.text, reply.today, fits)
        if day is None:
            raise self.reprompt(state)
        if not fits(day):
            if low is not None and high is not None:
                raise Invalid("reprompt-date-between", min=low, max=high)
            if low is not None:
                raise Invalid("reprompt-date-from", min=low)
            raise Invalid("reprompt-date-until", max=high)
        return day.isoformat()

    def reprompt(self, state: State) -> Invalid:
        return Invalid("reprompt-date")

    def export_cell(self, state: State, value: Any, lang: str, codes: bool) -> Any:
        day = bound(value, None)
        if codes or day is None:
            return value
        return written_date(day, lang)

    def check(self, state: State, problem: Problem) -> None:
        for name in ("min", "max"):
            value = getattr(state, name)
            if value is not None and value != TODAY and bound(value, None) is None:
                problem(state.lines.get(name, state.line), f"{name}: {value!r} is not a date")
        low, high = bound(state.min, None), bound(state.max, None)
        if low is not None and high is not None and low > high:
            problem(state.lines.get("max", state.line), "max must not be before min")
