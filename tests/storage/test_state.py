"""Conversation-state stores: in-process and Redis behave the same, and the lock serialises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from consulta.storage.presence import Presence
from consulta.storage.state import MemoryStateStore, RedisStateStore, StateStore
from tests.settings import REDIS, reset_redis


async def alive(client: aioredis.Redis, name: str) -> RedisStateStore:
    """A state store of a live process called `name` (its presence renewed once)."""
    presence = Presence(client, name)
    await presence.beat()
    return RedisStateStore(client, presence.id)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
        return
    client = aioredis.from_url(REDIS, decode_responses=True)
    await reset_redis(client)
    state = await alive(client, "one")
    try:
        yield state
    finally:
        await state.close()


async def test_get_set_delete(store: StateStore) -> None:
    assert await store.get(1) is None
    await store.set(1, {"flow": "priorities", "state": "age_group", "history": ["consent"]})
    assert await store.get(1) == {
        "flow": "priorities",
        "state": "age_group",
        "history": ["consent"],
    }
    await store.set(1, None)
    assert await store.get(1) is None


async def test_the_lock_lets_one_holder_in_at_a_time(store: StateStore) -> None:
    inside, most, turned_away = 0, 0, 0

    async def hold() -> None:
        nonlocal inside, most, turned_away
        async with store.hold(7) as held:
            if held is None:  # Redis: a live holder has it, and will look again for us
                turned_away += 1
                return
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(hold() for _ in range(10)))
    assert most == 1
    assert turned_away == (9 if isinstance(store, RedisStateStore) else 0)


async def test_a_holder_asked_for_another_pass_keeps_the_lock_for_it() -> None:
    client = aioredis.from_url(REDIS, decode_responses=True)
    await reset_redis(client)
    first, second = await alive(client, "first"), await alive(client, "second")
    try:
        async with first.hold(8) as held:
            assert held is not None
            async with second.hold(8) as turned_away:
                assert turned_away is None  # not waited for: the holder is asked instead
            assert not await held.done()  # so it keeps the lock and looks again…
            assert await client.exists("consulta:lock:8")
            assert await held.done()  # …and lets go once nobody asked again
        assert not await client.exists("consulta:lock:8")
        async with second.hold(8) as held:
            assert held is not None
    finally:
        await first.close()
        await second.close()


async def test_locks_of_different_contacts_do_not_wait_for_each_other(store: StateStore) -> None:
    async with store.hold(1):
        await asyncio.wait_for(_enter(store, 2), 1)


async def _enter(store: StateStore, contact_id: int) -> None:
    async with store.hold(contact_id):
        pass


async def test_holding_reads_the_conversation_and_letting_go_writes_it(store: StateStore) -> None:
    await store.set(3, {"flow": "priorities", "state": "age_group"})
    async with store.hold(3) as held:
        assert held.state == {"flow": "priorities", "state": "age_group"}
        held.state = {"flow": "priorities", "state": "gender"}
        await held.save()
        assert await store.get(3) == {"flow": "priorities", "state": "gender"}
        held.state = {"flow": "report", "state": "photo"}
    assert await store.get(3) == {"flow": "report", "state": "photo"}
    async with store.hold(3) as held:
        held.state = None
    assert await store.get(3) is None


async def test_a_holder_whose_lock_expired_does_not_overwrite_the_next_one() -> None:
    client = aioredis.from_url(REDIS, decode_responses=True)
    await reset_redis(client)
    state = await alive(client, "one")
    try:
        async with state.hold(5) as held:
            await client.delete("consulta:lock:5")  # expired, as if this holder had stalled
            async with state.hold(5) as later:
                later.state = {"flow": "report"}
            held.state = {"flow": "stale"}
        assert await state.get(5) == {"flow": "report"}
        assert not await client.exists("consulta:lock:5")
    finally:
        await state.close()


async def test_a_dead_holders_lock_is_taken_over_at_once() -> None:
    """A process killed while holding a resident's lock: its presence lapses and a newcomer
    takes the lock without waiting for it to expire — and reads the durable copy (None here),
    not the dead holder's cached conversation, which may be older than what it committed."""
    client = aioredis.from_url(REDIS, decode_responses=True)
    await reset_redis(client)
    await Presence(client, "dead").beat()
    newcomer = await alive(client, "newcomer")
    try:
        await newcomer.set(9, {"flow": "priorities", "state": "age_group"})
        # The lock as the dead process left it: its id, a minute still to run.
        await client.set("consulta:lock:9", "dead|1234", px=60_000)
        async with newcomer.hold(9) as held:
            assert held is None  # while it is alive, its lock is respected
        await client.delete("consulta:alive:dead")  # its presence lapses
        async with newcomer.hold(9) as held:
            assert held is not None and held.state is None
        assert not await client.exists("consulta:lock:9")  # let go: no lock left behind
    finally:
        await newcomer.close()
