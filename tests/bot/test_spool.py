"""While the database is away, verified webhooks are spooled (to Redis, else to disk) and
acknowledged; once it answers again they are replayed in order and the replies follow. Only
when nothing can keep a message does the webhook get 503."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.storage import keys
from consulta.storage.models import MessageLog
from tests.adapters import test_twilio as tw
from tests.adapters.loopback import sending_runtime
from tests.adapters.twilio_double import TwilioDouble
from tests.faults.harness import TcpProxy


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


@pytest.fixture
async def double() -> AsyncIterator[TwilioDouble]:
    api = TwilioDouble(tw.SID, tw.TOKEN)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def database() -> AsyncIterator[TcpProxy]:
    """PostgreSQL behind a proxy the test can cut."""
    async with TcpProxy(5432) as proxy:
        yield proxy


@pytest.fixture
async def rt(
    shared_settings: Settings, database: TcpProxy, double: TwilioDouble
) -> AsyncIterator[Runtime]:
    async with sending_runtime(
        shared_settings,
        database_url=through(shared_settings.database_url, database.port),
        twilio=tw.twilio_settings(double, sms_from=None),  # WhatsApp only
        public_url=tw.PUBLIC,
    ) as runtime:
        yield runtime


@pytest.fixture
async def client(rt: Runtime, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(build_app(rt))


async def stored(rt: Runtime) -> int:
    async with rt.store.engine.connect() as conn:
        found = await conn.execute(
            select(func.count()).select_from(MessageLog).where(MessageLog.direction == "in")
        )
        return int(found.scalar_one())


async def test_webhooks_wait_in_the_spool_while_postgres_is_away(
    client: TestClient, rt: Runtime, database: TcpProxy, double: TwilioDouble
) -> None:
    phone = tw.Phone(client, rt, double)
    assert "¿Aceptas participar?" in await phone.say("hola")
    database.cut()
    answers = ["1", "2", "1", "Santa Julia"]  # consent, age, gender, neighbourhood: in order
    forms = [phone.form(answer) for answer in answers]
    for form in forms:
        assert await phone.post(form) == 200  # acknowledged: Twilio will not send it again
    assert await rt.spool.redis.llen(keys.SPOOL) == 4  # type: ignore[union-attr]
    assert (await rt.health())["database"].startswith("error")
    assert await phone.post(forms[1]) == 200  # a retry while spooled: one message in the end

    database.restore()
    assert await rt.replay_spool() == 5
    await rt.drain()
    assert await stored(rt) == 5  # "hola" and the four answers, each once
    [submission] = await rt.store.submissions()
    assert submission["answers"] == {
        "consent": True,
        "age_group": "18_29",
        "gender": "woman",
        "neighbourhood": "Santa Julia",
    }
    assert "¿Cuál es tu ocupación" in phone.replies().split("\n---\n")[-1]
    assert not rt.spool.active


async def test_with_redis_away_too_the_spool_is_a_folder(
    client: TestClient,
    rt: Runtime,
    database: TcpProxy,
    double: TwilioDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    phone = tw.Phone(client, rt, double)
    await phone.say("hola")
    database.cut()

    async def redis_away(*args: object) -> None:
        raise ConnectionRefusedError("Redis is away too")

    monkeypatch.setattr(rt.spool.redis, "rpush", redis_away)
    assert await phone.post(phone.form("1")) == 200
    [waiting] = Path(rt.settings.spool_dir).glob("*.json")  # noqa: ASYNC240
    entry = json.loads(waiting.read_text(encoding="utf-8"))
    assert entry["kind"] == "inbound" and entry["message"]["text"] == "1"

    monkeypatch.undo()
    database.restore()
    assert await rt.replay_spool() == 1
    await rt.drain()
    assert not list(Path(rt.settings.spool_dir).glob("*.json"))  # noqa: ASYNC240
    assert "¿Cuál es tu edad?" in phone.replies()


async def test_only_when_nothing_can_keep_a_message_is_it_refused(
    client: TestClient,
    rt: Runtime,
    database: TcpProxy,
    double: TwilioDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    phone = tw.Phone(client, rt, double)
    database.cut()

    async def away(*args: object) -> None:
        raise ConnectionRefusedError("away")

    monkeypatch.setattr(rt.spool.redis, "rpush", away)
    monkeypatch.setattr(rt.spool, "folder", Path("/proc/no-such-folder"))
    response = await client.post(
        "/webhooks/twilio", data=phone.form("hola"), headers={"X-Twilio-Signature": ""}
    )
    assert response.status == 403  # a bad signature is still a 403, outage or not
    assert await phone.post(phone.form("hola")) == 503


async def test_a_poison_entry_is_set_aside_and_does_not_block_the_others(
    client: TestClient, rt: Runtime, database: TcpProxy, double: TwilioDouble
) -> None:
    phone = tw.Phone(client, rt, double)
    database.cut()
    assert await phone.post(phone.form("hola")) == 200
    await rt.spool.put("status", channel="whatsapp")  # unusable: no provider id, no status
    assert await phone.post(phone.form("1")) == 200
    database.restore()
    await rt.replay_spool()
    await rt.replay_spool()
    await rt.drain()
    assert await stored(rt) == 2
    [aside] = (Path(rt.settings.spool_dir) / "failed").glob("*.json")
    assert json.loads(aside.read_text(encoding="utf-8"))["kind"] == "status"
    assert "¿Cuál es tu edad?" in phone.replies()
