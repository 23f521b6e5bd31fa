"""What several channels need to deliver messages well: pacing per sender, splitting long text."""

from __future__ import annotations

import asyncio
import time

__all__ = ["Pacer", "split_text"]


class Pacer:
    """At most `rate` sends a second for one sender, in this process (a token bucket)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate, self.capacity = rate, burst or max(1.0, rate)
        self.tokens, self.updated = self.capacity, time.monotonic()
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


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
