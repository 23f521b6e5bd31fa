"""The outbound queue: every reply leaves through it, paced and retried in one place.

A queue item is one turn's replies (their message-log ids, in order), so a resident's messages
never overtake each other. In-process by default; a Redis list when several processes share
the work (`consulta worker`), with a per-worker "working" list so a crashed worker's items are
put back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis

from adapters.message import Outbound, SendError, Sent
from storage import keys
from storage.batch import Batcher
from storage.repository import Store
from storage.state import redis_client

__all__ = ["MemoryQueue", "Outbox", "RedisQueue", "Sender", "open_queue"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF = 0.5  # seconds; doubles with each attempt


class Sender(Protocol):
    """What a channel adapter offers the outbox."""

    async def send(self, message: Outbound) -> Sent: ...


class MemoryQueue:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()

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

    async def recover(self) -> None:
        return None


class RedisQueue:
    def __init__(self, client: aioredis.Redis, worker: str | None = None) -> None:
        self.redis = client
        self.working = keys.OUTBOUND_WORKING + (worker or f"{socket.gethostname()}:{os.getpid()}")
        # Residents' turns finishing together are queued with one LPUSH.
        self._pushes: Batcher[str, None] = Batcher(self._push)

    async def put(self, item: str) -> None:
        await self._pushes.submit(item)

    async def _push(self, items: Sequence[str]) -> list[None]:
        await self.redis.lpush(keys.OUTBOUND, *items)  # in order: the first is taken first
        return [None] * len(items)

    async def get(self, wait: float = 1.0) -> str | None:
        return await self.redis.blmove(keys.OUTBOUND, self.working, wait, "RIGHT", "LEFT")

    async def done(self, item: str) -> None:
        await self.redis.lrem(self.working, 1, item)

    async def join(self) -> None:
        while await self.redis.llen(keys.OUTBOUND) or await self.redis.llen(self.working):  # noqa: ASYNC110 - polling Redis, not a local condition
            await asyncio.sleep(0.01)

    async def recover(self) -> None:
        """Put back what this worker name held when it died."""
        while await self.redis.lmove(self.working, keys.OUTBOUND, "RIGHT", "LEFT"):
            pass

    async def close(self) -> None:
        await self._pushes.close()
        await self.redis.aclose()


def open_queue(redis_url: str | None) -> MemoryQueue | RedisQueue:
    if not redis_url:
        return MemoryQueue()
    return RedisQueue(redis_client(redis_url, max_connections=16))


class Outbox:
    def __init__(self, store: Store, queue: MemoryQueue | RedisQueue) -> None:
        self.store, self.queue = store, queue
        self.senders: dict[str, Sender] = {}

    def register(self, channel: str, sender: Sender) -> None:
        self.senders[channel] = sender

    async def enqueue(self, message_ids: Sequence[int]) -> None:
        if message_ids:
            await self.queue.put(",".join(str(i) for i in message_ids))

    async def run(self, stop: asyncio.Event, concurrency: int = 8) -> None:
        """Send until `stop` is set."""
        await self.queue.recover()
        await asyncio.gather(*(self._loop(stop) for _ in range(concurrency)))

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            item = await self.queue.get(wait=0.5)
            if item is None:
                continue
            try:
                for message_id in item.split(","):
                    await self.deliver(int(message_id))
            except Exception:
                log.exception("outbound item %s failed", item)
            finally:
                await self.queue.done(item)

    async def deliver(self, message_id: int) -> str:
        """Send one queued message, retrying transient failures. Returns its final status."""
        row = await self.store.outbound(message_id)
        if row is None or row.status != "queued":
            return row.status if row else "missing"
        sender = self.senders.get(row.channel)
        if sender is None:
            await self.store.mark_outbound(message_id, "failed", error="no sender for channel")
            return "failed"
        message = Outbound.from_dict(row.payload)
        for attempt in range(MAX_ATTEMPTS):
            try:
                sent = await sender.send(message)
            except SendError as error:
                if error.opted_out:
                    await self.store.set_opted_out(row.contact_id)
                last = attempt == MAX_ATTEMPTS - 1
                if error.permanent or last:
                    log.warning("outbound message %s not sent: %s", message_id, error)
                    await self.store.mark_outbound(
                        message_id,
                        "failed",
                        error=f"{error.code or ''} {error}".strip(),
                        attempt=True,
                    )
                    return "failed"
                await self.store.mark_outbound(message_id, "queued", error=str(error), attempt=True)
                await asyncio.sleep(error.retry_after or BACKOFF * 2**attempt)
                continue
            await self.store.mark_outbound(
                message_id, "sent", provider_id=sent.provider_id, attempt=True
            )
            return "sent"
        return "failed"  # pragma: no cover - the loop always returns
