"""Send-rate caps: one cap per sender holds in total across limiters (Redis) and in one process
(in-process), broadcast traffic leaves room for replies, and a Redis outage only falls back."""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consulta.adapters.delivery import LocalPacing, Pacing
from consulta.storage import keys
from consulta.storage.limiter import RedisPacing
from consulta.storage.state import redis_client
from tests.settings import REDIS

RATE, BURST, SECONDS = 50.0, 5.0, 2.0
CAP = RATE * SECONDS + BURST  # what GCRA lets through in SECONDS from a full bucket
ROOT = Path(__file__).resolve().parents[2]


def redis_pacing(url: str = REDIS) -> RedisPacing:
    return RedisPacing(redis_client(url), fallback=LocalPacing())


@pytest.fixture(params=["redis", "local"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Pacing, Pacing]]:
    """Two limiters on one sender's cap: two processes' (each with its own Redis client), or
    two users of one process's `LocalPacing`."""
    if request.param == "local":
        local = LocalPacing()
        yield local, local
        return
    one, two = redis_pacing(), redis_pacing()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


def sender() -> str:
    return f"test:{uuid.uuid4().hex}"


async def hammer(
    pacing: Pacing, key: str, until: float, stamps: list[float], *, bulk: bool = False
) -> None:
    """Send as fast as the pacing allows until `until` (monotonic), noting when each went."""
    while True:
        await pacing.wait(key, RATE, BURST, bulk=bulk)
        now = time.monotonic()
        if now >= until:
            return
        stamps.append(now)


def busiest_second(stamps: list[float]) -> int:
    stamps = sorted(stamps)
    most, first = 0, 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_two_limiters_share_one_cap(pair: tuple[Pacing, Pacing]) -> None:
    key, stamps = sender(), []
    until = time.monotonic() + SECONDS
    await asyncio.gather(*(hammer(p, key, until, stamps) for p in pair for _ in range(4)))
    print(f"{len(stamps)} sends in {SECONDS}s at {RATE}/s, burst {BURST} (cap {CAP:.0f})")
    assert 0.9 * CAP <= len(stamps) <= CAP
    assert busiest_second(stamps) <= RATE + BURST  # no one-second window above the cap


async def test_bulk_alone_runs_at_the_full_rate(pair: tuple[Pacing, Pacing]) -> None:
    key, stamps = sender(), []
    until = time.monotonic() + SECONDS
    await asyncio.gather(
        *(hammer(p, key, until, stamps, bulk=True) for p in pair for _ in range(4))
    )
    print(f"bulk alone: {len(stamps)} sends (cap {CAP:.0f})")
    assert 0.9 * (CAP - 1) <= len(stamps) <= CAP - 1  # one cell stays for replies


async def test_replies_go_first_while_bulk_hammers(pair: tuple[Pacing, Pacing]) -> None:
    key, bulk, waits = sender(), [], []
    until = time.monotonic() + SECONDS

    async def replies() -> None:
        await asyncio.sleep(0.2)  # once the broadcast has taken the burst
        for i in range(15):  # a resident's answer every 100 ms
            started = time.monotonic()
            await pair[i % 2].wait(key, RATE, BURST)
            waits.append(time.monotonic() - started)
            await asyncio.sleep(0.1)

    await asyncio.gather(
        replies(), *(hammer(p, key, until, bulk, bulk=True) for p in pair for _ in range(8))
    )
    print(
        f"reply waits under bulk: median {statistics.median(waits) * 1000:.1f} ms, "
        f"max {max(waits) * 1000:.1f} ms; bulk {len(bulk)} sends"
    )
    # No queueing behind the broadcast: within half a cell, but for the two slowest (a busy
    # machine pauses a process now and then, whatever it was waiting for).
    assert sorted(waits)[-3] < 0.5 / RATE
    assert statistics.median(waits) < 0.1 / RATE
    assert len(bulk) + len(waits) <= CAP
    assert len(bulk) >= 0.8 * (CAP - len(waits))  # the broadcast got the rest


async def test_bulk_waits_while_replies_saturate_the_sender(pair: tuple[Pacing, Pacing]) -> None:
    key, replies, bulk = sender(), [], []
    start = time.monotonic()
    until = start + SECONDS
    await asyncio.gather(
        *(hammer(p, key, until, replies) for p in pair for _ in range(4)),
        *(hammer(p, key, until, bulk, bulk=True) for p in pair for _ in range(4)),
    )
    late_bulk = [stamp for stamp in bulk if stamp > start + 0.2]  # after the first burst
    print(f"replies {len(replies)}, bulk {len(bulk)} ({len(late_bulk)} after the burst)")
    assert len(replies) + len(bulk) <= CAP
    assert len(replies) >= 0.9 * (CAP - len(bulk))
    assert len(late_bulk) <= 0.05 * CAP  # a busy machine may keep the replies away a moment


