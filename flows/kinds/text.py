"""`text`: the resident's own words, up to `max_length` characters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consulta.flows.kinds.base import Invalid, Kind, Reply

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["Text"]


class Text(Kind):
    name = "text"
    profile = True

    def parse(self, state: State, reply: Reply) -> Any:
        if not reply.text:
            raise Invalid("reprompt-text")
        if state.max_length and len(reply.text) > state.max_length:
            raise Invalid("reprompt-text-too-long", max=state.max_length)
        return reply.text
