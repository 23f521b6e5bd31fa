"""The hot path's writes: residents' messages recorded as they arrive, and each turn's changes
(answers, profile, cursor, replies), both group-committed — one transaction and one statement
per kind of row for everything that arrived together, identical on SQLite and PostgreSQL.

Statements are built once per database and reused, so SQLAlchemy compiles each one once.
If a batch fails, every item in it is retried alone on a fresh connection, so a dropped
connection costs a retry and one bad turn never sinks the others.

The `Store` (storage/store.py) builds on this module and hands it what it needs — the
statements, a lane, the pseudonym function — so the hot path never reaches back for the store.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consulta.storage.errors import is_unavailable
from consulta.storage.models import Answer, Consent, Contact, MessageLog, Submission, utcnow
from consulta.storage.records import CONTACT_COLUMNS, ContactInfo, InboxView

__all__ = [
    "Changes",
    "InboundRecord",
    "Lane",
    "Pseudonym",
    "Recorded",
    "Statements",
    "load_inboxes",
    "record_in",
    "record_many",
    "write_turns",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


# A contact's pseudonymous id, from their channel and address (`Store.pseudonym`).
Pseudonym = Callable[[str, str], str]


@dataclass(frozen=True)
class InboundRecord:
    channel: str
    address: str
    provider_id: str | None
    body: str | None
    payload: dict[str, Any]
    name: str | None = None
    extra: dict[str, Any] | None = None
    status: str = "received"


@dataclass(frozen=True)
class Recorded:
    contact_id: int
    message_id: int | None  # None: this provider id was already recorded


class Statements:
    """The hot path's statements for one database dialect, built once."""

    def __init__(self, dialect: str) -> None:
        self.insert = postgresql.insert if dialect == "postgresql" else sqlite.insert  # upserts

    @cached_property
    def upsert_contact(self) -> Any:
        stmt = self.insert(Contact)
        # Writing again ends an opt-out. The name the channel shows is kept only once the
        # resident says yes to a consent question (`Changes.set_name`), not on arrival.
        return stmt.on_conflict_do_update(
            index_elements=["channel", "address"],
            set_={"last_inbound_at": stmt.excluded.last_inbound_at, "opted_out": False},
        ).returning(Contact.id, Contact.channel, Contact.address)

    @cached_property
    def insert_inbound(self) -> Any:
        return (
            self.insert(MessageLog)
            .on_conflict_do_nothing(index_elements=["channel", "direction", "provider_id"])
            .returning(MessageLog.id, MessageLog.channel, MessageLog.provider_id)
        )

    @cached_property
    def insert_message(self) -> Any:
        return insert(MessageLog).returning(MessageLog.id, sort_by_parameter_order=True)

    @cached_property
    def upsert_answer(self) -> Any:
        stmt = self.insert(Answer)
        return stmt.on_conflict_do_update(
            index_elements=["submission_id", "question"],
            set_={
                "state": stmt.excluded.state,
                "raw_text": stmt.excluded.raw_text,
                "value": stmt.excluded.value,
                "answered_at": stmt.excluded.answered_at,
            },
        )

    @cached_property
    def complete_submission(self) -> Any:
        return (
            update(Submission)
            .where(Submission.id == bindparam("b_id"))
            .values(
                status="complete",
                completed_at=bindparam("b_now"),
                updated_at=bindparam("b_now"),
                cursor={},
            )
        )

    @cached_property
    def place_submission(self) -> Any:
        """A territory for a submission that has none yet (from a pin or a typed place)."""
        return (
            update(Submission)
            .where(Submission.id == bindparam("b_id"), Submission.territory.is_(None))
            .values(territory=bindparam("b_territory"))
        )

    @cached_property
    def save_cursor(self) -> Any:
        return (
            update(Submission)
            .where(Submission.id == bindparam("b_id"), Submission.status == "partial")
            .values(cursor=bindparam("b_cursor"), updated_at=bindparam("b_now"))
        )

    @cached_property
    def decline_submission(self) -> Any:
        return (
            update(Submission)
            .where(Submission.id == bindparam("b_id"))
            .values(status="declined", cursor={}, updated_at=bindparam("b_now"))
        )

    @cached_property
    def drop_answers(self) -> Any:
        return delete(Answer).where(Answer.submission_id == bindparam("b_id"))

    @cached_property
    def redact_declined(self) -> Any:
        # The resident's words since the declined submission began (the message that started
        # it was processed in the same turn, so at the same time): only the refusal remains.
        started = (
            select(Submission.started_at)
            .where(Submission.id == bindparam("b_id"))
            .scalar_subquery()
        )
        return (
            update(MessageLog)
            .where(
                MessageLog.contact_id == bindparam("b_contact"),
                MessageLog.direction == "in",
                MessageLog.status == "processed",
                MessageLog.updated_at >= started,
            )
            .values(body=None, payload={})
        )

    @cached_property
    def mark_processed(self) -> Any:
        return (
            update(MessageLog)
            .where(MessageLog.id == bindparam("b_id"))
            .values(status="processed", updated_at=bindparam("b_now"))
        )

    @cached_property
    def contacts(self) -> Any:
        return select(*CONTACT_COLUMNS).where(Contact.id.in_(bindparam("ids", expanding=True)))

    @cached_property
    def pending(self) -> Any:
        # Each contact's oldest unhandled message, and how many wait: a resident with a backlog
        # does not have all of it read (and its JSON decoded) once per message handled.
        waiting = (
            select(
                MessageLog.contact_id,
                func.min(MessageLog.id).label("first"),
                func.count().label("waiting"),
            )
            .where(
                MessageLog.contact_id.in_(bindparam("ids", expanding=True)),
                MessageLog.direction == "in",
                MessageLog.status == "received",
            )
            .group_by(MessageLog.contact_id)
            .subquery()
        )
        return select(
            MessageLog.contact_id,
            MessageLog.id,
            MessageLog.payload,
            MessageLog.created_at,
            waiting.c.waiting,
        ).join(waiting, MessageLog.id == waiting.c.first)

    @cached_property
    def completed(self) -> Any:
        return (
            select(Submission.contact_id, Submission.flow_id)
            .where(
                Submission.contact_id.in_(bindparam("ids", expanding=True)),
                Submission.status == "complete",
            )
            .distinct()
        )

    @cached_property
    def update_contact(self) -> Any:
        # The SET clause comes from each batch's parameter names (profile, language, …).
        return update(Contact).where(Contact.id == bindparam("b_id"))


