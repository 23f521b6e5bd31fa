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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from consulta.storage import keys
from consulta.storage.batch import Batcher
from consulta.storage.presence import ALIVE_FOR, process_id

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

Call = tuple[list[str], list[Any]]  # a script's keys and arguments


class Held:
    """A contact's conversation while its lock is held: read when the lock was taken, written
    back with `save`, and when letting go (`done`)."""

    def __init__(self, state: dict[str, Any] | None, write: Any) -> None:
        self.state = state
        self._write = write
        self.released = False

    async def save(self) -> None:
        await self._write(self.state)

    async def done(self) -> bool:
        """Write the conversation back and let go — unless another process asked for one more
        pass meanwhile (a message of this resident reached it while we held the lock): then
        the lock is kept, and the caller looks for work again. True when let go."""
        self.released = await self._write(self.state, release=True)
        return self.released


class StateStore(Protocol):
    async def get(self, contact_id: int) -> dict[str, Any] | None: ...

    async def set(self, contact_id: int, data: dict[str, Any] | None) -> None: ...

    def hold(self, contact_id: int) -> Any:
        """An async context manager yielding `Held`, or None when another live process holds
        the contact and has been asked to handle what is waiting (it will, before letting go)."""

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

                async def write(state: dict[str, Any] | None, *, release: bool = False) -> bool:
                    await self.set(contact_id, state)
                    return True

                held = Held(await self.get(contact_id), write)
                yield held
                if not held.released:
                    await held.done()
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
    # each, where a separate lock, GET and SET would take four. Taking a lock renews the
    # taker's presence (a lock always names a process known to be alive). A lock whose holder
    # is no longer alive is taken over; its cached conversation may be older than what the
    # dead holder committed to the database, so the newcomer reads the durable copy (2). A lock
    # held by a live process is not waited for: it is asked for one more pass (0), and its
    # release sees the request and keeps the lock for that pass instead (2).
    ACQUIRE = """
    if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
      redis.call('del', KEYS[3])
      redis.call('set', ARGV[4], '1', 'PX', ARGV[5])
      return {1, redis.call('get', KEYS[2])}
    end
    local holder = string.match(redis.call('get', KEYS[1]) or '', '^(.*)|')
    if holder and redis.call('exists', ARGV[3] .. holder) == 0 then
      redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
      redis.call('del', KEYS[2], KEYS[3])
      redis.call('set', ARGV[4], '1', 'PX', ARGV[5])
      return {2}
    end
    redis.call('set', KEYS[3], '1', 'PX', ARGV[2])
    return {0}
    """
    RELEASE = """
    if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
    if ARGV[2] == '' then redis.call('del', KEYS[2])
    else redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3]) end
    if ARGV[4] == '1' then
      if ARGV[5] == '1' and redis.call('del', KEYS[3]) == 1 then return 2 end
      redis.call('del', KEYS[1])
    end
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
    async def hold(self, contact_id: int) -> AsyncIterator[Held | None]:
        lock, conversation = f"{keys.LOCK}{contact_id}", f"{keys.CONVERSATION}{contact_id}"
        more = f"{keys.ANOTHER_PASS}{contact_id}"
        token = f"{self.holder}|{secrets.token_hex(8)}"
        alive = [keys.ALIVE, keys.ALIVE + self.holder, int(ALIVE_FOR * 1000)]
        taken = await self._acquires.submit(
            ([lock, conversation, more], [token, LOCK_TTL * 1000, *alive])
        )
        if isinstance(taken, Exception):
            raise taken
        if not taken[0]:  # a live process holds them, and will make one more pass for us
            yield None
            return
        if taken[0] == 2:
            log.info("contact %s's inbox taken over from a process that died", contact_id)

        async def write(state: dict[str, Any] | None, *, release: bool = False) -> bool:
            data = json.dumps(state, separators=(",", ":")) if state is not None else ""
            flags = ["1" if release else "0", "1" if release and not failing else "0"]
            args = [token, data, CONVERSATION_TTL, *flags]
            written = await self._releases.submit(([lock, conversation, more], args))
            if isinstance(written, Exception):
                raise written
            if not written:
                log.warning("contact %s's lock was lost while held; state not written", contact_id)
            return written != 2

        failing = False
        held = Held(json.loads(taken[1]) if len(taken) > 1 and taken[1] else None, write)
        try:
            yield held
        except BaseException:
            failing = True  # let go whatever was asked: the sweep retries what is left
            raise
        finally:
            if not held.released:
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
