"""Schemathesis over every operation of the staff API (`bot/openapi.yaml`), against the real web
process on a loopback port with an admin token, on SQLite and on PostgreSQL + Redis: valid and
invalid requests, a bounded number per operation; it must find no 5xx and no response that the
description does not allow (status, content type, headers, body)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from consulta.adapters.message import Inbound
from consulta.bot.api import PREFIX, openapi
from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.storage.staff import Staff
from tests.conftest import _shared

T = TypeVar("T")

schema = schemathesis.openapi.from_dict(openapi())


class Served:
    """The web process in a thread with an event loop of its own: schemathesis calls it
    synchronously, over real HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.runtime: Runtime | None = None
        self.url = self.token = ""

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    async def start(self, settings: Settings) -> None:
        self.runtime = runtime = await Runtime.create(settings, migrate=not settings.redis_url)
        for n in range(7):  # residents, so that pages, figures and contacts hold something
            address = f"+52177100000{n:02d}"
            await runtime.inbox.handle(
                Inbound("whatsapp", address, start="prioridades_centro", language="es")
            )
            for text in ("1", "2", "1", "Centro", "1", str(n % 3 + 1)):
                await runtime.inbox.handle(Inbound("whatsapp", address, text=text))
        self.token = await Staff(runtime.store).add("Adela Admin", "admin")
        self.runner = web.AppRunner(build_app(runtime), access_log=None)
        await self.runner.setup()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}{PREFIX}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.runtime is not None:
            await self.runtime.close()

    def close(self) -> None:
        try:
            self.run(self.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    folder: Path = tmp_path_factory.mktemp("schemathesis")
    server = Served()
    try:
        if request.param == "sqlite":
            config = Settings(
                database_url=f"sqlite+aiosqlite:///{folder / 'api.db'}",
                secret_key="test-secret",
                media_dir=str(folder / "media"),
                spool_dir=str(folder / "spool"),
            )
        else:
            config = server.run(_shared(request.getfixturevalue("pg_url"), folder))
        server.run(server.start(config))
        yield server
    finally:
        server.close()


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure here is a finding, not luck
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_described(case: schemathesis.Case, served: Served) -> None:
    # A broadcast the description allows can still name a flow that does not exist, a template
    # that is not configured or a time in the past, and a liaison's address a number that is
    # no phone number: the API refuses them with a 400 and a reason, by design. Every other
    # operation must accept whatever the description allows.
    creating = case.operation.method.upper() == "POST" and case.operation.path in (
        "/broadcasts",
        "/liaisons",
    )
    case.call_and_validate(
        base_url=served.url,
        headers={"Authorization": f"Bearer {served.token}"},
        timeout=30,
        excluded_checks=[positive_data_acceptance] if creating else [],
    )
