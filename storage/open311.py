"""The SQL behind Open311 (bot/open311.py): a staff-entered service request written as a completed
report, and the answers an Open311 request shows, read for many reports at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from consulta.storage.models import Answer, Contact, Submission, utcnow

__all__ = ["FOLIO_TRIES", "NewReport", "Open311Store"]

FOLIO_TRIES = 5  # a folio already taken (one in 32⁸) is drawn again


@dataclass(frozen=True)
class NewReport:
    """A report to write as if its flow had been completed: who entered it (a contact of the
    `channel`, by its pseudonymous id) and its answers, by question."""

    channel: str
    address: str  # "open311:<staff name>": never a resident's
    pid: str
    flow_id: str
    flow_version: int
    language: str
    territory: str | None
    answers: Mapping[str, tuple[str, Any]]  # question → (state, value)


class Open311Store:
    """Reports entered through Open311, and the answers Open311 shows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def create(self, report: NewReport, new_id: str, folios: Sequence[str]) -> str:
        """Write the report, complete, with the first of `folios` not yet taken; its folio."""
        for folio in folios:
            try:
                await self._write(report, new_id, folio)
            except IntegrityError:
                continue  # the folio was taken; the transaction left nothing behind
            return folio
        raise RuntimeError("no free folio among those drawn")

    async def _write(self, report: NewReport, new_id: str, folio: str) -> None:
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                self._insert(Contact)
                .values(
                    pid=report.pid,
                    channel=report.channel,
                    address=report.address,
                    language=report.language,
                    profile={},
                    extra={},
                    opted_out=False,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["channel", "address"])
            )
            contact_id = (
                await conn.execute(
                    select(Contact.id).where(
                        Contact.channel == report.channel, Contact.address == report.address
                    )
                )
            ).scalar_one()
            await conn.execute(
                insert(Submission).values(
                    id=new_id,
                    contact_id=contact_id,
                    flow_id=report.flow_id,
                    flow_version=report.flow_version,
                    status="complete",
                    language=report.language,
                    channel=report.channel,
                    territory=report.territory,
                    folio=folio,
                    cursor={},
                    started_at=now,
                    updated_at=now,
                    completed_at=now,
                )
            )
            if report.answers:
                await conn.execute(
                    insert(Answer),
                    [
                        {
                            "submission_id": new_id,
                            "question": question,
                            "state": state,
                            "raw_text": None,
                            "value": value,
                            "answered_at": now,
                        }
                        for question, (state, value) in report.answers.items()
                    ],
                )

    async def answers(
        self, folios: Sequence[str], questions: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The answers to `questions` of each report, by folio (one query for them all)."""
        out: dict[str, dict[str, Any]] = {f: {} for f in folios}
        if not folios:
            return out
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(Submission.folio, Answer.question, Answer.value)
                .join(Answer, Answer.submission_id == Submission.id)
                .where(Submission.folio.in_(list(folios)), Answer.question.in_(list(questions)))
            )
            for folio, question, value in rows:
                out[str(folio)][question] = value
        return out