class Lane:
    """One connection kept open for one batcher, which runs one batch at a time: no pool
    checkout and no reset on return per batch. A connection that fails is dropped, and the
    next batch opens a fresh one. A reading lane runs without transactions (autocommit)."""

    def __init__(self, engine: AsyncEngine, *, autocommit: bool = False) -> None:
        self.engine, self.autocommit = engine, autocommit
        self._conn: AsyncConnection | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        if self._conn is None:
            conn = await self.engine.connect()
            if self.autocommit:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
        try:
            yield self._conn
        except BaseException:
            await self.close()
            raise

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self.connection() as conn, conn.begin():
            yield conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


# --- recording what arrives ----------------------------------------------------------------


async def record_many(
    sql: Statements, pseudonym: Pseudonym, lane: Lane, records: Sequence[InboundRecord]
) -> Sequence[Recorded | BaseException]:
    """Record messages durably, once per provider id: one transaction for the whole batch."""

    async def write(conn: AsyncConnection, batch: Sequence[InboundRecord]) -> list[Recorded]:
        return await record_in(sql, pseudonym, conn, batch)

    return await _each_alone_on_failure(lane, records, write)


async def record_in(
    sql: Statements, pseudonym: Pseudonym, conn: AsyncConnection, records: Sequence[InboundRecord]
) -> list[Recorded]:
    now = utcnow()
    contacts: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        known = contacts.get((r.channel, r.address))
        contacts[(r.channel, r.address)] = {
            "pid": pseudonym(r.channel, r.address),
            "channel": r.channel,
            "address": r.address,
            "name": None,  # kept only once they consent (Changes.set_name)
            "profile": {},
            "extra": r.extra or (known["extra"] if known else {}),
            "opted_out": False,
            "created_at": now,
            "last_inbound_at": now,
        }
    # Sorted, so two processes' batches lock the same contacts in the same order.
    rows = await conn.execute(sql.upsert_contact, sorted_by_key(contacts))
    contact_ids = {(row.channel, row.address): row.id for row in rows}

    def message(r: InboundRecord) -> dict[str, Any]:
        return {
            "direction": "in",
            "channel": r.channel,
            "contact_id": contact_ids[(r.channel, r.address)],
            "provider_id": r.provider_id,
            "status": r.status,
            "body": r.body,
            "payload": r.payload,
            "error": None,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }

    # Provider ids name their own rows; a retry inside the batch is a duplicate like any other.
    first: dict[tuple[str, str], InboundRecord] = {}
    for r in records:
        if r.provider_id is not None:
            first.setdefault((r.channel, r.provider_id), r)
    message_ids: dict[tuple[str, str], int] = {}
    if first:
        rows = await conn.execute(sql.insert_inbound, [message(r) for r in first.values()])
        message_ids = {(row.channel, row.provider_id): row.id for row in rows}
    results = []
    for r in records:
        contact_id = contact_ids[(r.channel, r.address)]
        if r.provider_id is None:  # local channels (terminal, simulator): no retries to fold
            inserted = await conn.execute(sql.insert_message, [message(r)])
            results.append(Recorded(contact_id, inserted.scalar_one()))
        elif first[(r.channel, r.provider_id)] is r:
            results.append(Recorded(contact_id, message_ids.get((r.channel, r.provider_id))))
        else:
            results.append(Recorded(contact_id, None))
    return results


