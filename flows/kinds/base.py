"""What every kind of state is: how its question is asked, read, re-asked, checked, counted and
exported. Each kind in `flows/kinds/` is a small subclass of `Kind`; the defaults here are what
a kind does when it has nothing of its own to say."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar

from babel.dates import format_date

from consulta.flows.i18n import t

if TYPE_CHECKING:
    from consulta.flows.engine import Location, Media
    from consulta.flows.model import State

__all__ = ["Ask", "Invalid", "Kind", "Problem", "Reply", "written_date"]

Problem = Callable[[int, str], None]
"""Reports one `flows check` problem about a state: (line, message)."""


def written_date(day: date, lang: str) -> str:
    """A day as a resident reads it: "15 de diciembre de 2026", "December 15, 2026"."""
    return format_date(day, "long", locale=lang)


class Invalid(Exception):
    """The answer does not fit: re-prompt with the system message `msgid`, filled with `params`
    (dates among them are written in the resident's language). `counts`: whether it spends
    one of the question's retries."""

    def __init__(self, msgid: str, counts: bool = True, **params: Any) -> None:
        super().__init__(msgid)
        self.msgid, self.counts, self.params = msgid, counts, params

    def uncounted(self) -> Invalid:
        return Invalid(self.msgid, False, **self.params)

    def text(self, lang: str) -> str:
        params = {
            k: written_date(v, lang) if isinstance(v, date) else v for k, v in self.params.items()
        }
        return t(lang, self.msgid, **params)


@dataclass(frozen=True)
class Reply:
    """A resident's answer to a question, as its kind reads it."""

    text: str  # as typed, trimmed; the choice key of a pressed button
    norm: str  # `normalise(text)`: lower case, no accents, no punctuation but commas
    location: Location | None = None
    media: tuple[Media, ...] = ()
    today: date | None = None  # the day the message came, for "tomorrow" (None: not known)


@dataclass(frozen=True)
class Ask:
    """What a kind adds below a question's own text when it is asked."""

    lines: tuple[str, ...] = ()
    choices: tuple[tuple[str, str], ...] = ()  # (answer key, label): buttons where a channel has
    expects: str | None = None  # "location" or "photo": a channel may offer a native button


class Kind:
    """A kind of state. One instance per kind, registered in `flows.kinds.KINDS` by `name`, the
    `type:` of flow files; `State.kind` is that instance."""

    name: ClassVar[str]
    waits: ClassVar[bool] = True  # waits for the resident's answer (else says its text, moves on)
    ends: ClassVar[bool] = False  # ends the flow
    consent: ClassVar[bool] = False  # never skipped; nothing about the resident kept before a yes
    chooses: ClassVar[bool] = False  # answered by picking among the state's `choices`
    multiple: ClassVar[bool] = False  # … several of them: the answer is a list of keys
    profile: ClassVar[bool] = False  # may fill a profile field (`profile:`)
    summarised: ClassVar[bool] = False  # the dashboard counts its answers

    def parse(self, state: State, reply: Reply) -> Any:
        """The answer to keep (JSON-serialisable); raises `Invalid` when it does not fit."""
        raise Invalid("not-understood")

    def prompt(self, state: State, lang: str) -> Ask:
        return Ask()

    def reprompt(self, state: State) -> Invalid:
        """The re-prompt for an answer this question cannot take (a stale button, say)."""
        return Invalid("reprompt-text")

    def labels(self, state: State, lang: str) -> Mapping[str, str]:
        """Its answers as the dashboard counts them (`str(value)`), named in `lang`."""
        return {}

    def export_cell(self, state: State, value: Any, lang: str, codes: bool) -> Any:
        """A kept answer (never None) as a reader of an export wants it: labels in `lang`
        unless `codes`, numbers as numbers, a place or a photo as its readable part."""
        if isinstance(value, dict):
            if "latitude" in value:
                label = value.get("label")
                spot = f"{value['latitude']}, {value['longitude']}"
                return f"{spot} ({label})" if label else spot
            return value.get("text") or value.get("media") or ""
        return value

    def check(self, state: State, problem: Problem) -> None:
        """Report what `flows check` must refuse in a state of this kind."""

    def __repr__(self) -> str:
        return f"<kind {self.name}>"
