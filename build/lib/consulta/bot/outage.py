"""Waiting out a dependency that went away (PostgreSQL, Redis): a loop pauses with a growing
backoff and says so once when the trouble starts and once when it ends — never a traceback per
try, and never an exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

__all__ = ["Outage"]

log = logging.getLogger(__name__)


class Outage:
    """The state of one loop's dependency: `pause` after a failure, `over` after a success."""

    def __init__(self, what: str, *, first: float = 0.2, most: float = 5.0) -> None:
        self.what, self.first, self.most = what, first, most
        self._delay = 0.0
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def fail(self, error: BaseException) -> None:
        """Note a failure (said once per outage) without waiting."""
        if self._since is None:
            self._since = time.monotonic()
            # The type only: a database error's text can quote row values.
            log.warning("%s: unavailable (%s); retrying", self.what, type(error).__name__)

    async def pause(self, error: BaseException, stop: asyncio.Event | None = None) -> None:
        """Note a failure and wait before the next try (less if `stop` is set meanwhile)."""
        self.fail(error)
        self._delay = min(self.most, self._delay * 2 or self.first)
        if stop is None:
            await asyncio.sleep(self._delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self._delay)

    def over(self) -> None:
        if self._since is not None:
            log.warning("%s: back after %.1f s", self.what, time.monotonic() - self._since)
        self._since, self._delay = None, 0.0