def sorted_by_key(rows: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    return [rows[key] for key in sorted(rows)]


# --- reading what a turn needs ------------------------------------------------------------


async def load_inboxes(
    sql: Statements, lane: Lane, contact_ids: Sequence[int]
) -> list[InboxView | BaseException]:
    try:
        return await _load_inboxes(sql, lane, contact_ids)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # Once more on a fresh connection: the lane's own died (the database restarted).
        return await _load_inboxes(sql, lane, contact_ids)


async def _load_inboxes(
    sql: Statements, lane: Lane, contact_ids: Sequence[int]
) -> list[InboxView | BaseException]:
    ids = {"ids": sorted(set(contact_ids))}
    # Reads need no transaction: each contact's inbox lock is held by whoever asked.
    async with lane.connection() as conn:
        contacts = {row.id: ContactInfo(*row) for row in await conn.execute(sql.contacts, ids)}
        pending = {
            row.contact_id: ((row.id, row.payload), row.waiting, row.created_at)
            for row in await conn.execute(sql.pending, ids)
        }
        completed: dict[int, set[str]] = {}
        for row in await conn.execute(sql.completed, ids):
            completed.setdefault(row.contact_id, set()).add(row.flow_id)
    views: list[InboxView | BaseException] = []
    for i in contact_ids:
        if i not in contacts:
            views.append(LookupError(f"no contact {i}"))
            continue
        first, waiting, received_at = pending.get(i, (None, 0, None))
        done = frozenset(completed.get(i, ()))
        views.append(InboxView(contacts[i], first, waiting, done, received_at))
    return views


# --- one turn's changes --------------------------------------------------------------------


@dataclass
class Changes:
    """The writes one resident message causes, gathered, then written in one transaction
    (with other residents' turns) when the `Store.changes()` block ends."""

    contact: ContactInfo
    now: datetime = field(default_factory=utcnow)
    outbound_ids: list[int] = field(default_factory=list)  # filled in once written
    _contact_values: dict[str, Any] = field(default_factory=dict)
    _submissions: list[dict[str, Any]] = field(default_factory=list)
    _answers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _consents: list[dict[str, Any]] = field(default_factory=list)
    _completed: list[str] = field(default_factory=list)
    _declined: list[str] = field(default_factory=list)
    _cursors: dict[str, dict[str, Any]] = field(default_factory=dict)
    _places: dict[str, str] = field(default_factory=dict)  # submission → territory code
    _processed: list[int] = field(default_factory=list)
    _outbound: list[dict[str, Any]] = field(default_factory=list)

    def start_submission(
        self,
        submission_id: str,
        flow_id: str,
        version: int,
        language: str | None,
        territory: str | None,
        folio: str | None,
    ) -> None:
        self._submissions.append(
            {
                "id": submission_id,
                "contact_id": self.contact.id,
                "flow_id": flow_id,
                "flow_version": version,
                "status": "partial",
                "language": language,
                "channel": self.contact.channel,
                "territory": territory,
                "folio": folio,
                "cursor": {},
                "started_at": self.now,
                "updated_at": self.now,
                "completed_at": None,
            }
        )

    def save_answer(
        self, submission_id: str, question: str, state: str, raw: str | None, value: Any
    ) -> None:
        self._answers[(submission_id, question)] = {
            "submission_id": submission_id,
            "question": question,
            "state": state,
            "raw_text": raw,
            "value": value,
            "answered_at": self.now,
        }

    def complete_submission(self, submission_id: str) -> None:
        self._completed.append(submission_id)

    def decline_submission(self, submission_id: str) -> None:
        """No consent: the submission keeps only the refusal — no answers, and the resident's
        messages since it began are blanked in the log."""
        self._declined.append(submission_id)

    def save_cursor(self, submission_id: str, cursor: dict[str, Any]) -> None:
        self._cursors[submission_id] = cursor

    def place(self, submission_id: str, territory: str) -> None:
        """The submission's territory, unless it has one already (a deep link's, a group's)."""
        self._places.setdefault(submission_id, territory)

    def set_profile(self, name: str, value: Any) -> None:
        profile = self._contact_values.get("profile", self.contact.profile)
        self._contact_values["profile"] = {**profile, name: value}

    def set_name(self, name: str) -> None:
        self._contact_values["name"] = name[:128]

    def set_language(self, language: str) -> None:
        self._contact_values["language"] = language

    def opt_out(self) -> None:
        self._contact_values |= {"opted_out": True, "opted_out_at": self.now}

    def record_consent(
        self, submission_id: str | None, flow_id: str, given: bool, notice_version: str | None
    ) -> None:
        self._consents.append(
            {
                "contact_id": self.contact.id,
                "submission_id": submission_id,
                "flow_id": flow_id,
                "given": given,
                "notice_version": notice_version,
                "at": self.now,
            }
        )

    def mark_processed(self, message_id: int) -> None:
        self._processed.append(message_id)

    def queue_outbound(self, channel: str, body: str, payload: dict[str, Any]) -> None:
        """A reply, queued in the same transaction; its id is in `outbound_ids` once written."""
        self._outbound.append(
            {
                "direction": "out",
                "channel": channel,
                "contact_id": self.contact.id,
                "provider_id": None,
                "status": "queued",
                "body": body,
                "payload": payload,
                "error": None,
                "attempts": 0,
                "created_at": self.now,
                "updated_at": self.now,
            }
        )


async def write_turns(
    sql: Statements, lane: Lane, turns: Sequence[Changes]
) -> Sequence[Changes | BaseException]:
    async def write(conn: AsyncConnection, batch: Sequence[Changes]) -> list[Changes]:
        return await _write(sql, conn, batch)

    return await _each_alone_on_failure(lane, turns, write)


async def _write(sql: Statements, conn: AsyncConnection, turns: Sequence[Changes]) -> list[Changes]:
    """Each kind of row in one statement, in the order their foreign keys need. A batch holds
    at most one turn per resident (each waits for its turn to be written before the next)."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for turn in turns:
        if turn._contact_values:
            row = {"b_id": turn.contact.id, **turn._contact_values}
            by_columns.setdefault(tuple(sorted(row)), []).append(row)
    for rows in by_columns.values():
        await conn.execute(sql.update_contact, rows)
    await _many(conn, insert(Submission), [s for t in turns for s in t._submissions])
    await _many(conn, sql.upsert_answer, [a for t in turns for a in t._answers.values()])
    await _many(conn, insert(Consent), [c for t in turns for c in t._consents])
    await _many(
        conn,
        sql.complete_submission,
        [{"b_id": s, "b_now": t.now} for t in turns for s in t._completed],
    )
    await _many(
        conn,
        sql.place_submission,
        [{"b_id": s, "b_territory": code} for t in turns for s, code in t._places.items()],
    )
    await _many(
        conn,
        sql.save_cursor,
        [
            {"b_id": s, "b_cursor": cursor, "b_now": t.now}
            for t in turns
            for s, cursor in t._cursors.items()
        ],
    )
    await _many(
        conn, sql.mark_processed, [{"b_id": m, "b_now": t.now} for t in turns for m in t._processed]
    )
    declined = [(s, t) for t in turns for s in t._declined]
    if declined:  # after mark_processed: the refusal's own message is blanked too
        await _many(conn, sql.drop_answers, [{"b_id": s} for s, _ in declined])
        await _many(
            conn, sql.redact_declined, [{"b_id": s, "b_contact": t.contact.id} for s, t in declined]
        )
        await _many(
            conn, sql.decline_submission, [{"b_id": s, "b_now": t.now} for s, t in declined]
        )
    outbound = [o for t in turns for o in t._outbound]
    ids = []
    if outbound:
        ids = list((await conn.execute(sql.insert_message, outbound)).scalars())
    for turn in turns:
        turn.outbound_ids, ids = ids[: len(turn._outbound)], ids[len(turn._outbound) :]
    return list(turns)


async def _many(conn: AsyncConnection, stmt: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(stmt, rows)


async def _each_alone_on_failure(
    lane: Lane,
    items: Sequence[T],
    write: Callable[[AsyncConnection, Sequence[T]], Awaitable[list[R]]],
) -> Sequence[R | BaseException]:
    try:
        async with lane.begin() as conn:
            return await write(conn, items)
    except Exception as exc:
        # Each again, alone, on a fresh connection: a dropped connection costs a retry, not a
        # message, and one bad item no longer holds back the rest. A database that is away
        # is said in one line (the callers wait it out); anything else with its traceback.
        away = is_unavailable(exc)
        log.warning(
            "a batch of %d writes failed (%s); writing each alone",
            len(items),
            type(exc).__name__,
            exc_info=not away,
        )
    results: list[R | BaseException] = []
    for item in items:
        try:
            async with lane.begin() as conn:
                results.extend(await write(conn, [item]))
        except Exception as exc:
            results.append(exc)
    return results
