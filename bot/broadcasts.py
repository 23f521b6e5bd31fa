"""Broadcasts: staff's messages and survey invitations, sent to an audience once, in each
recipient's language, paced to each provider's cap — and outside quiet hours.

Staff create a broadcast (`create`, checked before anything is written); when it is due, one
process materialises its recipients, and every sending process (`serve`, each `worker`) claims
them in batches, WhatsApp recipients whose 24-hour window closes soonest first. A send the
provider accepted is noted in Redis before it is recorded in the database, so a process killed
in between leaves the note for the next claimant, which records it instead of sending again.
Pacing is the channels' (one cap per sender, shared by every process through Redis); broadcast
sends are marked `bulk`, so replies to residents mid-survey go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from consulta.adapters.message import Outbound, SendError
from consulta.bot.config import Settings
from consulta.bot.inbox import to_outbound
from consulta.bot.outage import Outage
from consulta.bot.outbound import Sender
from consulta.flows.engine import Engine, Prompt
from consulta.flows.i18n import LANGUAGES
from consulta.storage import keys
from consulta.storage.broadcasts import (
    Audience,
    BroadcastError,
    BroadcastInfo,
    Broadcasts,
    Progress,
    Recipient,
)
from consulta.storage.errors import is_unavailable
from consulta.storage.presence import Presence, dead_here
from consulta.storage.records import ContactInfo
from consulta.storage.store import Store

__all__ = [
    "BroadcastError",
    "Broadcaster",
    "Plan",
    "create",
    "eta_seconds",
    "funnel",
    "plan",
    "rate_of",
]

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)  # WhatsApp's customer-service window
BATCH = 100  # recipients claimed at once by one process
LEASE = 120.0  # seconds a claim holds before another process may take the recipient over
CONCURRENCY = 32  # sends in flight at once in one process (the pacing decides the rate)
IDLE = 1.0  # seconds between looks when there is nothing to send
HOUSEKEEPING = 3.0  # seconds between looks for due broadcasts, finished ones, dead claimants
NOTE_TTL = 3600  # seconds the "provider accepted it" note outlives the send
TELEGRAM_RATE = 30.0  # Telegram's cap for one bot, every chat together


# --- creating one: everything is checked before anything is written --------------------------


@dataclass(frozen=True)
class Plan:
    """What `create` would do: its recipients by channel and language, and how long sending
    them takes at the providers' caps."""

    counts: dict[tuple[str, str], int]
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def rate_of(settings: Settings, channel: str) -> float:
    """The send cap of a channel's sender, per second."""
    if channel == "whatsapp":
        return settings.twilio.whatsapp_rate
    if channel == "sms":
        return settings.twilio.sms_rate
    if channel == "telegram":
        return TELEGRAM_RATE
    return TELEGRAM_RATE  # the simulator and the terminal have no cap worth waiting for


def _seconds(settings: Settings, counts: Mapping[tuple[str, str], int]) -> float:
    """Channels send side by side: the slowest one sets the time."""
    by_channel: dict[str, int] = {}
    for (channel, _lang), n in counts.items():
        by_channel[channel] = by_channel.get(channel, 0) + n
    return max((n / rate_of(settings, c) for c, n in by_channel.items()), default=0.0)


def _check(
    settings: Settings,
    engine: Engine,
    *,
    flow_id: str | None,
    texts: Mapping[str, str],
    template: str | None,
    send_at: datetime | None,
    now: datetime,
) -> None:
    if (flow_id is None) == (not texts):
        raise BroadcastError("give either a survey (--flow) or a message's texts, not both")
    if flow_id is not None and flow_id not in engine.flows:
        known = ", ".join(sorted(engine.flows)) or "none"
        raise BroadcastError(f"no flow {flow_id!r} (flows: {known})")
    unknown = sorted(set(texts) - set(LANGUAGES))
    if unknown:
        raise BroadcastError(f"texts in unknown languages: {', '.join(unknown)}")
    if template is not None and template not in settings.twilio.templates:
        configured = ", ".join(sorted(settings.twilio.templates)) or "none configured"
        raise BroadcastError(
            f"no WhatsApp template {template!r} in TWILIO_TEMPLATES ({configured})"
        )
    if send_at is not None and send_at < now - timedelta(minutes=1):
        raise BroadcastError(f"--at {send_at.isoformat(timespec='minutes')} is in the past")


