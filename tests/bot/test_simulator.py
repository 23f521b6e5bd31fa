"""The simulator's JSON API and the web process's health and metrics, over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from consulta.bot.runtime import Runtime
from consulta.bot.server import MAX_BODY, build_app
from consulta.storage.db import connect

SESSION = "staffpreview01"


@pytest.fixture
async def client(runtime: Runtime, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(build_app(runtime))


async def test_the_page_is_served(client: TestClient) -> None:
    response = await client.get("/simulator")
    assert response.status == 200
    assert "Flow simulator" in await response.text()


async def test_flows_are_listed_default_first(client: TestClient) -> None:
    flows = await (await client.get("/simulator/api/flows")).json()
    assert [f["id"] for f in flows] == ["priorities", "report"]
    assert flows[0]["title"]["fr"] == "Les priorités de votre quartier"


async def test_a_conversation_through_the_api(client: TestClient, runtime: Runtime) -> None:
    response = await client.post(
        "/simulator/api/send", json={"session": SESSION, "start": "report", "language": "en"}
    )
    assert response.status == 200
    [first, consent] = (await response.json())["messages"]
    assert first["direction"] == "in"
    assert consent["text"].startswith("Let's record your report")
    assert consent["buttons"][0] == {"payload": "consent:1", "title": "Yes"}
    agreed = await client.post(
        "/simulator/api/send",
        json={"session": SESSION, "payload": "consent:1", "after": consent["id"]},
    )
    [_, question] = (await agreed.json())["messages"]
    assert question["buttons"][0] == {"payload": "category:water_leak", "title": "Water leak"}
    reply = await client.post(
        "/simulator/api/send",
        json={"session": SESSION, "payload": "category:pothole", "after": question["id"]},
    )
    [_, where] = (await reply.json())["messages"]
    assert where["expects"] == "location"
    shared = await client.post(
        "/simulator/api/send",
        json={"session": SESSION, "location": {"latitude": 20.1, "longitude": -98.7}},
    )
    messages = (await shared.json())["messages"]
    assert messages[-2]["location"] == {"latitude": 20.1, "longitude": -98.7, "label": None}
    log = await (await client.get(f"/simulator/api/messages?session={SESSION}")).json()
    assert len(log["messages"]) == len(messages)
    [sub] = await runtime.store.submissions()
    assert sub["channel"] == "simulator" and sub["answers"]["category"] == "pothole"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "the body must be JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"session": "x", "text": "hola"}', "session must be 8 to 64 letters or digits"),
        (b'{"session": "../../etc/pass", "text": "hola"}', "session must be"),
        (b'{"session": "abcdefgh12"}', "send text, payload, start or location"),
        (b'{"session": "abcdefgh12", "text": 5}', "text must be a string"),
        (b'{"session": "abcdefgh12", "location": {"latitude": "x"}}', "location needs numeric"),
        (b"\xff\xfe\xfa", "the body must be JSON"),
    ],
)
async def test_bad_requests_get_a_400_with_a_reason(
    client: TestClient, runtime: Runtime, body: bytes, reason: str
) -> None:
    response = await client.post(
        "/simulator/api/send", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert reason in (await response.json())["error"]
    assert await runtime.store.submissions() == []


async def test_an_oversized_body_gets_413(client: TestClient) -> None:
    response = await client.post("/simulator/api/send", data=b"x" * (MAX_BODY + 1))
    assert response.status == 413


async def test_bad_log_queries_get_a_400(client: TestClient) -> None:
    assert (await client.get("/simulator/api/messages?session=x")).status == 400
    response = await client.get(f"/simulator/api/messages?session={SESSION}&after=z")
    assert response.status == 400


async def test_wrong_method_gets_405(client: TestClient) -> None:
    assert (await client.get("/simulator/api/send")).status == 405


async def test_healthz(client: TestClient, runtime: Runtime) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert ("redis" in body) == bool(runtime.settings.redis_url)


async def test_healthz_says_when_the_database_is_gone(client: TestClient, runtime: Runtime) -> None:
    await runtime.store.close()
    runtime.store.engine = connect("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    response = await client.get("/healthz")
    assert response.status == 503
    assert (await response.json())["database"].startswith("error")
    await runtime.store.engine.dispose()


async def test_metrics_in_prometheus_text(client: TestClient) -> None:
    await client.post("/simulator/api/send", json={"session": SESSION, "text": "hola"})
    await client.post("/simulator/api/send", data=b"nope")
    text = await (await client.get("/metrics")).text()
    assert 'consulta_inbound_messages_total{channel="simulator"} 1.0' in text
    assert 'consulta_rejected_requests_total{route="/simulator/api/send"} 1.0' in text
