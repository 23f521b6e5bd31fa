"""The simulator's JSON API (behind staff tokens) and the web process's health and metrics,
over real HTTP."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from consulta.bot.runtime import Runtime
from consulta.bot.server import MAX_BODY, build_app
from consulta.storage.db import connect
from consulta.storage.staff import Staff

SESSION = "staffpreview01"


@pytest.fixture
async def client(runtime: Runtime, aiohttp_client: Any) -> TestClient:
    """Signed in as an analyst: any staff token previews flows."""
    token = await Staff(runtime.store).add("Ana Analista", "analyst")
    return await aiohttp_client(build_app(runtime), headers={"Authorization": f"Bearer {token}"})


async def test_the_page_is_served_without_a_token(runtime: Runtime, aiohttp_client: Any) -> None:
    anonymous = await aiohttp_client(build_app(runtime))
    response = await anonymous.get("/simulator")
    assert response.status == 200
    page = await response.text()
    assert "Flow simulator" in page and 'id="token"' in page


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/simulator/api/flows"),
        ("POST", "/simulator/api/send"),
        ("GET", f"/simulator/api/messages?session={SESSION}"),
    ],
)
async def test_the_api_needs_a_staff_token(
    runtime: Runtime, aiohttp_client: Any, method: str, path: str
) -> None:
    anonymous = await aiohttp_client(build_app(runtime))
    for headers in ({}, {"Authorization": "Bearer made-up"}, {"Authorization": "Basic eDp5"}):
        response = await anonymous.request(
            method, path, json={"session": SESSION, "text": "hola"}, headers=headers
        )
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert await response.json() == {"error": "a valid staff token is required"}
    assert await runtime.store.submissions() == []


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
    assert "Maximum request body size" in (await response.json())["error"]


async def test_bad_log_queries_get_a_400(client: TestClient) -> None:
    assert (await client.get("/simulator/api/messages?session=x")).status == 400
    for after in ("z", str(2**64)):
        response = await client.get(f"/simulator/api/messages?session={SESSION}&after={after}")
        assert response.status == 400
        assert await response.json() == {"error": "after must be a whole number"}


async def test_wrong_method_gets_405(client: TestClient) -> None:
    response = await client.get("/simulator/api/send")
    assert response.status == 405 and response.headers["Allow"] == "POST"
    assert await response.json() == {"error": "method not allowed"}


async def test_an_unknown_route_gets_a_json_404(client: TestClient) -> None:
    response = await client.get("/simulator/api/nothing-here")
    assert response.status == 404 and await response.json() == {"error": "not found"}


async def test_a_bug_is_a_json_500_logged_once_without_its_traceback(
    client: TestClient,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(runtime.store, "conversation_log", broken)
    response = await client.get(f"/simulator/api/messages?session={SESSION}")
    assert response.status == 500
    assert await response.json() == {"error": "internal error"}
    [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info and "/simulator/api/messages" in logged.getMessage()


async def test_a_database_that_is_away_gets_a_503_with_retry_after(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("away")

    monkeypatch.setattr(runtime.store, "conversation_log", away)
    response = await client.get(f"/simulator/api/messages?session={SESSION}")
    assert response.status == 503 and response.headers["Retry-After"] == "5"
    assert await response.json() == {"error": "temporarily unavailable"}


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
    assert 'consulta_inbound_messages_total{channel="simulator",outcome="recorded"} 1.0' in text
    assert 'consulta_rejected_requests_total{route="/simulator/api/send"} 1.0' in text