async def plan(
    broadcasts: Broadcasts,
    settings: Settings,
    engine: Engine,
    audience: Audience,
    *,
    flow_id: str | None = None,
    texts: Mapping[str, str] | None = None,
    template: str | None = None,
    send_at: datetime | None = None,
    now: datetime | None = None,
) -> Plan:
    """Check a broadcast and count its audience, writing nothing (`--dry-run`). Raises
    `BroadcastError` on an unknown flow, a template that isn't configured, a time in the past,
    or a message missing a language its audience needs."""
    texts = {k: v for k, v in (texts or {}).items() if v and v.strip()}
    now = now or datetime.now(UTC)
    _check(
        settings, engine, flow_id=flow_id, texts=texts, template=template, send_at=send_at, now=now
    )
    counts = await broadcasts.counts(audience)
    if texts:
        needed = sorted({lang for (_channel, lang), n in counts.items() if n})
        missing = [lang for lang in needed if lang not in texts]
        if missing:
            raise BroadcastError(
                f"the message has no text in {', '.join(missing)}, which part of the audience "
                f"speaks (give --text-{missing[0]})"
            )
    return Plan(dict(counts), _seconds(settings, counts))


async def create(
    broadcasts: Broadcasts,
    settings: Settings,
    engine: Engine,
    audience: Audience,
    *,
    flow_id: str | None = None,
    texts: Mapping[str, str] | None = None,
    template: str | None = None,
    send_at: datetime | None = None,
    created_by: str | None = None,
) -> BroadcastInfo:
    """Check (as `plan`) and create a broadcast; it starts at `send_at` (now by default)."""
    now = datetime.now(UTC)
    await plan(
        broadcasts,
        settings,
        engine,
        audience,
        flow_id=flow_id,
        texts=texts,
        template=template,
        send_at=send_at,
        now=now,
    )
    return await broadcasts.create(
        kind="flow" if flow_id else "message",
        flow_id=flow_id,
        texts={k: v.strip() for k, v in (texts or {}).items() if v and v.strip()},
        audience=audience,
        template=template,
        send_at=send_at or now,
        created_by=created_by,
    )


def funnel(progress: Progress, *, survey: bool) -> dict[str, int]:
    """How far recipients got, each stage counting those who went further: sent → delivered →
    read → answered (→ completed the survey)."""
    by = progress.by_state
    stages = {
        "sent": by["sent"] + by["delivered"] + by["read"],
        "delivered": by["delivered"] + by["read"],
        "read": by["read"],
        "answered": progress.answered,
    }
    if survey:
        stages["completed"] = progress.completed
    return stages


def eta_seconds(progress: Progress, settings: Settings, channels: Collection[str]) -> float:
    """Time left at the pace of the last minute (or, before there is one, at the caps)."""
    left = progress.by_state.get("queued", 0) + progress.by_state.get("sending", 0)
    if not left:
        return 0.0
    pace = progress.sent_last_minute / 60.0
    if pace <= 0:
        pace = max((rate_of(settings, c) for c in channels), default=1.0)
    return left / pace


# --- sending ---------------------------------------------------------------------------------


