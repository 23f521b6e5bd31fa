"""Conversation state, per-contact locks and dedup marks: in-process, or Redis for many processes.

The store holds a cache of each conversation; the durable copy is the open submission's
`cursor` in the database, which the inbox falls back to when this store has nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import redis.asyncio as aioredis

from storage import keys

__all__ = [
    "MemoryStateStore",
    "RedisStateStore",
    "StateStore",
    "open_state_store",
    "redis_client",
]

CONVERSATION_TTL = 60 * 60 * 24 * 30  # a conversation idle this long is forgotten here
SEEN_TTL = 60 * 60 * 24 * 2  # providers retry for hours, not days
LOCK_TTL = 60  # a crashed process's lock frees itself


class StateStore(Protocol):
    async def get(self, contact_id: int) -> dict[str, Any] | None: ...

    async def set(self, contact_id: int, data: dict[str, Any] | None) -> None: ...

    def lock(self, contact_id: int) -> Any: ...  # an async context manager

    async def seen(self, key: str) -> bool: ...

    async def mark_seen(self, key: str) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryStateStore:
    """Everything in this process: the embedded default."""

    def __init__(self) -> None:
        self._data: dict[int, str] = {}
        self._seen: set[str] = set()
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    async def get(self, contact_id: int) -> dict[str, Any] | None:
        raw = self._data.get(contact_id)
        return json.loads(raw) if raw else None

    async def set(self, contact_id: int, data: dict[str, Any] | None) -> None:
        if data:
            self._data[contact_id] = json.dumps(data)
        else:
            self._data.pop(contact_id, None)

    @asynccontextmanager
    async def lock(self, contact_id: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(contact_id) or (asyncio.Lock(), 0)
        self._locks[contact_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[contact_id]
            if users <= 1:
                del self._locks[contact_id]
            else:
                self._locks[contact_id] = (lock, users - 1)

    async def seen(self, key: str) -> bool:
        return key in self._seen

    async def mark_seen(self, key: str) -> None:
        if len(self._seen) > 100_000:  # bounded: the database's unique index is the truth
            self._seen.clear()
        self._seen.add(key)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisStateStore:
    """State shared by every web and worker process through one Redis."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client

    async def get(self, contact_id: int) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{keys.CONVERSATION}{contact_id}")
        return json.loads(raw) if raw else None

    async def set(self, contact_id: int, data: dict[str, Any] | None) -> None:
        key = f"{keys.CONVERSATION}{contact_id}"
        if data:
            await self.redis.set(key, json.dumps(data, separators=(",", ":")), ex=CONVERSATION_TTL)
        else:
            await self.redis.delete(key)

    @asynccontextmanager
    async def lock(self, contact_id: int) -> AsyncIterator[None]:
        # Redis's own lock (SET NX PX + a Lua release): safe across processes, and it expires
        # if the holder dies, so a crashed worker cannot wedge a resident's inbox.
        async with self.redis.lock(
            f"{keys.LOCK}{contact_id}", timeout=LOCK_TTL, sleep=0.005, blocking_timeout=LOCK_TTL
        ):
            yield

    async def seen(self, key: str) -> bool:
        return bool(await self.redis.exists(f"{keys.SEEN}{key}"))

    async def mark_seen(self, key: str) -> None:
        await self.redis.set(f"{keys.SEEN}{key}", 1, ex=SEEN_TTL)

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


def redis_client(url: str, max_connections: int = 64) -> aioredis.Redis:
    """A client whose pool waits for a free connection under load instead of failing."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=30, decode_responses=True
    )
    return aioredis.Redis.from_pool(pool)


def open_state_store(redis_url: str | None) -> StateStore:
    if not redis_url:
        return MemoryStateStore()
    return RedisStateStore(redis_client(redis_url))
