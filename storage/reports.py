"""A neighbourhood report's life after it is made: its status changes (who, when, the note the
reporter is told), the reports staff list and look into, and what a change tells the reporter.

A report is a completed submission with a folio. Its status is its latest change's, and
"received" before any. Which changes are allowed:

- "received" is only where a report starts: it cannot be set.
- An open report (received, in_review, in_progress) may take any other status; it may take its
  own status again only with a note (news for the reporter: "the crew comes on Monday").
- A closed report (resolved, rejected, duplicate) stays closed, except to be reopened — to
  in_review or in_progress, with a note saying why. One closed status never turns into another:
  reopen it first.
- duplicate needs the folio of the report it duplicates: another report, and not one that is
  itself a duplicate (the message names the original). No other status takes that folio.

A change that is not allowed raises `ReportError` (`UnknownReport` for a folio that is no
report) and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, exists, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consulta.storage.liaisons import Liaisons
from consulta.storage.models import Answer, Contact, ReportChange, Submission, utcnow

__all__ = [
    "CATEGORY",
    "CLOSED",
    "OPEN",
    "STATUSES",
    "Change",
    "Notice",
    "Report",
    "ReportDetail",
    "ReportError",
    "Reports",
    "UnknownReport",
    "normal_folio",
]

STATUSES = ("received", "in_review", "in_progress", "resolved", "rejected", "duplicate")
OPEN = ("received", "in_review", "in_progress")
CLOSED = ("resolved", "rejected", "duplicate")
REOPEN = ("in_review", "in_progress")
CATEGORY = "category"  # the report flow's question whose answer is the report's category
MAX_NOTE = 1000


class ReportError(ValueError):
    """A change staff asked for is not allowed; the message says why, and nothing changed."""


class UnknownReport(ReportError):
    """No report has this folio."""


@dataclass(frozen=True)
class Change:
    """One change of a report's status."""

    status: str
    note: str | None
    duplicate_of: str | None
    by: str  # a staff member's name, or "system"
    at: datetime


@dataclass(frozen=True)
class Report:
    """A report as staff list it: no address, no name — the resident's pseudonym at most."""

    folio: str
    flow_id: str
    status: str
    category: str | None
    territory: str | None
    channel: str
    language: str | None
    liaison: bool  # made by a registered liaison
    contact: str  # the resident's pseudonymous id
    received_at: datetime  # when it was completed
    changed_at: datetime | None  # its latest change, None while "received"


@dataclass(frozen=True)
class ReportDetail:
    """A report with its answers and every change, oldest first."""

    report: Report
    answers: dict[str, Any]
    changes: list[Change]


@dataclass(frozen=True)
class Notice:
    """What a status change tells the reporter, and where: the caller sends it."""

    contact_id: int
    channel: str
    language: str
    folio: str
    status: str
    previous: str
    note: str | None
    duplicate_of: str | None
    at: datetime


def _utc(moment: datetime) -> datetime:
    """A time as read back (naive on SQLite, where it is stored as UTC): aware, in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def normal_folio(text: str) -> str:
    """A folio as staff or residents may type it (`#sucv34fj`) as it is kept (`SUCV34FJ`)."""
    return text.strip().lstrip("#").strip().upper()


def _latest(column: Any) -> Any:
    """The latest change's `column` for the submission of the enclosing query."""
    return (
        select(column)
        .where(ReportChange.submission_id == Submission.id)
        .order_by(ReportChange.id.desc())
        .limit(1)
        .correlate(Submission)
        .scalar_subquery()
    )


# A report's status: its latest change, or "received" (exports read it too).
REPORT_STATUS = func.coalesce(_latest(ReportChange.status), literal("received"))
_CATEGORY = (
    select(Answer.value)
    .where(Answer.submission_id == Submission.id, Answer.question == CATEGORY)
    .correlate(Submission)
    .scalar_subquery()
)
_IS_REPORT = (Submission.folio.is_not(None), Submission.status == "complete")
_COLUMNS = (
    Submission.folio,
    Submission.flow_id,
    REPORT_STATUS.label("report_status"),
    _CATEGORY.label("category"),
    Submission.territory,
    Submission.channel,
    Submission.language,
    Contact.pid,
    func.coalesce(Submission.completed_at, Submission.started_at).label("received_at"),
    _latest(ReportChange.at).label("changed_at"),
    Contact.channel.label("contact_channel"),
    Contact.address,
)


