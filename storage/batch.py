"""Batching for the hot path: the writes of many concurrent callers in one transaction (group
commit), and their reads in one query — so a busy process pays one round trip per kind of
statement for a whole batch, not per message.

A caller submits its item and waits for its own result. Batches form by themselves: the first
item after a quiet spell is written at once, alone; whatever arrives while that write is in
flight goes together in the next one. Only when batches are already shared does a batcher
with a `linger` wait that long before the next one, so a quiet process adds no delay.

A batcher may be named and given an observer, told each batch's size (how the processes measure
their batches, without storage knowing of metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchObserver", "Batcher"]

T = TypeVar("T")
R = TypeVar("R")

# The flush returns one result per item, in order; an exception in that list is the item's own
# failure (the others still succeeded), an exception raised fails the whole batch.
Flush = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]
# Told (the batcher's name, how many items) as each batch is flushed; it must be quick.
BatchObserver = Callable[[str, int], None]


class Batcher(Generic[T, R]):
    def __init__(
        self,
        flush: Flush[T, R],
        *,
        most: int = 256,
        linger: float = 0.0,
        name: str = "",
        observe: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._flush = flush
        self._observe = observe
        self._most = most
        self._linger = linger
        self._last = 0  # how many the previous batch held
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        # A caller that gives up (its client hung up) does not cancel the batch: its item is
        # written with the others, and the result is simply not collected.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while self._pending:
                if self._linger and self._last > 1 and len(self._pending) < self._most:
                    # Busy (the last batch was shared): wait a moment for more company, so the
                    # batches grow and the work per message falls before a backlog can form.
                    await asyncio.sleep(self._linger)
                batch, self._pending = self._pending[: self._most], self._pending[self._most :]
                self._last = len(batch)
                if self._observe is not None:
                    with contextlib.suppress(Exception):  # a measurement never fails a batch
                        self._observe(self.name, len(batch))
                try:
                    results = await self._flush([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._task = None

    async def close(self) -> None:
        """Wait for the writes in flight (what was submitted is written, not dropped)."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
