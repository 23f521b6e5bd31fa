"""The batcher behind group commit: batches form by themselves, each caller gets its own result,
one item's failure stays its own, and a caller that gives up does not cancel the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from consulta.storage.batch import Batcher


class Doubler:
    """A flush that records its batches, doubles numbers and refuses negative ones."""

    def __init__(self, pause: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.pause = pause

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(self.pause)
        return [ValueError(f"{i} is negative") if i < 0 else 2 * i for i in items]


async def test_a_lone_item_goes_at_once_and_arrivals_during_a_write_go_together() -> None:
    flush = Doubler()
    batcher: Batcher[int, int] = Batcher(flush)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the first write is under way
    rest = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4)]
    assert await first == 2
    assert [await r for r in rest] == [4, 6, 8]
    assert flush.batches == [[1], [2, 3, 4]]


async def test_one_items_failure_is_its_own() -> None:
    batcher: Batcher[int, int] = Batcher(Doubler())
    results = await asyncio.gather(*(batcher.submit(n) for n in (5, -1, 7)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 14
    assert isinstance(results[1], ValueError)


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        return list(items)

    batcher: Batcher[int, int] = Batcher(flaky)
    with pytest.raises(ConnectionError):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2


async def test_batches_hold_at_most_so_many() -> None:
    flush = Doubler()
    batcher: Batcher[int, int] = Batcher(flush, most=2)
    await asyncio.gather(*(batcher.submit(n) for n in range(5)))
    assert flush.batches == [[0, 1], [2, 3], [4]]


async def test_a_caller_that_gives_up_does_not_cancel_the_write() -> None:
    flush = Doubler(pause=0.05)
    batcher: Batcher[int, int] = Batcher(flush)
    impatient = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)
    impatient.cancel()
    await batcher.close()  # waits for the write in flight
    assert flush.batches == [[1]]


async def test_a_busy_batcher_lingers_for_company_but_a_quiet_one_does_not() -> None:
    flush = Doubler(pause=0)
    batcher: Batcher[int, int] = Batcher(flush, linger=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await batcher.submit(1)  # quiet: written at once
    await asyncio.gather(batcher.submit(2), batcher.submit(3))  # arrived together
    assert loop.time() - started < 0.04
    # Busy now (the last batch was shared): a later arrival still catches the next batch.
    first = asyncio.create_task(batcher.submit(4))
    await asyncio.sleep(0.01)
    assert await batcher.submit(5) == 10 and await first == 8
    assert flush.batches == [[1], [2, 3], [4, 5]]


async def test_a_named_batcher_tells_its_observer_each_batchs_size() -> None:
    seen: list[tuple[str, int]] = []

    def observe(name: str, size: int) -> None:
        seen.append((name, size))
        raise RuntimeError("a broken observer")  # fails no batch

    flush = Doubler()
    batcher: Batcher[int, int] = Batcher(flush, most=2, name="doubling", observe=observe)
    assert await asyncio.gather(*(batcher.submit(n) for n in range(5))) == [0, 2, 4, 6, 8]
    assert seen == [("doubling", 2), ("doubling", 2), ("doubling", 1)]
