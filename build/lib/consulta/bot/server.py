"""The web process (`consulta serve`): health, metrics, and the flow simulator for staff.

Channel webhooks register their routes here through `ROUTES` hooks; the process keeps no state
of its own, so several of them can run side by side on one Redis and one PostgreSQL.
"""

from __future__ import annotations

import gc
import json
import logging
from importlib.resources import files
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from consulta.adapters import simulator
from consulta.bot.runtime import Runtime, Unavailable
from consulta.storage.errors import is_unavailable

__all__ = ["METRICS", "RUNTIME", "build_app"]

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", dict)
PAGES = Path(str(files("consulta.bot") / "pages"))  # package data
MAX_BODY = 256 * 1024  # webhooks are small; anything larger is refused with 413


def _metrics() -> tuple[CollectorRegistry, dict[str, Counter]]:
    registry = CollectorRegistry()
    counters = {
        "inbound": Counter(
            "consulta_inbound_messages",
            "Messages recorded from residents",
            ["channel"],
            registry=registry,
        ),
        "duplicates": Counter(
            "consulta_inbound_duplicates",
            "Provider retries ignored",
            ["channel"],
            registry=registry,
        ),
        "rejected": Counter(
            "consulta_rejected_requests",
            "Requests refused with a 4xx",
            ["route"],
            registry=registry,
        ),
    }
    return registry, counters


@web.middleware
async def unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A dependency that is away answers 503 (with Retry-After), never a 500 and a traceback:
    the webhook's sender may retry, and the log says what is away, once per outage."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Unavailable as exc:
        log.error("refused %s: %s", request.path, exc)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        log.warning("%s: a dependency is unavailable (%s)", request.path, type(exc).__name__)
    return web.json_response(
        {"error": "temporarily unavailable"}, status=503, headers={"Retry-After": "5"}
    )


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[unavailable])
    app[RUNTIME] = runtime
    registry, counters = _metrics()
    app[METRICS] = {"registry": registry, **counters}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/simulator", simulator_page)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_get("/simulator/api/flows", simulator_flows)
    app.router.add_post("/simulator/api/send", simulator_send)
    app.router.add_get("/simulator/api/messages", simulator_messages)
    for channel in runtime.channels:
        app.router.add_routes(channel.routes(runtime))
    from consulta.bot.api import add_api

    add_api(app, runtime)
    app.on_startup.append(_settle_memory)
    return app


async def _settle_memory(_app: web.Application) -> None:
    """Everything loaded at start-up lives as long as the process: take it out of the garbage
    collector's sight, and collect young objects less often, so collections stay rare and short
    and do not stall webhooks (the tail latency). Measured with benchmarks/twilio_webhooks.py."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def bad_request(request: web.Request, reason: str, status: int = 400) -> web.Response:
    request.app[METRICS]["rejected"].labels(request.path).inc()
    return web.json_response({"error": reason}, status=status)


async def healthz(request: web.Request) -> web.Response:
    checks = await request.app[RUNTIME].health()
    healthy = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS]["registry"])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- simulator -----------------------------------------------------------------------------


async def simulator_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGES / "simulator.html")


async def dashboard_page(request: web.Request) -> web.FileResponse:
    """The page is public; every figure on it comes from /api/v1 with the staff token."""
    return web.FileResponse(PAGES / "dashboard.html")


async def simulator_flows(request: web.Request) -> web.Response:
    flows = request.app[RUNTIME].flows
    return web.json_response(
        [
            {
                "id": f.id,
                "version": f.version,
                "title": dict(f.title),
                "collects": f.collects,
                "default": f.default,
            }
            for f in sorted(flows.values(), key=lambda f: (not f.default, f.id))
        ]
    )


async def simulator_send(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return bad_request(request, "the body must be JSON")
    try:
        inbound = simulator.parse(body)
    except simulator.BadRequest as exc:
        return bad_request(request, str(exc))
    runtime = request.app[RUNTIME]
    request.app[METRICS]["inbound"].labels(simulator.CHANNEL).inc()
    await runtime.inbox.handle(inbound)  # inline: the page shows the reply right away
    after = body.get("after") if isinstance(body.get("after"), int) else 0
    return web.json_response({"messages": await _log(runtime, inbound.address, after)})


async def simulator_messages(request: web.Request) -> web.Response:
    session = request.query.get("session", "")
    if not session.isalnum() or not 8 <= len(session) <= 64:
        return bad_request(request, "session must be 8 to 64 letters or digits")
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        return bad_request(request, "after must be a whole number")
    return web.json_response({"messages": await _log(request.app[RUNTIME], session, after)})


async def _log(runtime: Runtime, session: str, after: int) -> list[dict[str, object]]:
    rows = await runtime.store.conversation_log(simulator.CHANNEL, session, after)
    result = []
    for message_id, direction, body, payload in rows:
        item: dict[str, object] = {"id": message_id, "direction": direction, "text": body or ""}
        if direction == "out":
            item["buttons"] = payload.get("buttons", [])
            item["expects"] = payload.get("expects")
        else:
            if payload.get("place"):
                item["location"] = payload["place"]
            if payload.get("payload"):
                item["payload"] = payload["payload"]
            if "start" in payload:
                item["start"] = payload["start"]
        result.append(item)
    return result
