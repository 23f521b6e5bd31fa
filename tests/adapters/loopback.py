"""What the channel tests share: a runtime that sends while it runs, and doubles on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime


@asynccontextmanager
async def sending_runtime(settings: Settings, **changes: Any) -> AsyncIterator[Runtime]:
    """A runtime on `settings` with `changes` (a channel's section, the public URL…) whose
    outbox sends until the block ends."""
    runtime = await Runtime.create(settings.with_(**changes), migrate=settings.redis_url is None)
    stop = asyncio.Event()
    sending = asyncio.create_task(runtime.outbox.run(stop, concurrency=2))
    try:
        yield runtime
    finally:
        stop.set()
        await sending
        await runtime.close()


class LoopbackDouble:
    """A test double of a remote API, served on 127.0.0.1 on a free port."""

    url: str = ""
    _runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
