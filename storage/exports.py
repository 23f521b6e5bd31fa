"""A flow's submissions with their answers, as exports read them: filtered, counted, and
streamed from the database in batches — for a report flow, with each report's status and
whether a registered liaison made it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, select

from consulta.storage.liaisons import Liaisons
from consulta.storage.models import Answer, Contact, Submission
from consulta.storage.reports import REPORT_STATUS
from consulta.storage.store import Store

__all__ = ["ExportRow", "count_submissions", "stream_submissions"]


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
    _: KW_ONLY
    answers: dict[str, tuple[Any, str | None, datetime]]  # question → (value, raw, when)
    address: str | None = None  # phone number or chat id: only with contacts=True
    name: str | None = None  # profile name: only with contacts=True
    # Only with reports=True: the report's status (None while the submission is no report:
    # not complete), and whether a registered liaison made it.
    report_status: str | None = None
    liaison: bool | None = None


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
    reports: bool = False,
    batch: int = 1000,
    offset: int = 0,
    limit: int | None = None,
) -> AsyncIterator[ExportRow]:
    """Submissions of a flow with their answers, oldest first, `batch` at a time; with
    `contacts`, each with the resident's address and name too (for admins only); with
    `reports`, each with its report status and liaison flag (the address is read to recognise
    a liaison, as `Reports` does, and left out of the row)."""
    details = (Contact.address, Contact.name) if contacts else ()
    # The status is the same correlated subquery `Reports` lists by; liaisons are looked up
    # once per batch, by the contacts' channel and address.
    report = (
        (
            REPORT_STATUS.label("report_status"),
            Contact.channel.label("contact_channel"),
            Contact.address.label("contact_address"),
        )
        if reports
        else ()
    )
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
            *report,
            *details,
        )
        .join(Contact, Contact.id == Submission.contact_id)
        .where(*_export_filters(flow_id, since, until, territory, status, channels_excluded))
        .order_by(Submission.started_at, Submission.id)
    )
    if offset or limit is not None:
        query = query.offset(offset).limit(limit)
    details_at = len(query.selected_columns) - len(details)  # the contact details come last
    fixed = details_at - len(report)  # the report's columns come before them
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
            # A row holds ExportRow's positional fields in order (more columns than SQLAlchemy
            # types), then the report's columns, then the contact details, each when asked for.
            batch_rows = cast("Sequence[Any]", rows)
            if not (contacts or reports):  # the usual export: no slicing per row
                for r in batch_rows:
                    yield ExportRow(*r, answers=answers.get(r[0], {}))
                continue
            liaisons: set[tuple[str, str]] = set()
            if reports:
                liaisons = await Liaisons(store.engine).addresses(
                    [(r.contact_channel, r.contact_address) for r in batch_rows]
                )
            for r in batch_rows:
                extra: dict[str, Any] = {}
                if reports:
                    made = r.status == "complete" and r.folio is not None  # as Reports has it
                    extra["report_status"] = r.report_status if made else None
                    extra["liaison"] = (r.contact_channel, r.contact_address) in liaisons
                if contacts:
                    extra["address"], extra["name"] = r[details_at], r[details_at + 1]
                yield ExportRow(*r[:fixed], answers=answers.get(r[0], {}), **extra)
