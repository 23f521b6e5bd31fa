"""Presence: who is alive among the processes sharing Redis, and when nobody can be judged."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time

import redis.asyncio as aioredis

from consulta.storage import keys
from consulta.storage.presence import Presence, dead_here
from tests.settings import REDIS, reset_redis


async def test_the_living_renew_their_presence_and_the_dead_lapse() -> None:
    client = aioredis.from_url(REDIS, decode_responses=True)
    await reset_redis(client)
    living, gone = Presence(client, "living"), Presence(client, "gone")
    await client.set(keys.EPOCH, f"test:{time.time() - 60}")  # Redis has been up a while
    try:
        living.keep_alive(REDIS)  # renewed from a thread, whatever the event loop does
        await gone.beat()
        await client.delete(keys.ALIVE + "gone")  # its key lapsed: it died
        await asyncio.sleep(0.2)
        assert await living.alive(["living", "gone"]) == {"living"}
        assert 0 < await client.pttl(keys.ALIVE + "living") <= 5000
        await living.leave()  # a clean stop says goodbye at once
        assert await living.alive(["living"]) == set()
    finally:
        await living.leave()
        await client.aclose()


async def test_just_after_redis_lost_its_data_nobody_is_judged_dead() -> None:
    """Presence keys vanish with Redis: until everyone has renewed theirs, taking over a live
    process's work would run it twice."""
    client = aioredis.from_url(REDIS, decode_responses=True)
    await reset_redis(client)
    presence = Presence(client, "me")
    try:
        assert await presence.alive(["other"]) == {"other"}  # no epoch yet: too early to say
        assert await presence.redis_was_reset()  # the first to notice marks the new lifetime…
        assert not await presence.redis_was_reset()  # …once
        assert await presence.alive(["other"]) == {"other"}  # and it is still too early
        await client.set(keys.EPOCH, f"test:{time.time() - 60}")
        assert await presence.alive(["other"]) == set()
    finally:
        await client.aclose()


def test_without_redis_a_process_of_this_machine_that_no_longer_runs_is_dead() -> None:
    child = subprocess.Popen(["sleep", "5"])
    try:
        host = socket.gethostname()
        ids = [f"{host}:{child.pid}:aa", f"{host}:{os.getpid()}:bb", f"elsewhere:{child.pid}:cc"]
        assert dead_here(ids) == set()  # alive, ourselves, or another machine's: not judged
    finally:
        child.kill()
        child.wait()
    assert dead_here([f"{host}:{child.pid}:aa"]) == {f"{host}:{child.pid}:aa"}