async def test_idle_senders_leave_nothing_behind() -> None:
    pacing, key = redis_pacing(), sender()
    try:
        await pacing.wait(key, 100.0)  # one cell is ~10 ms; the key outlives it by one more
        ttl = await pacing.redis.pttl(keys.PACE + key)
        assert 0 < ttl <= 21
        await asyncio.sleep(0.05)
        assert not await pacing.redis.exists(keys.PACE + key)
    finally:
        await pacing.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_redis_falls_back_to_pacing_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pacing = redis_pacing(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        with caplog.at_level(logging.WARNING, logger="consulta.storage.limiter"):
            started = time.monotonic()
            for _ in range(11):
                await pacing.wait("test:away", RATE)  # burst 1: one every 20 ms
            took = time.monotonic() - started
        assert took >= 10 / RATE * 0.95  # paced, not sent at once
        assert [r.message for r in caplog.records if "Redis unreachable" in r.message] == [
            "Redis unreachable (ConnectionError): pacing sends in this process alone"
        ]
    finally:
        await pacing.close()


async def test_redis_is_asked_again_after_an_outage() -> None:
    pacing, key = redis_pacing(), sender()
    try:
        pacing._local_until = time.monotonic() + 60  # as if Redis had just failed
        await pacing.wait(key, RATE)
        assert not await pacing.redis.exists(keys.PACE + key)  # paced in-process
        pacing._local_until = 0.0
        await pacing.wait(key, RATE)
        assert await pacing.redis.exists(keys.PACE + key)
    finally:
        await pacing.close()


# Each process: import, say it is ready, wait for the common start time, send for SECONDS.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from consulta.adapters.delivery import LocalPacing
    from consulta.storage.limiter import RedisPacing
    from consulta.storage.state import redis_client

    url, key, rate, burst, seconds = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])

    async def main(start: float) -> int:
        pacing = RedisPacing(redis_client(url), fallback=LocalPacing())
        sent = 0

        async def hammer() -> None:
            nonlocal sent
            while True:
                await pacing.wait(key, rate, burst)
                if time.time() >= start + seconds:
                    return
                sent += 1

        await asyncio.sleep(max(0.0, start - time.time()))
        await asyncio.gather(*(hammer() for _ in range(4)))
        await pacing.close()
        return sent

    print("ready", flush=True)
    print(asyncio.run(main(float(sys.stdin.readline()))), flush=True)
    """
)


async def test_two_processes_share_one_cap() -> None:
    rate, burst = 40.0, 4.0
    cap = rate * SECONDS + burst
    args = [REDIS, sender(), str(rate), str(burst), str(SECONDS)]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
    start = f"{time.time() + 0.2}\n".encode()
    results = await asyncio.wait_for(
        asyncio.gather(*(child.communicate(start) for child in children)), 30
    )
    for child, (_out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err.decode()
        assert b"Redis unreachable" not in err  # shared through Redis, not paced alone
    counts = [int(out) for out, _err in results]
    print(f"two processes at {rate}/s for {SECONDS}s: {counts} = {sum(counts)} (cap {cap:.0f})")
    assert 0.9 * cap <= sum(counts) <= cap
    assert all(count > 0.25 * cap for count in counts)  # both really sent


async def test_at_a_strict_cap_bulk_runs_full_and_a_reply_waits_a_cell_at_most(
    pair: tuple[Pacing, Pacing],
) -> None:
    """A burst of 1, as channels pace a provider's per-second cap: bulk alone reaches the
    rate, never more in any second, and a reply arriving meanwhile takes the next cell."""
    key, bulk, waits = sender(), [], []
    until = time.monotonic() + SECONDS

    async def hammer_strict(pacing: Pacing) -> None:
        while True:
            await pacing.wait(key, RATE, 1.0, bulk=True)
            now = time.monotonic()
            if now >= until:
                return
            bulk.append(now)

    async def replies() -> None:
        await asyncio.sleep(0.3)
        for i in range(10):
            started = time.monotonic()
            await pair[i % 2].wait(key, RATE, 1.0)
            waits.append(time.monotonic() - started)
            await asyncio.sleep(0.12)

    await asyncio.gather(replies(), *(hammer_strict(p) for p in pair for _ in range(8)))
    sent = len(bulk) + len(waits)
    print(
        f"strict cap: {sent} sends in {SECONDS:g} s (cap {RATE * SECONDS + 1:.0f}); reply waits "
        f"median {statistics.median(waits) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms"
    )
    assert sent <= RATE * SECONDS + 1
    assert sent >= 0.95 * RATE * SECONDS
    assert busiest_second(bulk) <= RATE + 1
    assert sorted(waits)[-3] <= 1.5 / RATE  # the next cell, but for a paused process
