"""Broadcasts: a message or a survey's invitation staff send to an audience of residents (or of
Telegram neighbourhood groups) — the audience counted and materialised in one statement, its
recipients claimed by one sender each, and what became of each one, up to their answer."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Select,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consulta.storage.models import (
    Broadcast,
    BroadcastRecipient,
    Consent,
    Contact,
    Group,
    Submission,
    utcnow,
)

__all__ = [
    "CHANNELS",
    "KINDS",
    "LANGUAGES",
    "PROFILE_FIELDS",
    "STATES",
    "Audience",
    "BroadcastError",
    "BroadcastInfo",
    "Broadcasts",
    "Progress",
    "Recipient",
]

PROFILE_FIELDS = ("gender", "age_group", "sector", "municipality", "neighbourhood")
STATES = ("queued", "sending", "sent", "delivered", "read", "failed", "skipped")
CHANNELS = ("whatsapp", "sms", "telegram")
LANGUAGES = ("es", "en", "fr")
KINDS = ("flow", "message")

WINDOW = timedelta(hours=24)  # WhatsApp's customer service window after a resident writes
UNSUBSCRIBED = "21610"  # Twilio: the resident replied STOP to this sender

# A delivery callback's status → the recipient's state, and the states it may follow: a late
# "delivered" never undoes a "read", and a delivered message does not fail afterwards.
_DELIVERY = {
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "failed",
    "canceled": "failed",
}
_FOLLOWS = {
    "delivered": ("sent",),
    "read": ("sent", "delivered"),
    "failed": ("sent",),
}

BR = BroadcastRecipient


class BroadcastError(ValueError):
    """What staff asked for cannot be done; the message says why, and nothing was changed."""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _read(moment: datetime | None) -> datetime | None:
    """A time as read back (naive on SQLite, where it is stored as UTC): aware, in UTC."""
    return None if moment is None else _utc(moment)


def _strings(name: str, values: Any) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Collection):
        raise BroadcastError(f"{name} must be a list of strings, not {values!r}")
    if not all(isinstance(value, str) and value for value in values):
        raise BroadcastError(f"{name} must be a list of strings, not {list(values)!r}")
    return tuple(values)


@dataclass(frozen=True)
class Audience:
    """Who a broadcast goes to, as staff chose them: residents who consented to be contacted
    and did not opt out, narrowed by every filter given (a filter left empty narrows nothing).
    `where` repeats a field for "any of these values"; different fields must all match.
    `groups`: Telegram neighbourhood groups (by territory and language) instead of residents."""

    channels: tuple[str, ...] = ()  # whatsapp | sms | telegram
    territories: tuple[str, ...] = ()  # has a submission in any of them
    languages: tuple[str, ...] = ()  # their language, or the default one
    where: tuple[tuple[str, str], ...] = ()  # (profile field, value)
    answered: tuple[str, ...] = ()  # completed any of these flows
    not_answered: tuple[str, ...] = ()  # completed none of these flows
    groups: bool = False

    def __post_init__(self) -> None:
        for name in ("channels", "territories", "languages", "answered", "not_answered"):
            object.__setattr__(self, name, _strings(name, getattr(self, name)))
        pairs = []
        for pair in self.where:
            if isinstance(pair, str) or len(pair) != 2:
                raise BroadcastError(f"where takes (field, value) pairs, not {pair!r}")
            field, value = pair
            if field not in PROFILE_FIELDS:
                raise BroadcastError(
                    f"unknown profile field {field!r}: one of {', '.join(PROFILE_FIELDS)}"
                )
            pairs.append((field, str(value)))
        object.__setattr__(self, "where", tuple(pairs))
        for channel in self.channels:
            if channel not in CHANNELS:
                raise BroadcastError(f"unknown channel {channel!r}: one of {', '.join(CHANNELS)}")
        for language in self.languages:
            if language not in LANGUAGES:
                raise BroadcastError(
                    f"unknown language {language!r}: one of {', '.join(LANGUAGES)}"
                )
        if self.groups and (self.where or self.answered or self.not_answered):
            raise BroadcastError(
                "groups are chosen by territory and language only, "
                "not by profile or by the surveys residents answered"
            )

    def to_dict(self) -> dict[str, Any]:
        """As JSON: what `Broadcast.audience` keeps, and `from_dict` reads back."""
        return {
            "channels": list(self.channels),
            "territories": list(self.territories),
            "languages": list(self.languages),
            "where": [[field, value] for field, value in self.where],
            "answered": list(self.answered),
            "not_answered": list(self.not_answered),
            "groups": self.groups,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Audience:
        """From `to_dict`'s JSON. `where` may also be a mapping, field → value or values."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise BroadcastError(f"unknown audience filter {unknown[0]!r}")
        where = d.get("where") or ()
        if isinstance(where, Mapping):
            where = [
                (field, value)
                for field, values in where.items()
                for value in ([values] if isinstance(values, str) else values)
            ]
        return cls(
            channels=d.get("channels") or (),
            territories=d.get("territories") or (),
            languages=d.get("languages") or (),
            where=tuple(tuple(pair) for pair in where),
            answered=d.get("answered") or (),
            not_answered=d.get("not_answered") or (),
            groups=bool(d.get("groups", False)),
        )


