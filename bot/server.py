"""The web process (`consulta serve`): one root application with health, metrics, the channels'
webhooks and the staff pages; two sub-applications behind staff tokens — the staff API
(`/api/v1`, in `api`) and the simulator's API (`/simulator/api`, here) — and Open311
(`/open311/v2`, in `open311`), for the city's other systems.

The process keeps no state of its own, so several of them can run side by side on one Redis and
one PostgreSQL.
"""

from __future__ import annotations

import gc
import json
from importlib.resources import files
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from consulta.adapters import simulator
from consulta.bot.api import PREFIX as API_PREFIX
from consulta.bot.api import build_api
from consulta.bot.metrics import CONTENT_TYPE
from consulta.bot.open311 import PREFIX as OPEN311_PREFIX
from consulta.bot.open311 import build_open311
from consulta.bot.runtime import Runtime
from consulta.bot.web import (
    RUNTIME,
    error,
    route_name,
    staff_app,
    unavailable,
)

__all__ = ["MAX_BODY", "SIMULATOR_PREFIX", "build_app", "build_simulator_api"]

PAGES = Path(str(files("consulta.bot") / "pages"))  # package data
MAX_BODY = 256 * 1024  # webhooks are small; anything larger is refused with 413
SIMULATOR_PREFIX = "/simulator/api"
MAX_ID = 2**53  # message ids are far below; anything larger is no message id


@web.middleware
async def rejections(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every request refused with a 4xx, by the route it matched (never its path: a
    path may hold a resident's address)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if 400 <= exc.status < 500:
            _rejected(request)
        raise
    if 400 <= response.status < 500:
        _rejected(request)
    return response


def _rejected(request: web.Request) -> None:
    request.config_dict[RUNTIME].metrics.rejected.labels(route_name(request)).inc()


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[rejections, unavailable])
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/simulator", simulator_page)
    app.router.add_get("/dashboard", dashboard_page)
    for channel in runtime.channels:
        app.router.add_routes(channel.routes(runtime))
    app.add_subapp(API_PREFIX, build_api(runtime))
    app.add_subapp(SIMULATOR_PREFIX, build_simulator_api(runtime))
    app.add_subapp(OPEN311_PREFIX, build_open311(runtime))
    app.on_startup.append(_settle_memory)
    return app


async def _settle_memory(_app: web.Application) -> None:
    """Everything loaded at start-up lives as long as the process: take it out of the garbage
    collector's sight, and collect young objects less often, so collections stay rare and short
    and do not stall webhooks (the tail latency). Measured with benchmarks/twilio_webhooks.py."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def healthz(request: web.Request) -> web.Response:
    checks = await request.app[RUNTIME].health()
    healthy = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503
    )


async def metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def simulator_page(request: web.Request) -> web.FileResponse:
    """The page is public; it asks for a staff token, and its API needs one."""
    return web.FileResponse(PAGES / "simulator.html")


async def dashboard_page(request: web.Request) -> web.FileResponse:
    """The page is public; every figure on it comes from /api/v1 with the staff token."""
    return web.FileResponse(PAGES / "dashboard.html")


# --- the simulator's API (/simulator/api) --------------------------------------------------


def build_simulator_api(runtime: Runtime) -> web.Application:
    """The simulator's API: any staff token previews flows; errors are JSON."""
    api = staff_app(runtime)
    api.router.add_get("/flows", simulator_flows)
    api.router.add_post("/send", simulator_send)
    api.router.add_get("/messages", simulator_messages)
    return api


async def simulator_flows(request: web.Request) -> web.Response:
    flows = request.config_dict[RUNTIME].flows
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
        raise error(web.HTTPBadRequest, "the body must be JSON") from None
    try:
        inbound = simulator.parse(body)
    except simulator.BadRequest as exc:
        raise error(web.HTTPBadRequest, str(exc)) from None
    runtime = request.config_dict[RUNTIME]
    received = await runtime.inbox.handle(inbound)  # inline: the page shows the reply right away
    outcome = "duplicate" if received.duplicate else "recorded"
    runtime.metrics.inbound.labels(simulator.CHANNEL, outcome).inc()
    after = body.get("after")
    after = after if isinstance(after, int) and abs(after) <= MAX_ID else 0
    return web.json_response({"messages": await _log(runtime, inbound.address, after)})


async def simulator_messages(request: web.Request) -> web.Response:
    session = request.query.get("session", "")
    if not session.isalnum() or not 8 <= len(session) <= 64:
        raise error(web.HTTPBadRequest, "session must be 8 to 64 letters or digits")
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        after = MAX_ID + 1
    if abs(after) > MAX_ID:
        raise error(web.HTTPBadRequest, "after must be a whole number")
    runtime = request.config_dict[RUNTIME]
    return web.json_response({"messages": await _log(runtime, session, after)})


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
