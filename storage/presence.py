"""Which processes sharing Redis are alive, and whether Redis itself lost its data.

Each process renews a short-lived key of its own every second. The inbox locks and the outbound
working lists it holds carry its id, so when it dies (SIGKILL, a lost machine) the others see
its key lapse and take over what it left within seconds: one lease per process, renewed in one
round trip, instead of one per lock.

The renewal runs in a thread of its own: a process whose event loop is busy for a few seconds
(a long export, a garbage collection, a starved CPU) is slow, not dead, and must not have its
residents taken from it mid-turn. A SIGKILL stops the thread with everything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis

from consulta.storage import keys

__all__ = ["ALIVE_FOR", "BEAT_EVERY", "Presence", "dead_here", "process_id"]

log = logging.getLogger(__name__)

ALIVE_FOR = 5.0  # seconds a process counts as alive after its last heartbeat
BEAT_EVERY = 1.0  # seconds between heartbeats


def process_id() -> str:
    """This run of this process: host, pid and a random part (a restarted process with the
    same pid is a newcomer, not the one that died)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def dead_here(ids: Iterable[str]) -> set[str]:
    """Which of these process ids (`process_id()`'s form) were processes of this machine that
    no longer run: without Redis, the only processes whose death can be seen."""
    host, dead = socket.gethostname(), set()
    for pid in ids:
        name, _, rest = pid.partition(":")
        number = rest.partition(":")[0]
        if name != host or not number.isdigit() or int(number) == os.getpid():
            continue
        try:
            os.kill(int(number), 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:  # alive, another user's
            pass
    return dead


class Presence:
    def __init__(self, client: aioredis.Redis, pid: str | None = None) -> None:
        self.redis = client
        self.id = pid or process_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def beat(self) -> None:
        await self.redis.set(keys.ALIVE + self.id, "1", px=int(ALIVE_FOR * 1000))

    def keep_alive(self, url: str) -> None:
        """Renew this process's presence every second, from a thread, until `leave`."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._renew, args=(url,), name="consulta-presence", daemon=True
            )
            self._thread.start()

    def _renew(self, url: str) -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        key, away = keys.ALIVE + self.id, False
        try:
            while not self._stop.is_set():
                try:
                    client.set(key, "1", px=int(ALIVE_FOR * 1000))
                    if away:
                        log.warning("presence: Redis is back")
                    away = False
                except redis.RedisError as exc:
                    if not away:
                        log.warning("presence: Redis unavailable (%s)", type(exc).__name__)
                    away = True
                self._stop.wait(BEAT_EVERY)
        finally:
            client.close()

    async def leave(self) -> None:
        """Stop renewing and say goodbye: others take over at once, not in seconds."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None
        await self.redis.delete(keys.ALIVE + self.id)

    async def alive(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` are alive. Just after Redis lost its data, presence was lost with it
        and nobody can be judged yet: everyone counts as alive until each has had the time to
        renew theirs."""
        ids = list(ids)
        if not ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.EPOCH)
            for pid in ids:
                pipe.exists(keys.ALIVE + pid)
            epoch, *found = await pipe.execute()
        if _age(epoch) < ALIVE_FOR + BEAT_EVERY:
            return set(ids)
        return {pid for pid, present in zip(ids, found, strict=True) if present}

    async def redis_was_reset(self) -> bool:
        """True once after Redis lost its data (a restart without persistence, a flush): its
        queue, locks and spool are gone, and what the database holds must be queued again.
        Only the process that notices first answers True."""
        if await self.redis.get(keys.EPOCH) is not None:
            return False
        # The first to notice marks the new lifetime, and when it began (on a first start
        # there is simply nothing to queue again).
        epoch = f"{secrets.token_hex(4)}:{time.time():.3f}"
        return bool(await self.redis.set(keys.EPOCH, epoch, nx=True))


def _age(epoch: str | None) -> float:
    """Seconds since Redis's current lifetime began (0 when nobody has marked it yet)."""
    try:
        return time.time() - float((epoch or "").rpartition(":")[2])
    except ValueError:
        return 0.0