class SentNotes:
    """Notes on sends, in Redis (shared by every process), else in this process: "sending to
    recipient N began at T", then "the provider accepted N's message as P"."""

    def __init__(self, client: aioredis.Redis | None) -> None:
        self.redis = client
        self._here: dict[int, str] = {}
        self._began: dict[int, float] = {}

    async def begin(self, recipient_id: int) -> None:
        now = time.time()
        if self.redis is None:
            self._began[recipient_id] = now
            return
        await self.redis.set(f"{keys.BROADCAST_SENDING}{recipient_id}", repr(now), ex=NOTE_TTL)

    async def begun(self, recipient_ids: Sequence[int]) -> dict[int, float]:
        """When sending to each of these began, for those whose sending began before."""
        if not recipient_ids:
            return {}
        if self.redis is None:
            return {i: self._began[i] for i in recipient_ids if i in self._began}
        found = await self.redis.mget([f"{keys.BROADCAST_SENDING}{i}" for i in recipient_ids])
        return {i: float(t) for i, t in zip(recipient_ids, found, strict=True) if t}

    async def put(self, recipient_id: int, provider_id: str) -> None:
        if self.redis is None:
            self._here[recipient_id] = provider_id
            return
        await self.redis.set(f"{keys.BROADCAST_SENT}{recipient_id}", provider_id, ex=NOTE_TTL)

    async def get_many(self, recipient_ids: Sequence[int]) -> dict[int, str]:
        if not recipient_ids:
            return {}
        if self.redis is None:
            return {i: self._here[i] for i in recipient_ids if i in self._here}
        found = await self.redis.mget([f"{keys.BROADCAST_SENT}{i}" for i in recipient_ids])
        # The client decodes replies (storage.state.redis_client): strings, or None.
        return {i: str(p) for i, p in zip(recipient_ids, found, strict=True) if p}


