"""Conversation state and per-contact locks: in-process, or Redis for many processes.

A conversation is a dict; `{}` means "known, and idle", while None (nothing stored) means
"not known here", which sends the inbox to the durable copy.

The store holds a cache of each conversation; the durable copy is the open submission's
`cursor` in the database, which the inbox falls back to when this store has nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from storage import keys
from storage.batch import Batcher
from storage.presence import process_id

__all__ = [
    "Held",
    "MemoryStateStore",
    "RedisStateStore",
    "StateStore",
    "open_state_store",
    "redis_client",
]

log = logging.getLogger(__name__)

CONVERSATION_TTL = 60 * 60 * 24 * 30  # a conversation idle this long is forgotten here
# A lock names its holder, and is taken over as soon as the holder's presence lapses (within
# ALIVE_FOR seconds of its death); the TTL is only a backstop for a holder that is alive but
# stuck.
LOCK_TTL = 60
LOCK_WAIT = 30  # seconds to wait for a lock before giving up (the sweep tries again)
LOCK_POLL = 0.005  # seconds between tries for a lock another process holds

Call = tuple[list[str], list[Any]]  # a script's keys and arguments


class Held:
    """A contact's conversation while its lock is held: read when the lock was taken, written
    back when it is let go (or earlier, with `save`)."""

    def __init__(self, state: dict[str, Any] | None, save: Any) -> None:
        self.state = state
        self._save = save

    async def save(self) -> None:
        await self._save(self.state)


class StateStore(Protocol):
    async def get(self, contact_id: int) -> dict[str, Any] | None: ...

    async def set(self, contact_id: int, data: dict[str, Any] | None) -> None: ...

    def hold(self, contact_id: int) -> Any: ...  # an async context manager yielding `Held`

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryStateStore:
    """Everything in this process: the embedded default."""

    def __init__(self) -> None:
        self._data: dict[int, str] = {}
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    async def get(self, contact_id: int) -> dict[str, Any] | None:
        raw = self._data.get(contact_id)
        return json.loads(raw) if raw else None

    async def set(self, contact_id: int, data: dict[str, Any] | None) -> None:
        if data is not None:
            self._data[contact_id] = json.dumps(data)
        else:
            self._data.pop(contact_id, None)

    @asynccontextmanager
    async def hold(self, contact_id: int) -> AsyncIterator[Held]:
        lock, users = self._locks.get(contact_id) or (asyncio.Lock(), 0)
        self._locks[contact_id] = (lock, users + 1)
        try:
            async with lock:
                held = Held(await self.get(contact_id), lambda state: self.set(contact_id, state))
                yield held
                await held.save()
        finally:
            lock, users = self._locks[contact_id]
            if users <= 1:
                del self._locks[contact_id]
            else:
                self._locks[contact_id] = (lock, users - 1)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisStateStore:
    """State shared by every web and worker process through one Redis."""

    # Taking the lock reads the conversation, and letting it go writes it back: one round trip
    # each, where a separate lock, GET and SET would take four. A lock whose holder is no longer
    # alive is taken over; its cached conversation may be older than what the dead holder
    # committed to the database, so the newcomer reads the durable copy instead (returns 2).
    ACQUIRE = """
    if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
      return {1, redis.call('get', KEYS[2])}
    end
    local holder = string.match(redis.call('get', KEYS[1]) or '', '^(.*)|')
    if holder and redis.call('exists', ARGV[3] .. holder) == 0 then
      redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
      redis.call('del', KEYS[2])
      return {2}
    end
    return {0}
    """
    RELEASE = """
    if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
    if ARGV[2] == '' then redis.call('del', KEYS[2])
    else redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3]) end
    if ARGV[4] == '1' then redis.call('del', KEYS[1]) end
    return 1
    """

    def __init__(self, client: aioredis.Redis, holder: str) -> None:
        self.redis = client
        self.holder = holder  # this process's id (storage.presence): locks carry it
        self._acquire = client.register_script(self.ACQUIRE)
        self._release = client.register_script(self.RELEASE)
        # Residents taking or letting go of their locks together share one pipeline.
        self._acquires: Batcher[Call, Any] = Batcher(lambda calls: self._run(self._acquire, calls))
        self._releases: Batcher[Call, Any] = Batcher(lambda calls: self._run(self._release, calls))

    async def _run(self, script: AsyncScript, calls: Sequence[Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys_, args in calls:
                await script(keys=keys_, args=args, client=pipe)
            return await pipe.execute(raise_on_error=False)  # an error is its caller's alone

    async def get(self, contact_id: int) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{keys.CONVERSATION}{contact_id}")
        return json.loads(raw) if raw else None

    async def set(self, contact_id: int, data: dict[str, Any] | None) -> None:
        key = f"{keys.CONVERSATION}{contact_id}"
        if data is not None:
            await self.redis.set(key, json.dumps(data, separators=(",", ":")), ex=CONVERSATION_TTL)
        else:
            await self.redis.delete(key)

    @asynccontextmanager
    async def hold(self, contact_id: int) -> AsyncIterator[Held]:
        # A lock safe across processes that expires if its holder dies, so a crashed worker
        # cannot wedge a resident's inbox.
        lock, conversation = f"{keys.LOCK}{contact_id}", f"{keys.CONVERSATION}{contact_id}"
        token = f"{self.holder}|{secrets.token_hex(8)}"
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            taken = await self._acquires.submit(
                ([lock, conversation], [token, LOCK_TTL * 1000, keys.ALIVE])
            )
            if isinstance(taken, Exception):
                raise taken
            if taken[0] == 2:
                log.info("contact %s's inbox taken over from a process that died", contact_id)
            if taken[0]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"contact {contact_id}'s inbox stayed locked")
            await asyncio.sleep(LOCK_POLL)

        async def write(state: dict[str, Any] | None, *, release: bool = False) -> None:
            data = json.dumps(state, separators=(",", ":")) if state is not None else ""
            args = [token, data, CONVERSATION_TTL, "1" if release else "0"]
            written = await self._releases.submit(([lock, conversation], args))
            if isinstance(written, Exception):
                raise written
            if not written:
                log.warning("contact %s's lock was lost while held; state not written", contact_id)

        held = Held(json.loads(taken[1]) if len(taken) > 1 and taken[1] else None, write)
        try:
            yield held
        finally:
            await write(held.state, release=True)

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self._acquires.close()
        await self._releases.close()
        await self.redis.aclose()


def redis_client(url: str, max_connections: int = 64) -> aioredis.Redis:
    """A client whose pool waits for a free connection under load instead of failing, and
    that gives up quickly on a Redis that is gone: every loop that uses it waits out an
    outage itself, with backoff, so a command should fail fast rather than retry for long."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=15,  # above the outbound queue's blocking wait
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
    )
    return aioredis.Redis.from_pool(pool)


def open_state_store(redis_url: str | None, holder: str = "") -> StateStore:
    if not redis_url:
        return MemoryStateStore()
    return RedisStateStore(redis_client(redis_url), holder or process_id())
