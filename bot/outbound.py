"""The outbound queue: every reply leaves through it, paced and retried in one place, and sent
once.

A queue item is one turn's replies (their message-log ids, in order), so a resident's messages
never overtake each other. In-process by default; a Redis list when several processes share
the work (`consulta worker`), with a "working" list per process, named after it, so what a
dead process was sending is put back by whoever sees it has died.

The queue only says what to look at: the message log decides. A reply is claimed in the
database before it is sent (one sender, once), and once the provider accepts it that outcome
is noted in Redis before it is recorded in the database: when recording fails, it is the
recording that is retried, never the send — and a process that dies in between leaves the
outcome for the next claimant to record.

A turn's first reply carries, under `INBOUND_AT`, when the message it answers was recorded: the
sender that sees the provider accept it measures the reply latency from that, with no lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

import redis.asyncio as aioredis

from consulta.adapters.message import Outbound, SendError, Sent
from consulta.bot.metrics import Metrics
from consulta.bot.outage import Outage
from consulta.storage import keys
from consulta.storage.batch import Batcher, BatchObserver
from consulta.storage.presence import Presence, dead_here, process_id
from consulta.storage.state import redis_client
from consulta.storage.store import Store

__all__ = ["INBOUND_AT", "MemoryQueue", "Outbox", "RedisQueue", "Sender", "open_queue"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF = 0.5  # seconds; doubles with each attempt
CLAIM_LEASE = 60.0  # seconds a sender holds a reply it is sending (unless it dies first)
SENT_NOTE_TTL = 3600  # seconds the "provider accepted it" note outlives the send
ORDER_PAUSE = 0.1  # seconds before a reply waiting for an earlier one is looked at again
RECORD_PATIENCE = 900.0  # seconds to keep trying to record a send the provider accepted
# In a turn's first reply's payload: POSIX time the resident's message it answers was recorded.
INBOUND_AT = "inbound_at"


class Sender(Protocol):
    """What a channel adapter offers the outbox."""

    async def send(self, message: Outbound) -> Sent: ...


class MemoryQueue:
    def __init__(self) -> None:
        self.holder = process_id()  # claims name this process, so a later run sees it died
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._sent: dict[int, str] = {}

    async def put(self, item: str) -> None:
        self._queue.put_nowait(item)

    async def get(self, wait: float = 1.0) -> str | None:
        try:
            return await asyncio.wait_for(self._queue.get(), wait)
        except TimeoutError:
            return None

    async def done(self, item: str) -> None:
        self._queue.task_done()

    async def join(self) -> None:
        await self._queue.join()

    async def depth(self) -> int:
        """Items waiting to be taken."""
        return self._queue.qsize()

    async def note_sent(self, message_id: int, provider_id: str) -> None:
        self._sent[message_id] = provider_id

    async def sent_before(self, message_id: int) -> str | None:
        return self._sent.pop(message_id, None)

    async def rescue(self) -> int:
        return 0  # one process: nobody else's work to take over

    async def close(self) -> None:
        return None


class RedisQueue:
    def __init__(
        self, client: aioredis.Redis, presence: Presence, observe: BatchObserver | None = None
    ) -> None:
        self.redis, self.presence = client, presence
        self.holder = presence.id
        self.working = keys.OUTBOUND_WORKING + presence.id
        # Residents' turns finishing together are queued with one LPUSH.
        self._pushes: Batcher[str, None] = Batcher(
            self._push, name="queue_replies", observe=observe
        )

    async def put(self, item: str) -> None:
        await self._pushes.submit(item)

    async def _push(self, items: Sequence[str]) -> list[None]:
        await self.redis.lpush(keys.OUTBOUND, *items)  # in order: the first is taken first
        return [None] * len(items)

    async def get(self, wait: float = 1.0) -> str | None:
        # Redis takes fractions of a second (the client's stub says int); replies are decoded.
        timeout = cast(int, wait)
        item = await self.redis.blmove(keys.OUTBOUND, self.working, timeout, "RIGHT", "LEFT")
        return cast(str | None, item)

    async def done(self, item: str) -> None:
        await self.redis.lrem(self.working, 1, item)

    async def join(self) -> None:
        while await self.redis.llen(keys.OUTBOUND) or await self.redis.llen(self.working):  # noqa: ASYNC110 - polling Redis, not a local condition
            await asyncio.sleep(0.01)

    async def depth(self) -> int:
        """Items waiting to be taken, by every process (not those being sent)."""
        return int(await self.redis.llen(keys.OUTBOUND))

    async def note_sent(self, message_id: int, provider_id: str) -> None:
        await self.redis.set(f"{keys.SENT}{message_id}", provider_id, ex=SENT_NOTE_TTL)

    async def sent_before(self, message_id: int) -> str | None:
        return cast(str | None, await self.redis.get(f"{keys.SENT}{message_id}"))

    async def rescue(self) -> int:
        """Put back what dead processes were sending; returns how many items."""
        lists = [name async for name in self.redis.scan_iter(match=keys.OUTBOUND_WORKING + "*")]
        owners = {name.removeprefix(keys.OUTBOUND_WORKING): name for name in lists}
        owners.pop(self.holder, None)
        alive = await self.presence.alive(owners)
        moved = 0
        for owner, name in owners.items():
            if owner in alive:
                continue
            # Newest first onto the end taken next: the oldest goes out first.
            while await self.redis.lmove(name, keys.OUTBOUND, "LEFT", "RIGHT"):
                moved += 1
            log.info("put back %d outbound items of a process that died", moved)
        return moved

    async def close(self) -> None:
        await self._pushes.close()
        await self.redis.aclose()


def open_queue(
    redis_url: str | None, presence: Presence | None, observe: BatchObserver | None = None
) -> MemoryQueue | RedisQueue:
    if not redis_url or presence is None:
        return MemoryQueue()
    return RedisQueue(redis_client(redis_url, max_connections=16), presence, observe)


class Outbox:
    def __init__(
        self, store: Store, queue: MemoryQueue | RedisQueue, metrics: Metrics | None = None
    ) -> None:
        self.store, self.queue = store, queue
        self.metrics = metrics if metrics is not None else Metrics()
        self.senders: dict[str, Sender] = {}
        self.recording = Outage("recording sent replies (database)")
        # Shared by the sending loops: an outage is said once, not once per loop.
        self.queue_down = Outage("the outbound queue")
        self.store_down = Outage("sending replies (database)")

    def register(self, channel: str, sender: Sender) -> None:
        self.senders[channel] = sender

    async def enqueue(self, message_ids: Sequence[int]) -> None:
        if message_ids:
            await self.queue.put(",".join(str(i) for i in message_ids))

    async def run(self, stop: asyncio.Event, concurrency: int = 8) -> None:
        """Send until `stop` is set."""
        await self._take_over_an_earlier_run()
        await asyncio.gather(*(self._loop(stop) for _ in range(concurrency)))

    async def _take_over_an_earlier_run(self) -> None:
        """With the in-process queue, a reply claimed by a process of this machine that no longer
        runs (a killed `consulta chat`) is queued again now, as the sweeper would once its lease
        ran out, rather than holding back that resident's later replies till then."""
        if not isinstance(self.queue, MemoryQueue):
            return  # shared work: a dead process's claims are released by whoever sees it died
        try:
            dead = dead_here(await self.store.replies.senders())
            orphans = await self.store.replies.release_claims(sorted(dead))
        except Exception as exc:  # the sweeper takes them once their lease runs out
            log.warning("could not take over unsent replies: %s", type(exc).__name__)
            return
        by_contact: dict[int, list[int]] = {}
        for message_id, contact_id in orphans:
            by_contact.setdefault(contact_id, []).append(message_id)
        for ids in by_contact.values():
            await self.enqueue(ids)

    async def _loop(self, stop: asyncio.Event) -> None:
        queue_down, store_down = self.queue_down, self.store_down
        while not stop.is_set():
            try:
                item = await self.queue.get(wait=0.5)
            except Exception as exc:
                await queue_down.pause(exc, stop)
                continue
            queue_down.over()
            if item is None:
                continue
            try:
                for message_id in item.split(","):
                    if await self.deliver(int(message_id)) == "queued":
                        # An earlier reply to this resident is still on its way: this one
                        # waits its turn (the ones before it in the item are sent already).
                        await asyncio.sleep(ORDER_PAUSE)
                        await self.queue.put(item)
                        break
                store_down.over()
            except Exception as exc:
                # The database is away (or a bug): the replies are still queued or claimed in
                # the message log. Put the item back and try again after a pause.
                with contextlib.suppress(Exception):
                    await self.queue.put(item)
                await store_down.pause(exc, stop)
            finally:
                with contextlib.suppress(Exception):
                    await self.queue.done(item)

    async def deliver_all(self, message_ids: Sequence[int], patience: float = 10.0) -> None:
        """Send these replies now, in order, here (not through the queue), waiting a little
        for any that another sender has in hand."""
        deadline = time.monotonic() + patience
        for message_id in message_ids:
            while await self.deliver(message_id) in ("queued", "sending"):
                if time.monotonic() > deadline:
                    return
                await asyncio.sleep(ORDER_PAUSE)

    async def deliver(self, message_id: int) -> str:
        """Send one queued reply, once, retrying transient failures. Returns its status."""
        row = await self.store.replies.claim(message_id, CLAIM_LEASE, self.queue.holder)
        if row is None:  # sent, failed, another process is sending it, or it waits its turn
            current = await self.store.replies.get(message_id)
            return current.status if current else "missing"
        channel, metrics = row.channel, self.metrics
        sender = self.senders.get(channel)
        if sender is None:
            await self.store.replies.mark(message_id, "failed", error="no sender for channel")
            metrics.outbound.labels(channel, "failed").inc()
            return "failed"
        earlier = await self._sent_before(message_id)
        if earlier is not None:  # a process that died had sent it, and not recorded it
            await self._record(message_id, "sent", provider_id=earlier or None)
            return "sent"  # counted by the process that sent it, not again here
        payload = dict(row.payload)
        inbound_at = payload.pop(INBOUND_AT, None)
        message = Outbound.from_dict(payload)
        for attempt in range(MAX_ATTEMPTS):
            try:
                sent = await sender.send(message)
            except SendError as error:
                if error.opted_out:
                    await self.store.set_opted_out(row.contact_id)
                last = attempt == MAX_ATTEMPTS - 1
                if error.permanent or last:
                    log.warning("outbound message %s not sent: %s", message_id, error)
                    metrics.outbound.labels(channel, "failed").inc()
                    await self._record(
                        message_id,
                        "failed",
                        error=f"{error.code or ''} {error}".strip(),
                        attempt=True,
                    )
                    return "failed"
                wait = error.retry_after or BACKOFF * 2**attempt
                metrics.retries.labels(channel).inc()
                # Still ours while we wait: the sweeper must not hand it to another sender.
                await self.store.replies.mark(
                    message_id,
                    "sending",
                    error=str(error),
                    attempt=True,
                    hold_for=wait + CLAIM_LEASE,
                )
                await asyncio.sleep(wait)
                continue
            metrics.outbound.labels(channel, "sent").inc()
            if isinstance(inbound_at, int | float):
                # Clocks of two machines: never below zero, whatever their skew.
                latency = max(0.0, time.time() - inbound_at)
                metrics.reply_latency.labels(channel).observe(latency)
            await self._note_sent(message_id, sent.provider_id or "")
            await self._record(message_id, "sent", provider_id=sent.provider_id, attempt=True)
            return "sent"
        return "failed"  # pragma: no cover - the loop always returns

    async def _sent_before(self, message_id: int) -> str | None:
        try:
            return await self.queue.sent_before(message_id)
        except Exception as exc:  # Redis away: nothing to go on; the claim still holds
            log.warning("could not check whether reply %s was sent: %s", message_id, exc)
            return None

    async def _note_sent(self, message_id: int, provider_id: str) -> None:
        try:
            await self.queue.note_sent(message_id, provider_id)
        except Exception as exc:  # the database record below is what counts
            log.warning("could not note reply %s as sent: %s", message_id, type(exc).__name__)

    async def _record(self, message_id: int, status: str, **fields: Any) -> None:
        """Record a send's outcome, retrying the recording (never the send) while the database
        is away."""
        deadline = time.monotonic() + RECORD_PATIENCE
        while True:
            try:
                await self.store.replies.mark(message_id, status, **fields)
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise
                await self.recording.pause(exc)
                continue
            self.recording.over()
            return