class Broadcaster:
    """One process's share of sending broadcasts (`run` until stopped)."""

    def __init__(
        self,
        broadcasts: Broadcasts,
        store: Store,
        engine: Engine,
        settings: Settings,
        senders: Mapping[str, Sender],
        *,
        holder: str,
        presence: Presence | None = None,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.broadcasts, self.store, self.engine = broadcasts, store, engine
        self.settings, self.senders = settings, senders
        self.holder, self.presence = holder, presence
        self.notes = SentNotes(redis)
        self.outage = Outage("sending broadcasts")
        self._invitations: dict[tuple[str, str], Prompt] = {}
        self._last_housekeeping = 0.0

    # the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = await self.step()
                self.outage.over()
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("sending broadcasts failed")
                await self.outage.pause(exc, stop)
                continue
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), IDLE)

    def quiet(self, now: datetime) -> bool:
        hours = self.settings.broadcast_quiet_hours
        return hours is not None and hours.covers(now.astimezone(self.settings.timezone).time())

    async def step(self, now: datetime | None = None) -> bool:
        """Start what is due, send one batch; True when there may be more to send at once."""
        now = now or datetime.now(UTC)
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_housekeeping >= HOUSEKEEPING:
            self._last_housekeeping = loop.time()
            await self.housekeeping(now)
        if self.quiet(now):
            return False  # sending pauses; it resumes when the quiet hours end
        batch = await self.broadcasts.claim(self.holder, BATCH, LEASE, self.senders.keys())
        if not batch:
            return False
        await self.send(batch, now)
        return True

    async def housekeeping(self, now: datetime) -> None:
        """Start due broadcasts, close finished ones, take back dead processes' claims."""
        for started in await self.broadcasts.start_due(now):
            log.info("broadcast %s started", started)
        for done in await self.broadcasts.finish():
            log.info("broadcast %s done", done)
        others = await self.broadcasts.holders() - {self.holder}
        if not others:
            return
        if self.presence is not None:
            dead = others - await self.presence.alive(others)
        else:
            dead = dead_here(others)
        if dead and (released := await self.broadcasts.release(sorted(dead))):
            log.info("took back %s broadcast recipients from processes that died", released)

    # one batch ---------------------------------------------------------------------------

    async def send(self, batch: Sequence[Recipient], now: datetime) -> None:
        # Sent by a process that died before recording it: recorded now, never sent again.
        noted = await self.notes.get_many([r.id for r in batch])
        if noted:
            await self.broadcasts.sent(list(noted.items()))
        left = [r for r in batch if r.id not in noted]
        opted_out = [r.id for r in left if r.opted_out]  # since the broadcast started
        if opted_out:
            await self.broadcasts.skipped(opted_out, "opted out")
        outside = [r.id for r in left if not r.opted_out and self._outside_window(r, now)]
        if outside:
            await self.broadcasts.skipped(outside, "outside window")
        todo = [r for r in left if not r.opted_out and r.id not in set(outside)]
        outcomes: list[tuple[int, str]] = []
        # Begun by a process that died before it heard the provider's answer: the provider is
        # asked whether it has the message; only if it has not is it sent (again).
        begun = await self.notes.begun([r.id for r in todo])
        for recipient in [r for r in todo if r.id in begun]:
            found = await self._find(recipient, begun[recipient.id])
            if found is not None:
                outcomes.append((recipient.id, found))
        todo = [r for r in todo if r.id not in {i for i, _ in outcomes}]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(recipient: Recipient) -> None:
            async with gate:
                provider_id = await self._send_one(recipient)
            if provider_id is not None:
                outcomes.append((recipient.id, provider_id))

        try:
            await asyncio.gather(*(one(r) for r in todo))
        finally:
            if outcomes:  # one statement for the batch; the notes cover a death before it
                await self.broadcasts.sent(outcomes)

    def _outside_window(self, recipient: Recipient, now: datetime) -> bool:
        """A WhatsApp resident whose window is closed, and no template to reach them with."""
        if recipient.channel != "whatsapp" or recipient.template:
            return False
        last = recipient.last_inbound_at
        if last is None:
            return True
        last = last if last.tzinfo else last.replace(tzinfo=UTC)
        return now - last >= WINDOW

    async def _send_one(self, recipient: Recipient) -> str | None:
        """Send to one recipient; the provider's id, or None when it failed or must wait."""
        sender = self.senders.get(recipient.channel)
        if sender is None:
            await self.broadcasts.requeue(recipient.id)
            return None
        try:
            await self.notes.begin(recipient.id)
            sent = await sender.send(self._message(recipient))
        except SendError as error:
            await self._failed(recipient, error)
            return None
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("broadcast %s: a send failed", recipient.broadcast_id)
            await self.broadcasts.requeue(recipient.id)
            return None
        provider_id = sent.provider_id or f"local-{recipient.id}"
        await self.notes.put(recipient.id, provider_id)
        return provider_id

    async def _find(self, recipient: Recipient, began: float) -> str | None:
        """The provider's id for a message whose send began at `began` in a process that died,
        if the provider has it (channels that cannot tell: None, and it is sent again)."""
        find = getattr(self.senders.get(recipient.channel), "find_sent", None)
        if find is None:
            return None
        try:
            found: str | None = await find(self._message(recipient), began)
        except SendError:
            return None  # the provider cannot say now: sending again is the safer side
        if found is not None:
            log.info("broadcast %s: a send begun by a dead process arrived", recipient.broadcast_id)
        return found

    async def _failed(self, recipient: Recipient, error: SendError) -> None:
        if error.opted_out:
            await self.broadcasts.failed(recipient.id, error.code or "opted out")
            if recipient.contact_id is not None:
                await self.store.set_opted_out(recipient.contact_id)
        elif error.code == "window":
            await self.broadcasts.skipped([recipient.id], "outside window")
        elif error.permanent:
            await self.broadcasts.failed(recipient.id, error.code or "refused")
        else:
            if error.retry_after:
                await asyncio.sleep(min(error.retry_after, 30.0))
            await self.broadcasts.requeue(recipient.id)

    def _message(self, recipient: Recipient) -> Outbound:
        lang = recipient.language
        if recipient.kind == "flow" and recipient.flow_id:
            prompt = self._invitation(recipient.flow_id, lang)
        else:
            texts = recipient.texts
            prompt = Prompt(texts.get(lang) or texts.get(self.settings.default_language) or "")
        contact = ContactInfo(
            id=recipient.contact_id or 0,
            pid="",
            channel=recipient.channel,
            address=recipient.address,
            language=lang,
            profile={},
            opted_out=False,
            name=None,
            last_inbound_at=recipient.last_inbound_at,
        )
        message = to_outbound(contact, prompt, lang)
        return replace(message, template=recipient.template, bulk=True)

    def _invitation(self, flow_id: str, lang: str) -> Prompt:
        """A survey's opening messages and first question, as one message."""
        key = (flow_id, lang)
        if key not in self._invitations:
            prompts = self.engine.invitation(self.engine.flows[flow_id], lang)
            last = prompts[-1] if prompts else Prompt("")
            text = "\n\n".join(p.text for p in prompts)
            self._invitations[key] = replace(last, text=text)
        return self._invitations[key]
