"""What a process says of its work at `GET /metrics`: a real WhatsApp and Telegram conversation
through the doubles, then the exposition read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from consulta.adapters.message import Inbound
from consulta.bot.config import Settings
from consulta.bot.metrics import CONTENT_TYPE
from consulta.bot.runtime import Runtime
from consulta.storage.models import MessageLog
from tests.adapters import test_telegram as tg
from tests.adapters import test_twilio as tw
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import TwilioDouble

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Values that must never be in a label or a sample: they stay inside the store.
PRIVATE = (tw.RESIDENT, tw.RESIDENT[1:], f"whatsapp:{tw.RESIDENT}", str(tg.CHAT))


async def scrape(client: TestClient) -> tuple[str, Samples]:
    """The exposition's text, and every sample in it by (name, labels)."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert NAME.fullmatch(family.name), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def sent_replies(rt: Runtime, channel: str) -> int:
    async with rt.store.engine.connect() as conn:
        found = await conn.execute(
            select(func.count()).where(
                MessageLog.direction == "out",
                MessageLog.channel == channel,
                MessageLog.status == "sent",
            )
        )
        return int(found.scalar_one())


async def test_a_conversation_is_counted_by_channel_and_outcome(
    client: TestClient, rt: Runtime, doubles: tuple[TwilioDouble, TelegramDouble]
) -> None:
    twilio, telegram = doubles
    phone = tw.Phone(client, rt, twilio)
    await phone.say("hola")
    twilio.fail_next(503, 20503, "Service unavailable")  # retried once, then sent
    await phone.say("1")
    again = phone.form("2")
    assert await phone.post(again) == 200
    assert await phone.post(again) == 200  # Twilio's retry after a timeout: a duplicate
    twilio.fail_next(400, 21211, "Invalid 'To' Phone Number")  # not retried: failed
    await phone.say("1")
    resident = tg.Resident(client, rt, telegram)
    assert await resident.post(resident.message(text="/start prioridades_centro")) == 200
    await resident.press(0)  # consent: yes
    forged = phone.form("hola")
    assert await phone.post(forged, signature="forged") == 403  # refused before receiving

    text, samples = await scrape(client)
    inbound = "consulta_inbound_messages_total"
    assert value(samples, inbound, channel="whatsapp", outcome="recorded") == 4
    assert value(samples, inbound, channel="whatsapp", outcome="duplicate") == 1
    assert value(samples, inbound, channel="telegram", outcome="recorded") == 2
    assert value(samples, "consulta_turns_total", outcome="handled") == 6
    assert value(samples, "consulta_turns_total", outcome="failed") == 0

    outbound = "consulta_outbound_messages_total"
    assert value(samples, outbound, channel="whatsapp", result="sent") == await sent_replies(
        rt, "whatsapp"
    )
    assert value(samples, outbound, channel="whatsapp", result="failed") == 1
    telegram_sent = value(samples, outbound, channel="telegram", result="sent")
    assert telegram_sent == await sent_replies(rt, "telegram") >= 2
    assert value(samples, "consulta_outbound_retries_total", channel="whatsapp") == 1

    # One latency per message that got a reply (the failed one did not), from recording it to
    # the provider accepting its first reply.
    latency = "consulta_reply_latency_seconds"
    assert value(samples, f"{latency}_count", channel="whatsapp") == 3
    assert value(samples, f"{latency}_count", channel="telegram") == 2
    assert 0 < value(samples, f"{latency}_sum", channel="whatsapp") < 30
    assert value(samples, f"{latency}_bucket", channel="telegram", le="+Inf") == 2

    batches = {
        dict(labels)["batcher"]
        for name, labels in samples
        if name.endswith("_count") and name.startswith("consulta_batch_size")
    }
    expected = {"record_inbound", "read_inbox", "write_turns"}
    if rt.settings.redis_url:
        expected.add("queue_replies")
    assert expected <= batches
    recorded_in_batches = value(samples, "consulta_batch_size_sum", batcher="record_inbound")
    assert recorded_in_batches == 7  # the duplicate was written too, and found to be one

    # The standard collectors, on the process's own registry.
    assert "process_cpu_seconds_total" in text and "python_gc_collections_total" in text
    for private in PRIVATE:
        assert private not in text, private


async def test_the_queue_depth_is_sampled_by_the_supervisor(settings: Settings) -> None:
    runtime = await Runtime.create(settings, migrate=settings.redis_url is None)
    try:
        await runtime.outbox.enqueue([1, 2])  # no sender runs here: they wait
        await runtime.outbox.enqueue([3])
        stop = asyncio.Event()
        supervising = asyncio.create_task(runtime._supervise(stop))
        await asyncio.sleep(0.2)  # its first look
        stop.set()
        await supervising
        text = runtime.metrics.exposition().decode()
        assert "consulta_outbound_queue_depth 2.0" in text
    finally:
        await runtime.close()


async def test_what_the_database_cannot_take_is_spooled_or_refused(settings: Settings) -> None:
    runtime = await Runtime.create(settings, migrate=settings.redis_url is None)

    async def database_away(inbound: Inbound) -> Any:
        raise ConnectionRefusedError("the database is away")

    runtime.inbox.receive = database_away  # type: ignore[method-assign]
    try:
        webhook = Inbound("whatsapp", tw.RESIDENT, provider_id="SM1", text="hola")
        assert await runtime.receive(webhook)  # acknowledged: it waits in the spool
        with pytest.raises(ConnectionRefusedError):  # a local channel: nobody to acknowledge
            await runtime.receive(Inbound("terminal", "local", text="hola"))
        text = runtime.metrics.exposition().decode()
        counted = "consulta_inbound_messages_total"
        assert f'{counted}{{channel="whatsapp",outcome="spooled"}} 1.0' in text
        assert f'{counted}{{channel="terminal",outcome="refused"}} 1.0' in text
        assert tw.RESIDENT not in text
    finally:
        await runtime.close()
