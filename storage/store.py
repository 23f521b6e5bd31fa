"""The database as the rest of Consulta sees it: residents, the messages they send and the
turns those cause, the replies (storage/replies.py), and what residents said.

A message's turn is gathered in one `Changes` and written in one transaction with other
residents' turns (storage/turns.py): a crash leaves all of it or none of it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from consulta.storage.batch import Batcher, BatchObserver
from consulta.storage.models import Answer, Consent, Contact, MessageLog, Submission, utcnow
from consulta.storage.records import CONTACT_COLUMNS, ContactInfo, InboxView
from consulta.storage.replies import Replies
from consulta.storage.turns import (
    Changes,
    InboundRecord,
    Lane,
    Recorded,
    Statements,
    load_inboxes,
    record_many,
    write_turns,
)

__all__ = ["Store"]

# How long a busy batcher waits for more company: without it, p99 at 500 webhooks/s was 260 ms;
# with 3 ms, 26-60 ms (python -m benchmarks.twilio_webhooks). A quiet process never waits.
LINGER = 0.003


def _info(c: Contact) -> ContactInfo:
    return ContactInfo(
        c.id,
        c.pid,
        c.channel,
        c.address,
        c.language,
        dict(c.profile or {}),
        c.opted_out,
        c.name,
        c.last_inbound_at,
        c.invited_flow,
        c.invited_at,
    )


class Store:
    """Residents, their messages and turns, and what they said; `replies` is the outbound side
    of the message log. `observe` is told the size of each batch of the hot path (metrics)."""

    def __init__(
        self, engine: AsyncEngine, secret: str, *, observe: BatchObserver | None = None
    ) -> None:
        self.engine = engine
        self._secret = secret.encode()
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.statements = sql = Statements(engine.dialect.name)
        self.replies = Replies(engine)
        # The hot path: each batcher with a connection of its own (storage/turns.py).
        record, read, write = Lane(engine), Lane(engine, autocommit=True), Lane(engine)
        self._lanes = (record, read, write)
        self._recorder: Batcher[InboundRecord, Recorded] = Batcher(
            lambda batch: record_many(sql, self.pseudonym, record, batch),
            linger=LINGER,
            name="record_inbound",
            observe=observe,
        )
        self._reader: Batcher[int, InboxView] = Batcher(
            lambda batch: load_inboxes(sql, read, batch),
            linger=LINGER,
            name="read_inbox",
            observe=observe,
        )
        self._writer: Batcher[Changes, Changes] = Batcher(
            lambda batch: write_turns(sql, write, batch),
            linger=LINGER,
            name="write_turns",
            observe=observe,
        )

    def pseudonym(self, channel: str, address: str) -> str:
        """A stable, keyed, one-way id for a contact: what exports and logs show."""
        digest = hmac.new(self._secret, f"{channel}:{address}".encode(), hashlib.sha256)
        return "c" + digest.hexdigest()[:19]

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._recorder.close()
        await self._reader.close()
        await self._writer.close()
        for lane in self._lanes:
            await lane.close()
        await self.engine.dispose()

    # inbound -------------------------------------------------------------------------------

    async def record_inbound(
        self,
        channel: str,
        address: str,
        provider_id: str | None,
        body: str | None,
        payload: dict[str, Any],
        *,
        name: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[int, int | None]:
        """Durably record a resident's message (group-committed with others arriving at the
        same time). Returns (contact id, message id or None when this provider id was already
        recorded)."""
        recorded = await self._recorder.submit(
            InboundRecord(channel, address, provider_id, body, payload, name, extra)
        )
        return recorded.contact_id, recorded.message_id

    async def inbox(self, contact_id: int) -> InboxView:
        """A contact, their unhandled messages and the flows they completed (read together
        with other residents' in one query each)."""
        return await self._reader.submit(contact_id)

    async def contacts_with_pending_inbound(
        self, older_than: timedelta = timedelta(0)
    ) -> list[int]:
        """Residents with messages recorded but not handled for `older_than` (a process died,
        or the database or Redis was away while it handled them), oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(MessageLog.contact_id)
                .where(
                    MessageLog.direction == "in",
                    MessageLog.status == "received",
                    MessageLog.created_at <= utcnow() - older_than,
                )
                .group_by(MessageLog.contact_id)
                .order_by(func.min(MessageLog.id))
            )
            return list(rows.scalars())

    # contacts ------------------------------------------------------------------------------

    async def contact(self, contact_id: int) -> ContactInfo:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(*CONTACT_COLUMNS).where(Contact.id == contact_id))
            ).one_or_none()
        if row is None:
            raise LookupError(f"no contact {contact_id}")
        return ContactInfo(*row)

    async def find_contact(self, channel: str, address: str) -> ContactInfo | None:
        async with self._sessions() as session:
            found = await session.execute(
                select(Contact).where(Contact.channel == channel, Contact.address == address)
            )
            contact = found.scalar_one_or_none()
            return _info(contact) if contact else None

    async def set_opted_out(self, contact_id: int) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(Contact)
                .where(Contact.id == contact_id)
                .values(opted_out=True, opted_out_at=utcnow())
            )

    async def open_cursor(self, contact_id: int) -> dict[str, Any] | None:
        """Where the resident is in their latest unfinished flow, from the durable copy."""
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(Submission.cursor)
                .where(Submission.contact_id == contact_id, Submission.status == "partial")
                .order_by(Submission.updated_at.desc())
                .limit(1)
            )
            cursor = found.scalar_one_or_none()
            return dict(cursor) if cursor else None

    # one message's changes -----------------------------------------------------------------

    @asynccontextmanager
    async def changes(self, contact: ContactInfo) -> AsyncIterator[Changes]:
        """Gather one message's writes; when the block ends they are written in one
        transaction (with other residents' turns), or the block raises."""
        changes = Changes(contact)
        yield changes
        await self._writer.submit(changes)

    # reading what residents said (the simulator, data rights, tests) ------------------------

    async def conversation_log(
        self, channel: str, address: str, after_id: int = 0
    ) -> Sequence[tuple[int, str, str | None, dict[str, Any]]]:
        """(id, direction, body, payload) of one contact's messages after `after_id`."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(MessageLog.id, MessageLog.direction, MessageLog.body, MessageLog.payload)
                .join(Contact, Contact.id == MessageLog.contact_id)
                .where(
                    Contact.channel == channel, Contact.address == address, MessageLog.id > after_id
                )
                .order_by(MessageLog.id)
            )
            return [(r.id, r.direction, r.body, r.payload) for r in rows]

    async def submissions(self, contact_id: int | None = None) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            stmt = select(Submission).order_by(Submission.started_at, Submission.id)
            if contact_id is not None:
                stmt = stmt.where(Submission.contact_id == contact_id)
            subs = list((await session.execute(stmt)).scalars())
            answers = await session.execute(
                select(Answer).where(Answer.submission_id.in_([s.id for s in subs]))
            )
            by_sub: dict[str, dict[str, Any]] = {}
            for a in answers.scalars():
                by_sub.setdefault(a.submission_id, {})[a.question] = a.value
            return [
                {
                    "id": s.id,
                    "flow": s.flow_id,
                    "version": s.flow_version,
                    "status": s.status,
                    "language": s.language,
                    "channel": s.channel,
                    "territory": s.territory,
                    "folio": s.folio,
                    "answers": by_sub.get(s.id, {}),
                }
                for s in subs
            ]

    async def consents(self, contact_id: int) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(Consent).where(Consent.contact_id == contact_id).order_by(Consent.id)
            )
            return [
                {
                    "flow": c.flow_id,
                    "given": c.given,
                    "notice_version": c.notice_version,
                    "at": c.at,
                }
                for c in rows.scalars()
            ]
