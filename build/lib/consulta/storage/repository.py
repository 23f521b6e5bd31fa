"""Reading and writing residents' data: contacts, the message log, submissions and answers.

Every change a resident's message causes is gathered in one `Changes` unit of work and written
in a single transaction, so a crash leaves either all of it or none of it (storage/turns.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, and_, cast, delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from consulta.storage.batch import Batcher
from consulta.storage.media import MediaStore
from consulta.storage.models import (
    Answer,
    Consent,
    Contact,
    Group,
    MessageLog,
    Poll,
    StaffMember,
    Submission,
    utcnow,
)
from consulta.storage.turns import (
    CONTACT_COLUMNS,
    Changes,
    ContactInfo,
    InboundRecord,
    InboxView,
    Lane,
    Recorded,
    Statements,
    load_inboxes,
    record_in,
    record_many,
    write_turns,
)

# How long a busy batcher waits for more company: without it, p99 at 500 webhooks/s was 260 ms;
# with 3 ms, 26-60 ms (python -m benchmarks.twilio_webhooks). A quiet process never waits.
LINGER = 0.003

__all__ = [
    "ContactInfo",
    "DataRights",
    "ExportRow",
    "GroupInfo",
    "Groups",
    "InboxView",
    "OutboundRow",
    "PollInfo",
    "Staff",
    "Store",
    "count_submissions",
    "stream_submissions",
    "summary",
]


@dataclass(frozen=True)
class OutboundRow:
    id: int
    contact_id: int
    channel: str
    status: str
    attempts: int
    payload: dict[str, Any]


_OUTBOUND_COLUMNS = (
    MessageLog.id,
    MessageLog.contact_id,
    MessageLog.channel,
    MessageLog.status,
    MessageLog.attempts,
    MessageLog.payload,
)


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
    )


class Store:
    """The database, as the rest of Consulta sees it."""

    def __init__(self, engine: AsyncEngine, secret: str) -> None:
        self.engine = engine
        self._secret = secret.encode()
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.statements = Statements(engine.dialect.name)
        self._insert = self.statements.insert
        # The hot path: each batcher with a connection of its own (storage/turns.py).
        record, read, write = Lane(engine), Lane(engine, autocommit=True), Lane(engine)
        self._lanes = (record, read, write)
        self._recorder: Batcher[InboundRecord, Recorded] = Batcher(
            lambda batch: record_many(self, record, batch), linger=LINGER
        )
        self._reader: Batcher[int, InboxView] = Batcher(
            lambda batch: load_inboxes(self, read, batch), linger=LINGER
        )
        self._writer: Batcher[Changes, Changes] = Batcher(
            lambda batch: write_turns(self, write, batch), linger=LINGER
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

    # outbound ------------------------------------------------------------------------------

    async def outbound(self, message_id: int) -> OutboundRow | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_OUTBOUND_COLUMNS).where(
                        MessageLog.id == message_id, MessageLog.direction == "out"
                    )
                )
            ).one_or_none()
        return OutboundRow(*row[:5], dict(row[5])) if row else None

    async def claim_outbound(
        self, message_id: int, lease: float, by: str = "local"
    ) -> OutboundRow | None:
        """Take a queued reply to send it (status "sending", `by` this process, for `lease`
        seconds), so one process sends it, once. A claim whose lease ran out can be taken
        again. None: it is sent, failed, or another process is sending it."""
        now = utcnow()
        claim = (
            update(MessageLog)
            .where(
                MessageLog.id == message_id,
                MessageLog.direction == "out",
                or_(
                    MessageLog.status == "queued",
                    and_(MessageLog.status == "sending", MessageLog.claimed_until < now),
                ),
            )
            .values(
                status="sending",
                claimed_by=by,
                claimed_until=now + timedelta(seconds=lease),
                updated_at=now,
            )
            .returning(*_OUTBOUND_COLUMNS)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(claim)).one_or_none()
        return OutboundRow(*row[:5], dict(row[5])) if row else None

    async def mark_outbound(
        self,
        message_id: int,
        status: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        attempt: bool = False,
        hold_for: float | None = None,
    ) -> None:
        """Record a send's outcome. `hold_for`: the sender keeps its claim that many seconds
        more (it is waiting out a retry backoff, and is not to be taken over)."""
        now = utcnow()
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if status != "sending":
            values |= {"claimed_by": None, "claimed_until": None}
        if hold_for is not None:
            values["claimed_until"] = now + timedelta(seconds=hold_for)
        if provider_id:
            values["provider_id"] = provider_id
        if error is not None:
            values["error"] = error[:255]
        if attempt:
            values["attempts"] = MessageLog.attempts + 1
        async with self.engine.begin() as conn:
            await conn.execute(update(MessageLog).where(MessageLog.id == message_id).values(values))

    async def update_status_by_provider_id(
        self, channel: str, provider_id: str, status: str, error: str | None = None
    ) -> bool:
        values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
        if error:
            values["error"] = error[:255]
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(MessageLog)
                .where(
                    MessageLog.channel == channel,
                    MessageLog.direction == "out",
                    MessageLog.provider_id == provider_id,
                )
                .values(values)
            )
            return bool(result.rowcount)

    async def senders(self) -> set[str]:
        """The processes holding claims on replies being sent."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(MessageLog.claimed_by)
                .where(MessageLog.direction == "out", MessageLog.status == "sending")
                .distinct()
            )
            return {by for by in rows.scalars() if by}

    async def release_claims(self, of: Sequence[str]) -> list[tuple[int, int]]:
        """Put back the replies that processes which died were sending: queued again.
        Returns their (message id, contact id)."""
        if not of:
            return []
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                update(MessageLog)
                .where(
                    MessageLog.direction == "out",
                    MessageLog.status == "sending",
                    MessageLog.claimed_by.in_(list(of)),
                )
                .values(status="queued", claimed_by=None, claimed_until=None)
                .returning(MessageLog.id, MessageLog.contact_id)
            )
            return sorted((row.id, row.contact_id) for row in rows)

    async def stale_outbound(self, older_than: timedelta) -> list[tuple[int, int]]:
        """Replies nobody is sending: queued for `older_than` (the queue lost them, or their
        process died before queueing them), or claimed by a sender whose lease ran out.
        Returns their (message id, contact id), oldest first."""
        now = utcnow()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(MessageLog.id, MessageLog.contact_id)
                .where(
                    MessageLog.direction == "out",
                    or_(
                        and_(
                            MessageLog.status == "queued",
                            MessageLog.updated_at <= now - older_than,
                        ),
                        and_(MessageLog.status == "sending", MessageLog.claimed_until < now),
                    ),
                )
                .order_by(MessageLog.id)
            )
            return [(row.id, row.contact_id) for row in rows]

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

    # reading what residents said (tests, exports) ------------------------------------------

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


