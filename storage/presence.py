"""Which processes sharing Redis are alive, and whether Redis itself lost its data.

Each process renews a short-lived key of its own every second. The inbox locks and the outbound
working lists it holds carry its id, so when it dies (SIGKILL, a lost machine) the others see
its key lapse and take over what it left within seconds: one lease per process, renewed in one
round trip, instead of one per lock.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable

import redis.asyncio as aioredis

from storage import keys

__all__ = ["ALIVE_FOR", "BEAT_EVERY", "Presence", "process_id"]

ALIVE_FOR = 5.0  # seconds a process counts as alive after its last heartbeat
BEAT_EVERY = 1.0  # seconds between heartbeats


def process_id() -> str:
    """This run of this process: host, pid and a random part (a restarted process with the
    same pid is a newcomer, not the one that died)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Presence:
    def __init__(self, client: aioredis.Redis, pid: str | None = None) -> None:
        self.redis = client
        self.id = pid or process_id()

    async def beat(self) -> None:
        await self.redis.set(keys.ALIVE + self.id, "1", px=int(ALIVE_FOR * 1000))

    async def leave(self) -> None:
        await self.redis.delete(keys.ALIVE + self.id)

    async def alive(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        if not ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in ids:
                pipe.exists(keys.ALIVE + pid)
            found = await pipe.execute()
        return {pid for pid, present in zip(ids, found, strict=True) if present}

    async def redis_was_reset(self) -> bool:
        """True once after Redis lost its data (a restart without persistence, a flush): its
        queue, locks and spool are gone, and what the database holds must be queued again.
        Only the process that notices first answers True."""
        if await self.redis.get(keys.EPOCH) is not None:
            return False
        # The first to notice marks the new lifetime (on a first start there is simply nothing
        # to queue again).
        return bool(await self.redis.set(keys.EPOCH, secrets.token_hex(8), nx=True))
