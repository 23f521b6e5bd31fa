"""Where a verified webhook waits while the database cannot take it: Redis when it answers, else
a folder on local disk (`SPOOL_DIR`), written and synced before the provider hears back. The
spool is replayed in arrival order once the database answers again, so a PostgreSQL outage
loses nothing Twilio or Telegram was told we received (Twilio does not retry a 5xx).

An entry is JSON: {"t": arrival in ns, "kind": "inbound" | "status", ...}. Replaying records
each entry as if it had just arrived; provider ids make a replay twice harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from consulta.storage import keys

__all__ = ["Entry", "Spool", "SpoolFull"]

log = logging.getLogger(__name__)

REPLAY_LEASE = 30_000  # ms one process holds the right to replay the Redis spool


class SpoolFull(Exception):
    """Neither Redis nor the local folder could take the webhook."""


@dataclass(frozen=True)
class Entry:
    data: dict[str, Any]
    source: str  # "redis" or a file path

    @property
    def t(self) -> int:
        return int(self.data.get("t", 0))


class Spool:
    def __init__(self, folder: str | Path, redis: aioredis.Redis | None, holder: str) -> None:
        self.folder = Path(folder)
        self.redis, self.holder = redis, holder
        self.active = False  # something may be waiting: new webhooks queue behind it

    async def put(self, kind: str, **fields: Any) -> None:
        """Keep an entry durably; raises `SpoolFull` when nowhere can take it."""
        entry = {"t": time.time_ns(), "kind": kind, **fields}
        raw = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        self.active = True
        if self.redis is not None:
            try:
                await self.redis.rpush(keys.SPOOL, raw)
                return
            except Exception as exc:
                log.warning("spool: Redis unavailable (%s); writing to disk", type(exc).__name__)
        try:
            await asyncio.to_thread(self._write, entry["t"], raw)
        except OSError as exc:
            raise SpoolFull(f"cannot write to {self.folder}: {exc.strerror}") from exc

    def _write(self, t: int, raw: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{t:020d}-{os.getpid()}-{secrets.token_hex(4)}"
        part = self.folder / f".{name}.part"
        with part.open("w", encoding="utf-8") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        part.replace(self.folder / f"{name}.json")
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    async def waiting(self) -> bool:
        """Whether anything waits (and so whether new webhooks must queue behind it)."""
        found = bool(await asyncio.to_thread(self._files))
        if not found and self.redis is not None:
            with contextlib.suppress(Exception):
                found = bool(await self.redis.llen(keys.SPOOL))
        self.active = found
        return found

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.json"))

    def _read(self, most: int) -> list[Entry]:
        entries = []
        for path in self._files()[:most]:
            try:
                entries.append(Entry(json.loads(path.read_text(encoding="utf-8")), str(path)))
            except (OSError, ValueError):
                # Unreadable (a disk error): set aside for a person to look at, not retried.
                log.error("spool: %s cannot be read; moved aside as .bad", path.name)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return entries

    async def take(self, most: int = 500) -> list[Entry]:
        """The oldest waiting entries from both places, in arrival order. The Redis spool is
        read by one process at a time (a short lease), so two never replay it together."""
        files = await asyncio.to_thread(self._read, most)
        kept: list[Entry] = []
        if self.redis is not None and await self._lease():
            raw = await self.redis.lrange(keys.SPOOL, 0, most - 1)
            kept = [Entry(json.loads(r), "redis") for r in raw]
        # Merged by arrival, each source in its own order: the Redis entries taken are always
        # the head of its list, which is what `done` trims.
        return list(heapq.merge(files, kept, key=lambda e: e.t))[:most]

    async def _lease(self) -> bool:
        assert self.redis is not None
        try:
            if await self.redis.set(keys.SPOOL_REPLAYER, self.holder, nx=True, px=REPLAY_LEASE):
                return True
            if await self.redis.get(keys.SPOOL_REPLAYER) == self.holder:
                await self.redis.pexpire(keys.SPOOL_REPLAYER, REPLAY_LEASE)
                return True
        except Exception:
            return False
        return False

    async def set_aside(self, entry: Entry) -> None:
        """An entry that cannot be recorded though the database answers (a bug, bad data):
        kept in `failed/` for a person to look at, and out of the way of the others."""
        failed = self.folder / "failed"
        raw = json.dumps(entry.data, ensure_ascii=False)
        await asyncio.to_thread(failed.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread((failed / f"{entry.t:020d}.json").write_text, raw, "utf-8")
        await self.done([entry])

    async def done(self, entries: list[Entry]) -> None:
        """Forget replayed entries (the Redis ones are always a prefix of the list)."""
        from_redis = sum(1 for e in entries if e.source == "redis")
        if from_redis and self.redis is not None:
            await self.redis.ltrim(keys.SPOOL, from_redis, -1)
        for entry in entries:
            if entry.source != "redis":
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(os.unlink, entry.source)
