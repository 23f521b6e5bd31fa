"""A resident as every part of storage reads them: a contact, and what handling their next
message needs. Shared by the store, the hot path (storage/turns.py) and data rights."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consulta.storage.models import Contact

__all__ = ["CONTACT_COLUMNS", "ContactInfo", "InboxView"]


@dataclass(frozen=True)
class ContactInfo:
    id: int
    pid: str
    channel: str
    address: str
    language: str | None
    profile: dict[str, Any]
    opted_out: bool
    name: str | None
    last_inbound_at: datetime | None
    invited_flow: str | None = None  # the survey a broadcast invited them to …
    invited_at: datetime | None = None  # … and when (naive on SQLite: UTC)


# A `ContactInfo`'s fields, in order: `ContactInfo(*row)` of a row selected with these.
CONTACT_COLUMNS = (
    Contact.id,
    Contact.pid,
    Contact.channel,
    Contact.address,
    Contact.language,
    Contact.profile,
    Contact.opted_out,
    Contact.name,
    Contact.last_inbound_at,
    Contact.invited_flow,
    Contact.invited_at,
)


@dataclass(frozen=True)
class InboxView:
    """What handling a contact's next message needs from the database."""

    contact: ContactInfo
    next: tuple[int, dict[str, Any]] | None  # the oldest unhandled message: (id, payload)
    waiting: int  # how many unhandled messages, that one included
    completed: frozenset[str]  # flows this contact has completed
    received_at: datetime | None = None  # when `next` was recorded (naive on SQLite: UTC)
