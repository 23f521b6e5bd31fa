"""The replies in the message log, as bot/outbound.py sends them: claimed by one sender, sent
once, their outcomes and delivery statuses, and those a dead process or a lost queue left."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from consulta.storage.models import MessageLog, utcnow

__all__ = ["OutboundRow", "Replies"]


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


def _outbound(row: Sequence[Any]) -> OutboundRow:
    message_id, contact_id, channel, status, attempts, payload = row
    return OutboundRow(message_id, contact_id, channel, status, attempts, dict(payload))


class Replies:
    """The outbound side of the message log (`Store.replies`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, message_id: int) -> OutboundRow | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_OUTBOUND_COLUMNS).where(
                        MessageLog.id == message_id, MessageLog.direction == "out"
                    )
                )
            ).one_or_none()
        return _outbound(row) if row else None

    async def unsent(self, contact_id: int) -> list[int]:
        """A resident's replies still queued or being sent, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(MessageLog.id)
                .where(
                    MessageLog.contact_id == contact_id,
                    MessageLog.direction == "out",
                    MessageLog.status.in_(("queued", "sending")),
                )
                .order_by(MessageLog.id)
            )
            return list(rows.scalars())

    async def claim(self, message_id: int, lease: float, by: str = "local") -> OutboundRow | None:
        """Take a queued reply to send it (status "sending", `by` this process, for `lease`
        seconds), so one process sends it, once, and only once every earlier reply to the same
        resident is sent or has failed: their replies never overtake each other, even when
        several turns' replies are sent side by side. A claim whose lease ran out can be taken
        again. None: it is sent, failed, another process is sending it, or it waits its turn."""
        now = utcnow()
        earlier = aliased(MessageLog)
        claim = (
            update(MessageLog)
            .where(
                MessageLog.id == message_id,
                MessageLog.direction == "out",
                or_(
                    MessageLog.status == "queued",
                    and_(MessageLog.status == "sending", MessageLog.claimed_until < now),
                ),
                ~exists().where(
                    earlier.contact_id == MessageLog.contact_id,
                    earlier.direction == "out",
                    earlier.status.in_(("queued", "sending")),
                    earlier.id < MessageLog.id,
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
        return _outbound(row) if row else None

    async def mark(
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
        async with self.engine.begin() as conn:
            result = await conn.execute(
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

    async def stale(self, older_than: timedelta) -> list[tuple[int, int]]:
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
