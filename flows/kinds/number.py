"""`number`: a number typed in digits ("12", "3,5"), within `min` and `max` when given, whole
unless `integer: false`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from consulta.flows.kinds.base import Invalid, Kind, Reply

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["Number"]

_NUMBER = re.compile(r"^[-+]?\d+(?:[.,]\d+)?$")


def _number(text: str) -> float | None:
    raw = text.strip().replace(" ", "")
    if not _NUMBER.match(raw):
        return None
    return float(raw.replace(",", "."))


def _bound(value: float | str | None) -> float | None:
    return None if value is None else float(value)  # a number: the schema says so


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


class Number(Kind):
    name = "number"

    def parse(self, state: State, reply: Reply) -> Any:
        number = _number(reply.text)
        low, high = _bound(state.min), _bound(state.max)
        if number is None or not (
            (low is None or number >= low)
            and (high is None or number <= high)
            and (not state.integer or number.is_integer())
        ):
            if low is None or high is None:
                raise Invalid("reprompt-number-any")
            raise Invalid("reprompt-number", min=_fmt(low), max=_fmt(high))
        return int(number) if state.integer else number
