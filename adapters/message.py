"""The one internal message type in (`Inbound`) and out (`Outbound`) shared by every channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

__all__ = [
    "Attachment",
    "Button",
    "Channel",
    "Hooks",
    "Inbound",
    "Outbound",
    "Place",
    "SendError",
    "Sent",
]


@dataclass(frozen=True)
class Place:
    latitude: float
    longitude: float
    label: str | None = None


@dataclass(frozen=True)
class Attachment:
    url: str  # the provider's URL, or our own reference once downloaded
    content_type: str


@dataclass(frozen=True)
class Inbound:
    """What a resident sent, on any channel."""

    channel: str
    address: str  # phone number or chat id: stays inside the store
    provider_id: str | None = None  # MessageSid, update_id…: processed once
    text: str | None = None
    payload: str | None = None  # a button press
    place: Place | None = None
    attachments: tuple[Attachment, ...] = ()
    start: str | None = None  # a deep link payload; "" for a bare start
    language: str | None = None  # an explicit language choice
    language_hint: str | None = None
    name: str | None = None  # the resident's display name on the channel
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict, which deep-copies: this runs for every message.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if self.place:
            data["place"] = vars(self.place).copy()
        data["attachments"] = [vars(a).copy() for a in self.attachments]
        data["extra"] = dict(self.extra)
        return {k: v for k, v in data.items() if v not in (None, (), {}, [])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inbound:
        data = dict(data)
        if data.get("place"):
            data["place"] = Place(**data["place"])
        data["attachments"] = tuple(Attachment(**a) for a in data.get("attachments", ()))
        return cls(**data)


@dataclass(frozen=True)
class Button:
    payload: str
    title: str


@dataclass(frozen=True)
class Outbound:
    """What we say to a resident. `text` always carries numbered choices; `buttons` is extra."""

    channel: str
    address: str
    text: str
    buttons: tuple[Button, ...] = ()
    expects: str | None = None  # "location" or "photo": a channel may offer a native button
    language: str | None = None
    last_inbound_at: float | None = None  # POSIX time the resident last wrote (24-hour rules)
    template: str | None = None  # the approved template to use outside a reply window
    button_label: str | None = (
        None  # a channel button's label: a list's "Elegir", "📍 Compartir ubicación"
    )
    bulk: bool = False  # a broadcast: paced behind replies to residents mid-survey

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["buttons"] = [vars(b).copy() for b in self.buttons]
        if not self.bulk:  # a reply reads as it did before bulk existed (from_dict: False)
            del data["bulk"]
        return {k: v for k, v in data.items() if v not in (None, (), [])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outbound:
        data = dict(data)
        data["buttons"] = tuple(Button(**b) for b in data.get("buttons", ()))
        return cls(**data)


@dataclass(frozen=True)
class Sent:
    provider_id: str | None = None


class SendError(Exception):
    """A send failed. `permanent` errors are not retried; `opted_out` marks the contact."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        opted_out: bool = False,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent, self.opted_out = permanent or opted_out, opted_out
        self.retry_after, self.code = retry_after, code


class Hooks(Protocol):
    """What the process offers a channel: record a message, note a delivery status."""

    async def receive(self, inbound: Inbound) -> bool:
        """Record durably and schedule handling. False when the provider id was seen before."""
        ...

    async def delivery_status(
        self, channel: str, provider_id: str, status: str, error: str | None = None
    ) -> None: ...

    async def opt_out(self, channel: str, address: str) -> None:
        """The resident blocked us on the channel itself."""
        ...

    async def group_seen(self, channel: str, address: str, title: str | None, active: bool) -> None:
        """The bot was added to (active) or removed from a group chat."""
        ...

    async def poll_vote(
        self,
        channel: str,
        poll: str,
        voter: str,
        options: list[int],
        provider_id: str,
        name: str | None = None,
    ) -> None:
        """A resident voted in a native poll (option indexes; empty: the vote was retracted)."""
        ...


class Channel(Protocol):
    """One channel adapter: its webhook routes (if any) and how it sends."""

    name: str

    def routes(self, hooks: Hooks) -> list[web.RouteDef]: ...

    async def send(self, message: Outbound) -> Sent: ...

    async def fetch_media(self, attachment: Attachment) -> bytes:
        """Download a resident's photo with the channel's credentials."""
        ...

    async def start(self, hooks: Hooks) -> None:
        """Begin background work (Telegram long polling…); most channels do nothing."""
        ...

    async def close(self) -> None: ...
