"""The web simulator channel: staff preview flows in a browser page (`GET /simulator`).

Replies are not pushed anywhere: the page reads them back from the message log, which works
the same with one web process or several.
"""

from __future__ import annotations

from typing import Any

from consulta.adapters.message import Inbound, Outbound, Place, Sent

__all__ = ["CHANNEL", "SimulatorSender", "parse"]

CHANNEL = "simulator"


class BadRequest(ValueError):
    """The simulator page sent something malformed."""


def parse(body: Any) -> Inbound:
    """A JSON body from the page: {session, text?, payload?, start?, language?, location?}."""
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object")
    session = body.get("session")
    if not isinstance(session, str) or not 8 <= len(session) <= 64 or not session.isalnum():
        raise BadRequest("session must be 8 to 64 letters or digits")
    place = None
    if isinstance(body.get("location"), dict):
        try:
            place = Place(float(body["location"]["latitude"]), float(body["location"]["longitude"]))
        except (KeyError, TypeError, ValueError):
            raise BadRequest("location needs numeric latitude and longitude") from None
    fields = {k: body.get(k) for k in ("text", "payload", "start", "language")}
    for key, value in fields.items():
        if value is not None and (not isinstance(value, str) or len(value) > 4096):
            raise BadRequest(f"{key} must be a string of at most 4096 characters")
    if not any(v is not None for v in fields.values()) and place is None:
        raise BadRequest("send text, payload, start or location")
    return Inbound(
        CHANNEL,
        session,
        text=fields["text"],
        payload=fields["payload"],
        start=fields["start"],
        language=fields["language"],
        place=place,
    )


class SimulatorSender:
    async def send(self, message: Outbound) -> Sent:
        return Sent()