class Reports:
    """Reports as staff work them: listed, looked into, and moved through their statuses."""

    def __init__(self, engine: AsyncEngine, default_language: str = "es") -> None:
        self.engine = engine
        self.default_language = default_language
        self.liaisons = Liaisons(engine)

    async def _reports(self, query: Any) -> list[Report]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        tagged = await self.liaisons.addresses([(r.contact_channel, r.address) for r in rows])
        return [
            Report(
                folio=r.folio,
                flow_id=r.flow_id,
                status=r.report_status,
                category=r.category if isinstance(r.category, str) else None,
                territory=r.territory,
                channel=r.channel,
                language=r.language,
                liaison=(r.contact_channel, r.address) in tagged,
                contact=r.pid,
                received_at=_utc(r.received_at),
                changed_at=None if r.changed_at is None else _utc(r.changed_at),
            )
            for r in rows
        ]

    async def all(
        self,
        *,
        status: str | None = None,
        territory: str | None = None,
        category: str | None = None,
        since: datetime | None = None,
        contact_id: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Report]:
        """Reports, newest first, narrowed by each filter given. `since`: made on or after;
        `contact_id`: made by this resident."""
        where: list[ColumnElement[bool]] = [*_IS_REPORT]
        if contact_id is not None:
            where.append(Submission.contact_id == contact_id)
        if status is not None:
            if status not in STATUSES:
                raise ReportError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
            where.append(REPORT_STATUS == status)
        if territory is not None:
            where.append(Submission.territory == territory)
        if category is not None:
            # Answers are JSON; a choice is kept as its key, serialised the one way.
            where.append(
                exists().where(
                    Answer.submission_id == Submission.id,
                    Answer.question == CATEGORY,
                    cast(Answer.value, Text) == json.dumps(category),
                )
            )
        if since is not None:
            received = func.coalesce(Submission.completed_at, Submission.started_at)
            where.append(received >= _utc(since))
        query = (
            select(*_COLUMNS)
            .join(Contact, Contact.id == Submission.contact_id)
            .where(*where)
            .order_by(Submission.completed_at.desc(), Submission.id)
            .offset(offset)
            .limit(limit)
        )
        return await self._reports(query)

    async def get(self, folio: str) -> ReportDetail:
        """One report with its answers and its changes. Raises UnknownReport."""
        kept = normal_folio(folio)
        query = (
            select(*_COLUMNS)
            .join(Contact, Contact.id == Submission.contact_id)
            .where(Submission.folio == kept, *_IS_REPORT)
        )
        found = await self._reports(query)
        if not found:
            raise UnknownReport(f"no report {kept}")
        async with self.engine.connect() as conn:
            sid = (
                await conn.execute(select(Submission.id).where(Submission.folio == kept))
            ).scalar_one()
            answers = await conn.execute(
                select(Answer.question, Answer.value)
                .where(Answer.submission_id == sid)
                .order_by(Answer.answered_at, Answer.id)
            )
            changes = await conn.execute(
                select(
                    ReportChange.status,
                    ReportChange.note,
                    ReportChange.duplicate_of,
                    ReportChange.by,
                    ReportChange.at,
                )
                .where(ReportChange.submission_id == sid)
                .order_by(ReportChange.id)
            )
            return ReportDetail(
                report=found[0],
                answers={q: v for q, v in answers if q != "consent"},
                changes=[Change(s, n, d, b, _utc(a)) for s, n, d, b, a in changes],
            )

    async def set_status(
        self,
        folio: str,
        status: str,
        *,
        note: str | None = None,
        duplicate_of: str | None = None,
        by: str = "system",
    ) -> Notice:
        """Move a report to `status` (the module's docstring says which moves are allowed) and
        say what to tell its reporter. Raises ReportError, changing nothing."""
        kept = normal_folio(folio)
        note = (note or "").strip() or None
        original = normal_folio(duplicate_of) if duplicate_of else None
        if status not in STATUSES:
            raise ReportError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        if note is not None and (len(note) > MAX_NOTE or "\x00" in note):
            raise ReportError(f"a note is at most {MAX_NOTE} characters")
        async with self.engine.begin() as conn:
            report = await self._locked(conn, kept)
            current = report["status"]
            self._allowed(kept, current, status, note, original)
            if original is not None:
                await self._check_original(conn, kept, original)
            at = utcnow()
            await conn.execute(
                insert(ReportChange).values(
                    submission_id=report["id"],
                    status=status,
                    note=note,
                    duplicate_of=original,
                    by=by,
                    at=at,
                )
            )
        return Notice(
            contact_id=report["contact_id"],
            channel=report["channel"],
            language=report["language"] or self.default_language,
            folio=kept,
            status=status,
            previous=current,
            note=note,
            duplicate_of=original,
            at=at,
        )

    @staticmethod
    async def _locked(conn: AsyncConnection, folio: str) -> Mapping[str, Any]:
        """The report, its row locked (PostgreSQL) so that two staff members' changes are made
        one after the other, each checked against the other's result."""
        row = (
            (
                await conn.execute(
                    select(
                        Submission.id,
                        Submission.contact_id,
                        Submission.channel,
                        func.coalesce(Contact.language, Submission.language).label("language"),
                    )
                    .join(Contact, Contact.id == Submission.contact_id)
                    .where(Submission.folio == folio, *_IS_REPORT)
                    .with_for_update(of=Submission)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise UnknownReport(f"no report {folio}")
        latest = await conn.execute(
            select(ReportChange.status)
            .where(ReportChange.submission_id == row["id"])
            .order_by(ReportChange.id.desc())
            .limit(1)
        )
        return {**row, "status": latest.scalar_one_or_none() or "received"}

    @staticmethod
    def _allowed(
        folio: str, current: str, status: str, note: str | None, original: str | None
    ) -> None:
        if status == "received":
            raise ReportError("received is where a report starts; it cannot be set")
        if status == "duplicate" and original is None:
            raise ReportError("duplicate needs the folio of the report it duplicates")
        if status != "duplicate" and original is not None:
            raise ReportError("only a duplicate names the report it duplicates")
        if original == folio:
            raise ReportError(f"{folio} cannot duplicate itself")
        if current in CLOSED:
            if status in CLOSED:
                raise ReportError(
                    f"{folio} is {current}: reopen it first (in_review or in_progress, with a note)"
                )
            if note is None:
                raise ReportError(f"{folio} is {current}: reopening it needs a note saying why")
        elif status == current and note is None:
            raise ReportError(f"{folio} is already {current} (a note would make it news)")

    @staticmethod
    async def _check_original(conn: AsyncConnection, folio: str, original: str) -> None:
        found = await conn.execute(
            select(Submission.id, REPORT_STATUS, _latest(ReportChange.duplicate_of)).where(
                Submission.folio == original, *_IS_REPORT
            )
        )
        row = found.first()
        if row is None:
            raise ReportError(f"no report {original} for {folio} to duplicate")
        if row[1] == "duplicate":
            raise ReportError(f"{original} is itself a duplicate of {row[2]}: use {row[2]}")

    async def history(self, folios: Sequence[str]) -> dict[str, list[Change]]:
        """Every change of these reports, oldest first (for "my reports" in chat)."""
        kept = [normal_folio(f) for f in folios]
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    Submission.folio,
                    ReportChange.status,
                    ReportChange.note,
                    ReportChange.duplicate_of,
                    ReportChange.by,
                    ReportChange.at,
                )
                .join(ReportChange, ReportChange.submission_id == Submission.id)
                .where(Submission.folio.in_(kept))
                .order_by(ReportChange.id)
            )
            out: dict[str, list[Change]] = {f: [] for f in kept}
            for folio, s, n, d, b, a in rows:
                out[str(folio)].append(Change(s, n, d, b, _utc(a)))
        return out