@dataclass(frozen=True)
class BroadcastInfo:
    """One broadcast as staff see it. `recipients`: the audience's size when it was created,
    then how many recipients it got when sending started."""

    id: int
    kind: str  # flow | message
    flow_id: str | None
    texts: dict[str, str]
    audience: Audience
    template: str | None
    status: str  # scheduled | sending | paused | done | cancelled
    send_at: datetime
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    recipients: int


@dataclass(frozen=True)
class Progress:
    """A broadcast's counts, for `show`, the API and the dashboard's funnel."""

    by_state: dict[str, int]  # every one of STATES, 0 when none
    failed_by_reason: dict[str, int]
    skipped_by_reason: dict[str, int]
    answered: int  # residents who wrote to us after it reached them
    completed: int  # flow broadcasts: residents who then completed the survey
    sent_last_minute: int  # the caller computes the pace and an ETA from it


@dataclass(frozen=True)
class Recipient:
    """A claimed recipient, with what sending to it needs."""

    id: int
    broadcast_id: int
    contact_id: int | None
    group_id: int | None
    channel: str
    address: str
    language: str
    last_inbound_at: datetime | None  # whether WhatsApp's window is open, for residents
    kind: str
    flow_id: str | None
    texts: dict[str, str]
    template: str | None
    opted_out: bool = False  # since the broadcast started: they are skipped


_INFO_COLUMNS = (
    Broadcast.id,
    Broadcast.kind,
    Broadcast.flow_id,
    Broadcast.texts,
    Broadcast.audience,
    Broadcast.template,
    Broadcast.status,
    Broadcast.send_at,
    Broadcast.created_by,
    Broadcast.created_at,
    Broadcast.started_at,
    Broadcast.finished_at,
    Broadcast.recipients,
)


def _info(row: Any) -> BroadcastInfo:
    return BroadcastInfo(
        id=row.id,
        kind=row.kind,
        flow_id=row.flow_id,
        texts=dict(row.texts or {}),
        audience=Audience.from_dict(row.audience or {}),
        template=row.template,
        status=row.status,
        send_at=_utc(row.send_at),
        created_by=row.created_by,
        created_at=_utc(row.created_at),
        started_at=_read(row.started_at),
        finished_at=_read(row.finished_at),
        recipients=row.recipients,
    )


# Soonest-closing WhatsApp window first; residents without one after them.
_NEXT = (BR.window_closes_at.asc().nulls_last(), BR.id.asc())


