"""A resident's rights over what is held about them (ARCO): see all of it, and have it
forgotten — the answers kept anonymous, or everything deleted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, cast, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from consulta.storage.media import MediaStore
from consulta.storage.models import Answer, Consent, Contact, MessageLog, Submission
from consulta.storage.records import CONTACT_COLUMNS, ContactInfo
from consulta.storage.store import Store

__all__ = ["DataRights"]


class DataRights:
    """A resident's rights over what is held about them (ARCO): see it, and have it forgotten."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def contacts(self, address: str, channel: str | None = None) -> list[ContactInfo]:
        """Every contact with this address (a phone number may be on WhatsApp and on SMS)."""
        query = select(*CONTACT_COLUMNS).where(Contact.address == address)
        if channel:
            query = query.where(Contact.channel == channel)
        async with self.store.engine.connect() as conn:
            return [ContactInfo(*r) for r in await conn.execute(query.order_by(Contact.id))]

    @staticmethod
    async def _photos(conn: AsyncConnection, contact_id: int) -> set[str]:
        rows = await conn.execute(
            select(Answer.value)
            .join(Submission, Submission.id == Answer.submission_id)
            .where(Submission.contact_id == contact_id)
        )
        return {
            v["media"]
            for (v,) in rows
            if isinstance(v, dict) and str(v.get("media", "")).startswith("media/")
        }

    async def describe(self, contact: ContactInfo) -> dict[str, Any]:
        """All that is held about one contact, as a resident would be shown it."""
        async with self.store.engine.connect() as conn:
            messages = (
                await conn.execute(
                    select(MessageLog.direction, func.count())
                    .where(MessageLog.contact_id == contact.id)
                    .group_by(MessageLog.direction)
                )
            ).all()
        return {
            "channel": contact.channel,
            "address": contact.address,
            "pseudonym": contact.pid,
            "name": contact.name,
            "language": contact.language,
            "profile": contact.profile,
            "opted_out": contact.opted_out,
            "last_message_at": _iso(contact.last_inbound_at),
            "consents": [{**c, "at": _iso(c["at"])} for c in await self.store.consents(contact.id)],
            "submissions": await self.store.submissions(contact.id),
            "messages": {direction: count for direction, count in messages},
        }

    async def forget(
        self, contact: ContactInfo, *, answers: bool, media: MediaStore | None = None
    ) -> None:
        """Remove what points back to the resident: address, name, profile, the message log
        (it holds their words and address) and the pseudonym (a keyed hash of the address).
        Their answers stay, anonymous, unless `answers`, when everything goes — with the
        photos they sent, from `media`, unless another answer holds the same picture."""
        photos: set[str] = set()
        async with self.store.engine.begin() as conn:
            await conn.execute(delete(MessageLog).where(MessageLog.contact_id == contact.id))
            if answers:
                photos = await self._photos(conn, contact.id)
                await conn.execute(delete(Submission).where(Submission.contact_id == contact.id))
                await conn.execute(delete(Consent).where(Consent.contact_id == contact.id))
                await conn.execute(delete(Contact).where(Contact.id == contact.id))
                for ref in list(photos):
                    still = await conn.execute(
                        select(Answer.id).where(cast(Answer.value, Text).contains(ref)).limit(1)
                    )
                    if still.first() is not None:
                        photos.discard(ref)
            else:
                anonymous = uuid.uuid4().hex
                await conn.execute(
                    update(Submission).where(Submission.contact_id == contact.id).values(cursor={})
                )
                await conn.execute(
                    update(Contact)
                    .where(Contact.id == contact.id)
                    .values(
                        pid="f" + anonymous[:19],
                        address="forgotten:" + anonymous[:20],
                        name=None,
                        language=None,
                        profile={},
                        extra={},
                        opted_out=True,
                        last_inbound_at=None,
                    )
                )
        if media is not None:  # once the rows are gone for good
            for ref in photos:
                await media.delete(ref)


def _iso(value: datetime | None) -> str | None:
    """RFC 3339, with its offset: SQLite hands back times without one, and they are UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat(timespec="seconds")