@dataclass(frozen=True)
class GroupInfo:
    id: int
    channel: str
    address: str
    title: str | None
    territory: str | None
    language: str | None
    active: bool


@dataclass(frozen=True)
class PollInfo:
    id: int
    group_id: int
    flow_id: str
    flow_version: int
    question: str
    state: str
    keys: list[str]
    multiple: bool
    territory: str | None


class Groups:
    """Neighbourhood group chats and the polls posted to them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def seen(self, channel: str, address: str, title: str | None, active: bool) -> None:
        """The bot was added to (or removed from) a group."""
        stmt = self.store._insert(Group).values(
            channel=channel, address=address, title=title, active=active, added_at=utcnow()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["channel", "address"],
            set_={"active": active, "title": func.coalesce(stmt.excluded.title, Group.title)},
        )
        async with self.store.engine.begin() as conn:
            await conn.execute(stmt)

    async def register(
        self, channel: str, address: str, territory: str, language: str | None
    ) -> GroupInfo:
        """Staff give a group its territory (and the language to post in)."""
        stmt = self.store._insert(Group).values(
            channel=channel,
            address=address,
            territory=territory,
            language=language,
            active=True,
            added_at=utcnow(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["channel", "address"],
            set_={"territory": territory, "language": language},
        )
        async with self.store.engine.begin() as conn:
            await conn.execute(stmt)
        found = await self.get(channel, address)
        assert found is not None
        return found

    async def get(self, channel: str, address: str) -> GroupInfo | None:
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_GROUP_COLUMNS).where(
                        Group.channel == channel, Group.address == address
                    )
                )
            ).one_or_none()
        return GroupInfo(*row) if row else None

    async def all(self, channel: str) -> list[GroupInfo]:
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(*_GROUP_COLUMNS).where(Group.channel == channel).order_by(Group.id)
            )
            return [GroupInfo(*r) for r in rows]

    async def save_poll(
        self,
        channel: str,
        provider_id: str,
        group: GroupInfo,
        flow_id: str,
        flow_version: int,
        question: str,
        state: str,
        keys: list[str],
        multiple: bool,
    ) -> None:
        async with self.store.engine.begin() as conn:
            await conn.execute(
                insert(Poll).values(
                    channel=channel,
                    provider_id=provider_id,
                    group_id=group.id,
                    flow_id=flow_id,
                    flow_version=flow_version,
                    question=question,
                    state=state,
                    choices={"keys": keys},
                    multiple=multiple,
                    sent_at=utcnow(),
                )
            )

    async def poll(self, channel: str, provider_id: str) -> PollInfo | None:
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        Poll.id,
                        Poll.group_id,
                        Poll.flow_id,
                        Poll.flow_version,
                        Poll.question,
                        Poll.state,
                        Poll.choices,
                        Poll.multiple,
                        Group.territory,
                    )
                    .join(Group, Group.id == Poll.group_id)
                    .where(Poll.channel == channel, Poll.provider_id == provider_id)
                )
            ).one_or_none()
        if row is None:
            return None
        return PollInfo(
            row[0], row[1], row[2], row[3], row[4], row[5], list(row[6]["keys"]), row[7], row[8]
        )

    async def record_vote(
        self,
        poll: PollInfo,
        channel: str,
        voter: str,
        value: Any,
        provider_id: str,
        name: str | None = None,
    ) -> bool:
        """A resident's vote, durably and once per provider id, as the answer to the poll's
        question in a submission of its own (one per poll and voter). False: a redelivery."""
        async with self.store.engine.begin() as conn:
            # Recorded as processed in the same transaction that applies it: a vote is never
            # mistaken by the inbox for a message to run through a flow.
            (recorded,) = await record_in(
                self.store,
                conn,
                [
                    InboundRecord(
                        channel,
                        voter,
                        provider_id,
                        None,
                        {"poll": poll.id, "vote": value},
                        name,
                        status="processed",
                    )
                ],
            )
            contact_id, message_id = recorded.contact_id, recorded.message_id
            if message_id is None:
                return False
            digest = hashlib.sha256(f"poll:{poll.id}:{contact_id}".encode()).hexdigest()[:32]
            now = utcnow()
            submission = self.store._insert(Submission).values(
                id=digest,
                contact_id=contact_id,
                flow_id=poll.flow_id,
                flow_version=poll.flow_version,
                status="complete",
                language=None,
                channel=channel,
                territory=poll.territory,
                folio=None,
                cursor={},
                started_at=now,
                updated_at=now,
                completed_at=now,
            )
            submission = submission.on_conflict_do_update(
                index_elements=["id"], set_={"updated_at": now, "completed_at": now}
            )
            answer = self.store._insert(Answer).values(
                submission_id=digest,
                question=poll.question,
                state=poll.state,
                raw_text=None,
                value=value,
                answered_at=now,
            )
            answer = answer.on_conflict_do_update(
                index_elements=["submission_id", "question"],
                set_={"value": answer.excluded.value, "answered_at": now},
            )
            await conn.execute(submission)
            await conn.execute(answer)
        return True


_GROUP_COLUMNS = (
    Group.id,
    Group.channel,
    Group.address,
    Group.title,
    Group.territory,
    Group.language,
    Group.active,
)


@dataclass(frozen=True)
class ExportRow:
    """One submission as an export sees it: the pseudonym, and the address and name only when
    an admin asked for them explicitly."""

    id: str
    contact: str  # the pseudonymous contact id
    flow_id: str
    flow_version: int
    status: str
    channel: str
    language: str | None
    territory: str | None
    folio: str | None
    started_at: datetime
    completed_at: datetime | None
    answers: dict[str, tuple[Any, str | None, datetime]]  # question → (value, raw, when)
    address: str | None = None  # phone number or chat id: only with contacts=True
    name: str | None = None  # profile name: only with contacts=True


def _export_filters(
    flow_id: str,
    since: datetime | None,
    until: datetime | None,
    territory: str | None,
    status: str,
    channels_excluded: Sequence[str],
) -> list[Any]:
    """The submissions an export holds: one definition for the rows and for their count."""
    where: list[Any] = [Submission.flow_id == flow_id]
    if status != "all":
        where.append(Submission.status == status)
    else:  # a declined submission holds nothing to export: only the refusal
        where.append(Submission.status != "declined")
    if since is not None:
        where.append(Submission.started_at >= since)
    if until is not None:
        where.append(Submission.started_at < until)
    if territory is not None:
        where.append(Submission.territory == territory)
    if channels_excluded:
        where.append(Submission.channel.not_in(list(channels_excluded)))
    return where


async def count_submissions(
    store: Store,
    flow_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    territory: str | None = None,
    status: str = "complete",
    channels_excluded: Sequence[str] = (),
) -> int:
    """How many submissions `stream_submissions` with the same filters yields."""
    where = _export_filters(flow_id, since, until, territory, status, channels_excluded)
    async with store.engine.connect() as conn:
        found = await conn.execute(select(func.count()).select_from(Submission).where(*where))
        return int(found.scalar_one())


async def stream_submissions(
    store: Store,
    flow_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    territory: str | None = None,
    status: str = "complete",
    channels_excluded: Sequence[str] = (),
    contacts: bool = False,
    batch: int = 1000,
    offset: int = 0,
    limit: int | None = None,
) -> AsyncIterator[ExportRow]:
    """Submissions of a flow with their answers, oldest first, `batch` at a time; with
    `contacts`, each with the resident's address and name too (for admins only)."""
    details = (Contact.address, Contact.name) if contacts else ()
    query = (
        select(
            Submission.id,
            Contact.pid,
            Submission.flow_id,
            Submission.flow_version,
            Submission.status,
            Submission.channel,
            Submission.language,
            Submission.territory,
            Submission.folio,
            Submission.started_at,
            Submission.completed_at,
            *details,
        )
        .join(Contact, Contact.id == Submission.contact_id)
        .where(*_export_filters(flow_id, since, until, territory, status, channels_excluded))
        .order_by(Submission.started_at, Submission.id)
    )
    if offset or limit is not None:
        query = query.offset(offset).limit(limit)
    fixed = len(query.selected_columns) - len(details)  # the contact details come last
    async with store.engine.connect() as conn:
        result = await conn.stream(query.execution_options(yield_per=batch))
        async for rows in result.partitions(batch):
            ids = [r[0] for r in rows]
            answers: dict[str, dict[str, tuple[Any, str | None, datetime]]] = {}
            async with store.engine.connect() as other:
                found = await other.execute(
                    select(
                        Answer.submission_id,
                        Answer.question,
                        Answer.value,
                        Answer.raw_text,
                        Answer.answered_at,
                    ).where(Answer.submission_id.in_(ids))
                )
                for sid, question, value, raw, when in found:
                    answers.setdefault(sid, {})[question] = (value, raw, when)
            for r in rows:
                if not contacts:  # the usual export: no slicing per row
                    yield ExportRow(*r, answers=answers.get(r[0], {}))
                    continue
                yield ExportRow(
                    *r[:fixed], answers=answers.get(r[0], {}), address=r[fixed], name=r[fixed + 1]
                )


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
    return value.isoformat(timespec="seconds") if value else None


