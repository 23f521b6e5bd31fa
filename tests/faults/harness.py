"""What fault tests share: a TCP proxy that takes PostgreSQL or Redis away from the processes
under test and gives it back, and — from `benchmarks.stack`, where the fault benchmark uses
them too — real `consulta serve`/`worker` processes, a recording Twilio double, signed Twilio
webhooks, and a PostgreSQL cluster and redis-server of a test's own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from benchmarks.stack import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_URL,
    WHATSAPP_FROM,
    Delivery,
    PostgresCluster,
    Processes,
    RedisServer,
    TwilioDouble,
    TwilioWebhooks,
    consulta_env,
    free_port,
    wait_for_port,
)

__all__ = [
    "ACCOUNT_SID",
    "AUTH_TOKEN",
    "PUBLIC_URL",
    "WHATSAPP_FROM",
    "Delivery",
    "PostgresCluster",
    "Processes",
    "RedisServer",
    "TcpProxy",
    "TwilioDouble",
    "TwilioWebhooks",
    "consulta_env",
    "free_port",
    "wait_for_port",
]

CHUNK = 64 * 1024


class TcpProxy:
    """A loopback TCP proxy in front of `target_host:target_port`: point DATABASE_URL or
    REDIS_URL at `proxy.port`, then `cut()` to drop every open connection and refuse new ones
    (each is accepted and closed at once, as a dead server's port would), `restore()` to let
    them through again. The port stays the same throughout.

    In async tests, `async with TcpProxy(port) as proxy:` serves from the test's event loop;
    in sync tests (or to stay clear of the test's loop), `with TcpProxy(port) as proxy:` serves
    from a thread of its own. `cut()` and `restore()` work from any thread.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.is_cut = False
        self.accepted = 0  # connections accepted so far (including refused ones)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None

    @property
    def open_connections(self) -> int:
        return len(self._links)

    # serving from the current event loop ---------------------------------------------------

    async def start(self) -> int:
        """Listen on 127.0.0.1 (a free port unless one was given); returns the port."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._close_links()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # serving from a thread of its own ------------------------------------------------------

    def __enter__(self) -> TcpProxy:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="tcp-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    # the fault --------------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every open connection (both ends, at once) and refuse new ones."""
        self.is_cut = True
        self._in_loop(self._close_links)

    def restore(self) -> None:
        """Let new connections through again (the ones cut stay closed)."""
        self.is_cut = False

    def _in_loop(self, action: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                action()
                return
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(10)

    def _close_links(self) -> None:
        for downstream, upstream in list(self._links):
            downstream.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    # relaying ---------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.is_cut:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()  # nothing behind the proxy: as if refused
                return
            if self.is_cut:  # cut while connecting
                writer.transport.abort()
                up_writer.transport.abort()
                return
            link = (writer, up_writer)
            self._links.add(link)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._links.discard(link)
                writer.transport.abort()
                up_writer.transport.abort()
        finally:
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy until either side closes; then close the other side too (after what is
        already on its way)."""
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
