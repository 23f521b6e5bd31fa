"""What several channels need to deliver messages well: pacing per sender, splitting long text.

Pacing is a GCRA ("generic cell rate algorithm") per sender: each sender has a theoretical
arrival time `tat`, the moment its bucket would be full again; a send is allowed while
`tat - now` stays within the tolerance `(burst - 1) / rate`, and moves `tat` one interval on.
Replies to residents in the middle of a survey go ahead of broadcast traffic (`bulk`) on the
same sender: a reply that has to wait marks the sender for as long as its wait (and a quarter
cell more), and bulk takes no cell while the mark is there. Where the bucket holds more than one
cell, bulk also leaves the last one free, so a reply usually goes at once; with a burst of 1
(a provider's strict cap per second) it waits for the next cell at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from consulta.gcra import cell, retry_delay, tolerance

__all__ = ["LocalPacing", "Pacing", "split_text"]

FORGET_AFTER = 10_000  # buckets kept before idle ones are dropped


class Pacing(Protocol):
    """Paces the sends of one sender to its provider's cap (`LocalPacing` in this process,
    `consulta.storage.limiter.RedisPacing` across every process sharing one Redis).

    Args:
        key: names the sender: "twilio:whatsapp:+5215550001111", "telegram:all",
            "telegram:chat:123".
        rate: sends a second.
        burst: how many may go at once after a quiet spell.
        bulk: broadcast traffic, which leaves room for replies and backs off longer.
    """

    async def wait(self, key: str, rate: float, burst: float = 1.0, *, bulk: bool = False) -> None:
        """Return once a send may go."""
        ...


class LocalPacing:
    """`Pacing` in this process alone: one GCRA bucket per key. What a process without Redis
    uses, and what `RedisPacing` falls back to while Redis is away."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}
        self._reply_waits: dict[str, float] = {}  # key → until when a reply waits for it

    def acquire(self, key: str, rate: float, burst: float = 1.0, *, bulk: bool = False) -> float:
        """Take a cell if the bucket allows: 0.0, or the seconds to wait before asking again."""
        now = self.clock()
        interval, slack = cell(rate)
        reply_waits = self._reply_waits.get(key, -float("inf")) - now
        if bulk and reply_waits > 0:
            return reply_waits  # a reply is waiting for this sender: it goes first
        tat = self._tat.get(key)  # None: idle for long enough
        ahead = (now if tat is None else tat) - now - tolerance(rate, burst, bulk)
        if ahead > 1e-9:  # not float rounding at the edge of the tolerance
            if not bulk:
                self._reply_waits[key] = now + ahead + interval / 4
            return ahead
        if len(self._tat) >= FORGET_AFTER:
            self._forget(now)
        self._tat[key] = (now if tat is None else max(tat, now - slack)) + interval
        return 0.0

    async def wait(self, key: str, rate: float, burst: float = 1.0, *, bulk: bool = False) -> None:
        while True:
            wait = self.acquire(key, rate, burst, bulk=bulk)
            if wait <= 0:
                return
            await asyncio.sleep(retry_delay(wait, rate, bulk))

    def _forget(self, now: float) -> None:
        # A bucket whose tat passed a second ago is full, as an unknown key is (but for bulk's
        # quarter cell at a burst of 1, more than a second only below one send in 4 s).
        self._tat = {k: t for k, t in self._tat.items() if t > now - 1}
        self._reply_waits = {k: t for k, t in self._reply_waits.items() if t > now}


def split_text(text: str, limit: int) -> list[str]:
    """Split a long message between lines (or words) so no part is over `limit` characters."""
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:  # a single overlong line: cut between words
            cut = line.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            parts.extend([p for p in (current, line[:cut]) if p])
            current, line = "", line[cut:].lstrip()
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            parts.append(current)
            current = line
        else:
            current = candidate
    if current or not parts:
        parts.append(current)
    return parts
