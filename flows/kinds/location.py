"""`location`: a shared pin ({latitude, longitude, label}) or a typed place ({text}); channels
with a location button offer it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from consulta.flows.i18n import t
from consulta.flows.kinds.base import Ask, Invalid, Kind, Reply

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["Location"]

_INT = re.compile(r"^\d+$")


class Location(Kind):
    name = "location"
    profile = True

    def parse(self, state: State, reply: Reply) -> Any:
        if reply.location:
            pin = reply.location
            return {
                "latitude": pin.latitude,
                "longitude": pin.longitude,
                **({"label": pin.label} if pin.label else {}),
            }
        if reply.text and not _INT.match(reply.norm):  # a bare digit is no place
            return {"text": reply.text[:300]}
        raise self.reprompt(state)

    def prompt(self, state: State, lang: str) -> Ask:
        return Ask(lines=(t(lang, "hint-location"),), expects="location")

    def reprompt(self, state: State) -> Invalid:
        return Invalid("reprompt-location")