SUPPRESS_BELOW = 5  # a breakdown cell under this many residents shows as "<5"
BREAKDOWN_QUESTIONS = ("gender", "age_group", "sector")


def _suppressed(counts: Mapping[Any, int]) -> dict[str, int | str]:
    return {str(k): (n if n >= SUPPRESS_BELOW else f"<{SUPPRESS_BELOW}") for k, n in counts.items()}


class Staff:
    """The planning team's accounts: bearer tokens, stored as hashes, shown once."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    async def add(self, name: str, role: str) -> str:
        """A new account; returns its token (never stored, never shown again)."""
        token = secrets.token_urlsafe(32)
        async with self.store.engine.begin() as conn:
            await conn.execute(
                insert(StaffMember).values(
                    name=name,
                    role=role,
                    token_hash=self._hash(token),
                    created_at=utcnow(),
                    revoked_at=None,
                )
            )
        return token

    async def authenticate(self, token: str) -> tuple[str, str] | None:
        """(name, role) of a valid, unrevoked token."""
        if not token:
            return None
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(StaffMember.name, StaffMember.role).where(
                        StaffMember.token_hash == self._hash(token),
                        StaffMember.revoked_at.is_(None),
                    )
                )
            ).one_or_none()
        return (row[0], row[1]) if row else None

    async def revoke(self, name: str) -> bool:
        async with self.store.engine.begin() as conn:
            result = await conn.execute(
                update(StaffMember)
                .where(StaffMember.name == name, StaffMember.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)

    async def all(self) -> list[tuple[str, str, datetime, datetime | None]]:
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    StaffMember.name,
                    StaffMember.role,
                    StaffMember.created_at,
                    StaffMember.revoked_at,
                ).order_by(StaffMember.name)
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]


async def summary(
    store: Store,
    flow_id: str,
    choice_questions: Sequence[str],
    channels_excluded: Sequence[str] = ("simulator",),
) -> dict[str, Any]:
    """Participation figures for a dashboard: totals, breakdowns and answer distributions,
    with every breakdown cell under SUPPRESS_BELOW residents shown as "<5"."""
    flow = [Submission.flow_id == flow_id, Submission.channel.not_in(list(channels_excluded))]
    where = [*flow, Submission.status != "declined"]  # a refusal is counted, never broken down
    async with store.engine.connect() as conn:
        totals = dict(
            (
                await conn.execute(
                    select(Submission.status, func.count()).where(*flow).group_by(Submission.status)
                )
            ).all()
        )
        breakdowns: dict[str, dict[str, int | str]] = {}
        for name, column in (
            ("channel", Submission.channel),
            ("language", Submission.language),
            ("territory", Submission.territory),
        ):
            counts = (
                await conn.execute(
                    select(column, func.count(func.distinct(Submission.contact_id)))
                    .where(*where)
                    .group_by(column)
                )
            ).all()
            breakdowns[name] = _suppressed({k or "unknown": n for k, n in counts})
        distributions: dict[str, Counter[str]] = {}
        profile: dict[str, Counter[str]] = {q: Counter() for q in BREAKDOWN_QUESTIONS}
        wanted = {*choice_questions, *BREAKDOWN_QUESTIONS}
        answers = await conn.stream(
            select(Answer.question, Answer.value)
            .join(Submission, Submission.id == Answer.submission_id)
            .where(*where, Answer.question.in_(list(wanted)))
        )
        async for question, value in answers:
            values = value if isinstance(value, list) else [value]
            target = distributions.setdefault(question, Counter())
            for v in values:
                if v is not None:
                    target[str(v)] += 1
                    if question in profile:
                        profile[question][str(v)] += 1
    declined = totals.pop("declined", 0)
    started = sum(totals.values())
    completed = totals.get("complete", 0)
    for question in BREAKDOWN_QUESTIONS:
        breakdowns[question] = _suppressed(profile[question])
    return {
        "flow": flow_id,
        "started": started,
        "completed": completed,
        "completion_rate": round(completed / started, 3) if started else None,
        "declined": declined,
        "breakdowns": breakdowns,
        "answers": {q: _suppressed(distributions.get(q, Counter())) for q in choice_questions},
    }