class Broadcasts:
    """Broadcasts and their recipients, from staff's `create` to the last delivery callback.

    Sending is shared by any number of processes: `start_due` materialises a broadcast's
    recipients once, `claim` hands each recipient to one sender, and the sender reports back
    with `sent`, `failed`, `skipped` or `requeue`; `release` returns a dead sender's claims.
    """

    def __init__(self, engine: AsyncEngine, default_language: str = "es") -> None:
        if default_language not in LANGUAGES:
            raise BroadcastError(f"unknown language {default_language!r}")
        self.engine = engine
        self.default_language = default_language
        self._sqlite = engine.dialect.name == "sqlite"

    # the audience --------------------------------------------------------------------------

    def _window_closes(self, last_inbound_at: Any) -> ColumnElement[datetime]:
        if self._sqlite:
            # Stored as text, 'YYYY-MM-DD HH:MM:SS.ffffff': a day later, microseconds kept.
            later = func.datetime(last_inbound_at, "+24 hours").concat(
                func.substr(last_inbound_at, 20)
            )
            return type_coerce(later, DateTime(timezone=True))
        return last_inbound_at + WINDOW

    def _members(self, audience: Audience, now: datetime) -> Select[*tuple[Any, ...]]:
        """The audience, one row each: contact_id, group_id, channel, language and when their
        WhatsApp window closes (only while it is open: a closed one is no reason to hurry).
        What `counts`, `create` and `start_due` all read, so they always agree."""
        if audience.groups:
            language = func.coalesce(Group.language, self.default_language)
            query = select(
                cast(None, BigInteger).label("contact_id"),
                Group.id.label("group_id"),
                Group.channel.label("channel"),
                language.label("language"),
                cast(None, DateTime(timezone=True)).label("window_closes_at"),
            ).where(Group.active.is_(True), Group.channel == "telegram")
            if audience.territories:
                query = query.where(Group.territory.in_(audience.territories))
            if audience.languages:
                query = query.where(language.in_(audience.languages))
            return query

        language = func.coalesce(Contact.language, self.default_language)
        window = case(
            (
                and_(Contact.channel == "whatsapp", Contact.last_inbound_at > now - WINDOW),
                self._window_closes(Contact.last_inbound_at),
            ),
            else_=cast(None, DateTime(timezone=True)),
        )
        query = select(
            Contact.id.label("contact_id"),
            cast(None, BigInteger).label("group_id"),
            Contact.channel.label("channel"),
            language.label("language"),
            window.label("window_closes_at"),
        ).where(
            Contact.opted_out.is_(False),
            ~Contact.address.startswith("forgotten:"),
            exists().where(Consent.contact_id == Contact.id, Consent.given.is_(True)),
        )
        if audience.channels:
            query = query.where(Contact.channel.in_(audience.channels))
        if audience.languages:
            query = query.where(language.in_(audience.languages))
        if audience.territories:
            query = query.where(
                exists().where(
                    Submission.contact_id == Contact.id,
                    Submission.territory.in_(audience.territories),
                )
            )
        values: dict[str, list[str]] = {}
        for field, value in audience.where:
            values.setdefault(field, []).append(value)
        for field, wanted in values.items():
            query = query.where(Contact.profile[field].as_string().in_(wanted))
        if audience.answered:
            query = query.where(self._completed_any(audience.answered))
        if audience.not_answered:
            query = query.where(~self._completed_any(audience.not_answered))
        return query

    @staticmethod
    def _completed_any(flows: Sequence[str]) -> ColumnElement[bool]:
        return exists().where(
            Submission.contact_id == Contact.id,
            Submission.status == "complete",
            Submission.flow_id.in_(flows),
        )

    async def counts(self, audience: Audience) -> dict[tuple[str, str], int]:
        """How many the audience holds, by (channel, language): a dry run, nothing written."""
        members = self._members(audience, utcnow()).subquery()
        query = select(members.c.channel, members.c.language, func.count()).group_by(
            members.c.channel, members.c.language
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return {(channel, language): n for channel, language, n in rows}

    async def _count(self, conn: AsyncConnection, audience: Audience) -> int:
        members = self._members(audience, utcnow()).subquery()
        return int((await conn.execute(select(func.count()).select_from(members))).scalar_one())

    # broadcasts ----------------------------------------------------------------------------

    async def create(
        self,
        *,
        kind: str,
        flow_id: str | None,
        texts: Mapping[str, str],
        audience: Audience,
        template: str | None,
        send_at: datetime,
        created_by: str | None,
    ) -> BroadcastInfo:
        """A broadcast, scheduled for `send_at` (now or earlier: the next `start_due`)."""
        if kind not in KINDS:
            raise BroadcastError(f"unknown kind of broadcast {kind!r}: one of {', '.join(KINDS)}")
        if kind == "flow" and not flow_id:
            raise BroadcastError("a survey broadcast needs the survey's flow id")
        if kind == "message" and flow_id:
            raise BroadcastError("a message broadcast invites to no survey: no flow id")
        if kind == "message" and not any(texts.values()):
            raise BroadcastError("a message broadcast needs its text in at least one language")
        for language in texts:
            if language not in LANGUAGES:
                raise BroadcastError(
                    f"unknown language {language!r} in texts: one of {', '.join(LANGUAGES)}"
                )
        now = utcnow()
        async with self.engine.connect() as conn:
            size = await self._count(conn, audience)
        async with self.engine.begin() as conn:
            broadcast_id = (
                await conn.execute(
                    insert(Broadcast)
                    .values(
                        kind=kind,
                        flow_id=flow_id,
                        texts=dict(texts),
                        audience=audience.to_dict(),
                        template=template,
                        status="scheduled",
                        send_at=_utc(send_at),
                        created_by=created_by,
                        created_at=now,
                        recipients=size,
                    )
                    .returning(Broadcast.id)
                )
            ).scalar_one()
        return await self.get(broadcast_id)

    async def get(self, broadcast_id: int) -> BroadcastInfo:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(*_INFO_COLUMNS).where(Broadcast.id == broadcast_id))
            ).one_or_none()
        if row is None:
            raise BroadcastError(f"no broadcast {broadcast_id}")
        return _info(row)

    async def all(self) -> list[BroadcastInfo]:
        """Every broadcast, newest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(*_INFO_COLUMNS).order_by(Broadcast.id.desc()))
            return [_info(row) for row in rows]

    async def start_due(self, now: datetime) -> list[int]:
        """Start every scheduled broadcast whose time has come: it turns "sending" and gets
        its recipients, one row per member of its audience as it is now, in the transaction
        that turns it — so only one caller starts it, and a crash leaves it scheduled.
        Returns the ids started."""
        now = _utc(now)
        async with self.engine.connect() as conn:
            due = list(
                (
                    await conn.execute(
                        select(Broadcast.id)
                        .where(Broadcast.status == "scheduled", Broadcast.send_at <= now)
                        .order_by(Broadcast.send_at, Broadcast.id)
                    )
                ).scalars()
            )
        started = []
        for broadcast_id in due:
            async with self.engine.begin() as conn:
                # Written first: on PostgreSQL a second caller waits on this row and then finds
                # it no longer scheduled; SQLite lets one writer at a time in.
                turned = (
                    await conn.execute(
                        update(Broadcast)
                        .where(Broadcast.id == broadcast_id, Broadcast.status == "scheduled")
                        .values(status="sending", started_at=now)
                        .returning(Broadcast.audience)
                    )
                ).one_or_none()
                if turned is None:
                    continue
                members = self._members(Audience.from_dict(turned.audience), now).subquery()
                materialise = insert(BR).from_select(
                    [
                        BR.broadcast_id,
                        BR.contact_id,
                        BR.group_id,
                        BR.channel,
                        BR.language,
                        BR.window_closes_at,
                        BR.state,
                        BR.updated_at,
                    ],
                    select(
                        literal(broadcast_id, BigInteger),
                        members.c.contact_id,
                        members.c.group_id,
                        members.c.channel,
                        members.c.language,
                        members.c.window_closes_at,
                        literal("queued"),
                        literal(now, DateTime(timezone=True)),
                    ),
                )
                inserted = (await conn.execute(materialise)).rowcount
                await conn.execute(
                    update(Broadcast)
                    .where(Broadcast.id == broadcast_id)
                    .values(recipients=inserted)
                )
            started.append(broadcast_id)
        return started

    async def _refuse(self, conn: AsyncConnection, broadcast_id: int, why: str) -> BroadcastError:
        status = (
            await conn.execute(select(Broadcast.status).where(Broadcast.id == broadcast_id))
        ).scalar_one_or_none()
        if status is None:
            return BroadcastError(f"no broadcast {broadcast_id}")
        return BroadcastError(f"broadcast {broadcast_id} {why} (it is {status})")

    async def pause(self, broadcast_id: int) -> BroadcastInfo:
        """Stop handing out its recipients (those being sent still go)."""
        async with self.engine.begin() as conn:
            moved = await conn.execute(
                update(Broadcast)
                .where(
                    Broadcast.id == broadcast_id,
                    Broadcast.status.in_(("scheduled", "sending")),
                )
                .values(status="paused")
            )
            if not moved.rowcount:
                raise await self._refuse(conn, broadcast_id, "cannot be paused")
        return await self.get(broadcast_id)

    async def resume(self, broadcast_id: int) -> BroadcastInfo:
        """Back to sending, or to waiting for its time if it had not started."""
        async with self.engine.begin() as conn:
            moved = await conn.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id, Broadcast.status == "paused")
                .values(status=case((Broadcast.started_at.is_(None), "scheduled"), else_="sending"))
            )
            if not moved.rowcount:
                raise await self._refuse(conn, broadcast_id, "is not paused")
        return await self.get(broadcast_id)

    async def cancel(self, broadcast_id: int) -> BroadcastInfo:
        """For good: its recipients not yet sent to are skipped ("cancelled")."""
        now = utcnow()
        async with self.engine.begin() as conn:
            moved = await conn.execute(
                update(Broadcast)
                .where(
                    Broadcast.id == broadcast_id,
                    Broadcast.status.in_(("scheduled", "sending", "paused")),
                )
                .values(status="cancelled", finished_at=now)
            )
            if not moved.rowcount:
                raise await self._refuse(conn, broadcast_id, "cannot be cancelled")
            await conn.execute(
                update(BR)
                .where(BR.broadcast_id == broadcast_id, BR.state == "queued")
                .values(state="skipped", reason="cancelled", updated_at=now)
            )
        return await self.get(broadcast_id)

    async def finish(self) -> list[int]:
        """Sending broadcasts with nobody left to send to become "done". Returns their ids."""
        now = utcnow()
        pending = exists().where(
            BR.broadcast_id == Broadcast.id, BR.state.in_(("queued", "sending"))
        )
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                update(Broadcast)
                .where(Broadcast.status == "sending", Broadcast.started_at.is_not(None), ~pending)
                .values(status="done", finished_at=now)
                .returning(Broadcast.id)
            )
            return sorted(rows.scalars())

    # recipients ----------------------------------------------------------------------------

    async def claim(
        self, holder: str, limit: int, lease: float, channels: Collection[str] | None = None
    ) -> list[Recipient]:
        """Take up to `limit` recipients of sending broadcasts to send to, for `lease` seconds
        (a claim whose lease ran out is taken again): whose WhatsApp window closes soonest
        first, then in order. No two callers ever get the same recipient."""
        if limit <= 0:
            return []
        now = utcnow()
        pick = (
            select(BR.id)
            .join(Broadcast, Broadcast.id == BR.broadcast_id)
            .where(
                Broadcast.status == "sending",
                or_(BR.state == "queued", and_(BR.state == "sending", BR.claimed_until < now)),
            )
            .order_by(*_NEXT)
            .limit(limit)
            # PostgreSQL: rows another claimer holds are passed over, not waited for.
            .with_for_update(of=BR, skip_locked=True)
        )
        if channels is not None:
            pick = pick.where(BR.channel.in_(list(channels)))
        async with self.engine.begin() as conn:
            claimed = list(
                (
                    await conn.execute(
                        update(BR)
                        .where(BR.id.in_(pick.scalar_subquery()))
                        .values(
                            state="sending",
                            claimed_by=holder,
                            claimed_until=now + timedelta(seconds=lease),
                            updated_at=now,
                        )
                        .returning(BR.id)
                    )
                ).scalars()
            )
            if not claimed:
                return []
            rows = await conn.execute(
                select(
                    BR.id,
                    BR.broadcast_id,
                    BR.contact_id,
                    BR.group_id,
                    BR.channel,
                    func.coalesce(Contact.address, Group.address).label("address"),
                    BR.language,
                    Contact.last_inbound_at,
                    Broadcast.kind,
                    Broadcast.flow_id,
                    Broadcast.texts,
                    Broadcast.template,
                    func.coalesce(Contact.opted_out, False).label("opted_out"),
                )
                .join(Broadcast, Broadcast.id == BR.broadcast_id)
                .outerjoin(Contact, Contact.id == BR.contact_id)
                .outerjoin(Group, Group.id == BR.group_id)
                .where(BR.id.in_(claimed))
                .order_by(*_NEXT)
            )
            return [
                Recipient(
                    id=row.id,
                    broadcast_id=row.broadcast_id,
                    contact_id=row.contact_id,
                    group_id=row.group_id,
                    channel=row.channel,
                    address=row.address,
                    language=row.language,
                    last_inbound_at=_read(row.last_inbound_at),
                    kind=row.kind,
                    flow_id=row.flow_id,
                    texts=dict(row.texts or {}),
                    template=row.template,
                    opted_out=bool(row.opted_out),
                )
                for row in rows
            ]

    async def release(self, holders: Collection[str]) -> int:
        """Put back the recipients processes that died were sending to (skipped, "cancelled",
        when their broadcast was cancelled meanwhile). Returns how many."""
        if not holders:
            return 0
        now = utcnow()
        held = and_(BR.state == "sending", BR.claimed_by.in_(list(holders)))
        cancelled = select(Broadcast.id).where(Broadcast.status == "cancelled")
        async with self.engine.begin() as conn:
            await conn.execute(
                update(BR)
                .where(held, BR.broadcast_id.in_(cancelled.scalar_subquery()))
                .values(state="skipped", reason="cancelled", claimed_by=None, updated_at=now)
            )
            result = await conn.execute(
                update(BR)
                .where(held)
                .values(state="queued", claimed_by=None, claimed_until=None, updated_at=now)
            )
            return int(result.rowcount)

    async def holders(self) -> set[str]:
        """The processes holding claims on recipients being sent to."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(BR.claimed_by).where(BR.state == "sending").distinct())
            return {holder for holder in rows.scalars() if holder}

    async def sent(self, outcomes: Sequence[tuple[int, str]]) -> None:
        """These (recipient id, provider's message id) were sent. A survey's invitation also
        becomes the resident's: their next message answers its first question."""
        if not outcomes:
            return
        now = utcnow()
        ids = [recipient_id for recipient_id, _ in outcomes]
        async with self.engine.begin() as conn:
            await conn.execute(
                update(BR)
                .where(
                    BR.id == bindparam("recipient"),
                    # not `in_`: its expanding parameter cannot be executed many times
                    or_(BR.state == "queued", BR.state == "sending"),
                )
                .values(
                    state="sent",
                    provider_id=bindparam("provider"),
                    sent_at=now,
                    claimed_by=None,
                    claimed_until=None,
                    updated_at=now,
                ),
                [{"recipient": r, "provider": p} for r, p in outcomes],
            )
            invited = (
                select(BR.contact_id)
                .join(Broadcast, Broadcast.id == BR.broadcast_id)
                .where(BR.id.in_(ids), BR.state == "sent", Broadcast.kind == "flow")
            )
            flow = (
                select(Broadcast.flow_id)
                .join(BR, BR.broadcast_id == Broadcast.id)
                .where(BR.contact_id == Contact.id, BR.id.in_(ids), Broadcast.kind == "flow")
                .order_by(BR.id.desc())
                .limit(1)
                .scalar_subquery()
            )
            await conn.execute(
                update(Contact)
                .where(Contact.id.in_(invited))
                .values(invited_flow=flow, invited_at=now)
            )

    async def failed(self, recipient_id: int, reason: str) -> None:
        await self._end([recipient_id], "failed", reason)

    async def skipped(self, recipient_ids: Sequence[int], reason: str) -> None:
        """Not sent to, for `reason` (outside the window, opted out meanwhile, …)."""
        await self._end(recipient_ids, "skipped", reason)

    async def _end(self, recipient_ids: Sequence[int], state: str, reason: str) -> None:
        if not recipient_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(BR)
                .where(BR.id.in_(list(recipient_ids)))
                .values(
                    state=state,
                    reason=reason[:255],
                    claimed_by=None,
                    claimed_until=None,
                    updated_at=utcnow(),
                )
            )

    async def requeue(self, recipient_id: int) -> None:
        """Not sent yet, to be tried again later (by whichever sender claims it)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(BR)
                .where(BR.id == recipient_id, BR.state == "sending")
                .values(state="queued", claimed_by=None, claimed_until=None, updated_at=utcnow())
            )

    async def record_status(
        self, channel: str, provider_id: str, status: str, error: str | None
    ) -> int | None:
        """A delivery callback for the message sent to a recipient. States only move forward
        (sent → delivered → read; a sent message may fail, with the error code as reason).
        Twilio's 21610 means the resident unsubscribed (replied STOP): they are opted out.
        Returns the recipient's contact id, or None when no recipient has that message."""
        now = utcnow()
        async with self.engine.begin() as conn:
            found = (
                await conn.execute(
                    select(BR.id, BR.contact_id)
                    .where(BR.channel == channel, BR.provider_id == provider_id)
                    .limit(1)
                )
            ).one_or_none()
            if found is None:
                return None
            state = _DELIVERY.get(status.lower())
            if state is not None:
                values: dict[str, Any] = {"state": state, "updated_at": now}
                if state == "failed":
                    values["reason"] = (error or status.lower())[:255]
                await conn.execute(
                    update(BR)
                    .where(BR.id == found.id, BR.state.in_(_FOLLOWS[state]))
                    .values(values)
                )
            if error == UNSUBSCRIBED and found.contact_id is not None:
                await conn.execute(
                    update(Contact)
                    .where(Contact.id == found.contact_id, Contact.opted_out.is_(False))
                    .values(opted_out=True, opted_out_at=now)
                )
            return found.contact_id

    async def progress(self, broadcast_id: int, now: datetime) -> Progress:
        """Where a broadcast stands: its recipients by state (and why some failed or were
        skipped), how many then wrote to us or completed its survey, and the last minute's
        sends."""
        info = await self.get(broadcast_id)
        now = _utc(now)
        by_state = dict.fromkeys(STATES, 0)
        failed: dict[str, int] = {}
        skipped: dict[str, int] = {}

        def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        reached = BR.sent_at.is_not(None)
        completed: ColumnElement[bool] = false()
        if info.kind == "flow" and info.flow_id:
            completed = and_(
                reached,
                exists().where(
                    Submission.contact_id == BR.contact_id,
                    Submission.flow_id == info.flow_id,
                    Submission.status == "complete",
                    Submission.started_at >= BR.sent_at,
                ),
            )
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(BR.state, BR.reason, func.count())
                .where(BR.broadcast_id == broadcast_id)
                .group_by(BR.state, BR.reason)
            )
            for state, reason, n in rows:
                by_state[state] = by_state.get(state, 0) + n
                if state in ("failed", "skipped"):
                    reasons = failed if state == "failed" else skipped
                    key = reason or "unknown"
                    reasons[key] = reasons.get(key, 0) + n
            answered, done, recent = (
                await conn.execute(
                    select(
                        count(and_(reached, Contact.last_inbound_at > BR.sent_at)),
                        count(completed),
                        count(BR.sent_at >= now - timedelta(seconds=60)),
                    )
                    .select_from(BR)
                    .outerjoin(Contact, Contact.id == BR.contact_id)
                    .where(BR.broadcast_id == broadcast_id)
                )
            ).one()
        return Progress(
            by_state=by_state,
            failed_by_reason=failed,
            skipped_by_reason=skipped,
            answered=int(answered),
            completed=int(done),
            sent_last_minute=int(recent),
        )
