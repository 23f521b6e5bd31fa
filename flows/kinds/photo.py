"""`photo`: an image the resident sends, kept as {media, content_type}; channels with a camera
button offer it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consulta.flows.kinds.base import Ask, Invalid, Kind, Reply

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["Photo"]


class Photo(Kind):
    name = "photo"

    def parse(self, state: State, reply: Reply) -> Any:
        image = next((m for m in reply.media if m.is_image), None)
        if image is None:
            raise self.reprompt(state)
        return {"media": image.ref, "content_type": image.content_type}

    def prompt(self, state: State, lang: str) -> Ask:
        return Ask(expects="photo")

    def reprompt(self, state: State) -> Invalid:
        return Invalid("reprompt-photo")
