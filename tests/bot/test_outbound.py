"""The outbox sends a reply once: claimed before it is sent, its outcome kept when recording it
fails, and what a dead process was sending taken over by the living — on both backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from consulta.adapters.message import Inbound, Outbound, SendError, Sent
from consulta.bot.config import Settings
from consulta.bot.outbound import RedisQueue
from consulta.bot.runtime import Runtime
from consulta.storage import keys
from consulta.storage.models import MessageLog

FIXTURES = str(Path(__file__).parent.parent / "fixtures" / "flows")
CHANNEL = "test"


class Recorder:
    """A channel that records what it sends; fails as told first."""

    def __init__(self) -> None:
        self.sent: list[Outbound] = []
        self.failures: list[SendError] = []

    async def send(self, message: Outbound) -> Sent:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return Sent(provider_id=f"p{len(self.sent)}")


async def redis_up_for_a_while(rt: Runtime) -> None:
    """Presence is judged only once Redis has been up long enough for everyone to renew it."""
    assert isinstance(rt.queue, RedisQueue)
    await rt.queue.redis.set(keys.EPOCH, f"test:{time.time() - 60}")


async def open_runtime(settings: Settings) -> tuple[Runtime, Recorder]:
    runtime = await Runtime.create(
        settings.with_(flows_path=(FIXTURES,)), migrate=settings.redis_url is None
    )
    recorder = Recorder()
    runtime.outbox.register(CHANNEL, recorder)
    return runtime, recorder


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[tuple[Runtime, Recorder]]:
    runtime, recorder = await open_runtime(settings)
    try:
        yield runtime, recorder
    finally:
        await runtime.close()


async def a_reply(rt: Runtime) -> int:
    """A resident writes; their first reply waits in the queue, unsent."""
    await rt.inbox.handle(Inbound(CHANNEL, "+5215550001", text="hola", language="es"))
    log = await rt.store.conversation_log(CHANNEL, "+5215550001")
    return next(i for i, direction, _, _ in log if direction == "out")


async def statuses(rt: Runtime) -> list[tuple[str, str | None, int]]:
    async with rt.store.engine.connect() as conn:
        rows = await conn.execute(
            select(MessageLog.status, MessageLog.provider_id, MessageLog.attempts)
            .where(MessageLog.direction == "out")
            .order_by(MessageLog.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_a_reply_is_claimed_so_two_senders_send_it_once(
    rt: tuple[Runtime, Recorder],
) -> None:
    runtime, recorder = rt
    message_id = await a_reply(runtime)
    results = await asyncio.gather(*(runtime.outbox.deliver(message_id) for _ in range(4)))
    assert results.count("sent") >= 1 and len(recorder.sent) == 1
    assert (await statuses(runtime))[0] == ("sent", "p1", 1)


async def test_when_recording_fails_the_recording_is_retried_not_the_send(
    rt: tuple[Runtime, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, recorder = rt
    message_id = await a_reply(runtime)
    mark = runtime.store.replies.mark
    failures = iter([True, True, False])

    async def flaky(*args: object, **kwargs: object) -> None:
        if next(failures, False):
            raise ConnectionRefusedError("the database went away")
        await mark(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime.store.replies, "mark", flaky)
    assert await runtime.outbox.deliver(message_id) == "sent"
    assert len(recorder.sent) == 1  # sent once, recorded on the third try
    assert (await statuses(runtime))[0][:2] == ("sent", "p1")


async def test_a_reply_waiting_out_a_backoff_is_not_taken_over(
    rt: tuple[Runtime, Recorder],
) -> None:
    runtime, recorder = rt
    message_id = await a_reply(runtime)
    recorder.failures.append(SendError("flood control", retry_after=1.0))
    sending = asyncio.create_task(runtime.outbox.deliver(message_id))
    await asyncio.sleep(0.3)  # it is waiting out the provider's retry-after
    assert await runtime.store.replies.stale(timedelta(0)) == []  # not "stranded"
    assert await runtime.outbox.deliver(message_id) == "sending"  # and nobody else sends it
    assert await sending == "sent"
    assert len(recorder.sent) == 1


async def test_what_a_dead_process_was_sending_is_taken_over_and_sent_once(
    shared_settings: Settings,
) -> None:
    dead, _ = await open_runtime(shared_settings)
    living, recorder = await open_runtime(shared_settings)
    try:
        message_id = await a_reply(dead)
        assert isinstance(dead.queue, RedisQueue)
        # The dead process had taken the item and claimed the reply, then was SIGKILLed.
        assert await dead.queue.get(wait=1) is not None
        assert await dead.store.replies.claim(message_id, 600, dead.queue.holder)
        await dead.close()  # its presence is gone, as after a SIGKILL (within seconds)
        await redis_up_for_a_while(living)
        assert await living.outbox.deliver(message_id) == "sending"  # still claimed…
        await living.sweep()  # …until the sweep sees whose claim it is
        assert await living.queue.rescue() == 1  # its working list put back
        stop = asyncio.Event()
        sending = asyncio.create_task(living.outbox.run(stop, concurrency=2))
        await living.queue.join()
        stop.set()
        await sending
        assert len(recorder.sent) == 1
        assert (await statuses(living))[0][0] == "sent"
    finally:
        await living.close()


async def test_a_send_the_provider_accepted_is_recorded_not_repeated_after_a_crash(
    shared_settings: Settings,
) -> None:
    dead, _ = await open_runtime(shared_settings)
    living, recorder = await open_runtime(shared_settings)
    try:
        message_id = await a_reply(dead)
        assert await dead.store.replies.claim(message_id, 600, dead.queue.holder)
        # Sent, noted — and the process died before the database heard of it.
        await dead.queue.note_sent(message_id, "SMalready")
        await dead.close()
        await redis_up_for_a_while(living)
        await living.sweep()
        assert await living.outbox.deliver(message_id) == "sent"
        assert recorder.sent == []  # not sent again
        assert (await statuses(living))[0][:2] == ("sent", "SMalready")
        assert await living.queue.redis.exists(f"{keys.SENT}{message_id}")  # type: ignore[union-attr]
    finally:
        await living.close()


async def test_a_residents_replies_never_overtake_each_other(
    rt: tuple[Runtime, Recorder],
) -> None:
    """Two turns' replies sent side by side (after an outage, by several workers): the later
    waits for the earlier, whichever sender takes it first."""
    runtime, recorder = rt
    first = await a_reply(runtime)
    await runtime.inbox.handle(Inbound(CHANNEL, "+5215550001", text="sí"))
    log = await runtime.store.conversation_log(CHANNEL, "+5215550001")
    later = [i for i, direction, _, _ in log if direction == "out" and i > first]
    assert later
    assert await runtime.outbox.deliver(later[0]) == "queued"  # not before the first
    assert recorder.sent == []
    assert await runtime.outbox.deliver(first) == "sent"
    assert await runtime.outbox.deliver(later[0]) == "sent"
    assert [m.text for m in recorder.sent] == [
        body for i, d, body, _ in log if d == "out" and i in (first, later[0])
    ]
