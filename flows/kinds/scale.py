"""`scale`: a whole number from `min` to `max` (default 1 to 5), one button each."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from consulta.flows.kinds.base import Ask, Invalid, Kind, Problem, Reply

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["Scale"]

_INT = re.compile(r"^\d+$")


def _bounds(state: State) -> tuple[int, int]:
    return int(state.min or 1), int(state.max or 5)


class Scale(Kind):
    name = "scale"
    summarised = True

    def parse(self, state: State, reply: Reply) -> Any:
        low, high = _bounds(state)
        if not _INT.match(reply.norm) or not low <= int(reply.norm) <= high:
            raise self.reprompt(state)
        return int(reply.norm)

    def prompt(self, state: State, lang: str) -> Ask:
        low, high = _bounds(state)
        return Ask(choices=tuple((str(n), str(n)) for n in range(low, high + 1)))

    def reprompt(self, state: State) -> Invalid:
        low, high = _bounds(state)
        return Invalid("reprompt-scale", min=low, max=high)

    def check(self, state: State, problem: Problem) -> None:
        if float(state.min or 1) >= float(state.max or 5):
            problem(state.lines.get("max", state.line), "max must be above min")
