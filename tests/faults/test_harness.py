"""The fault harness itself: the TCP proxy in front of the shared Redis, signed webhooks, and
a PostgreSQL cluster and redis-server of a test's own."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry
from twilio.request_validator import RequestValidator

from tests.faults.harness import (
    AUTH_TOKEN,
    PUBLIC_URL,
    PostgresCluster,
    RedisServer,
    TcpProxy,
    TwilioWebhooks,
)
from tests.settings import REDIS

REDIS_PORT = urlsplit(REDIS).port or 6379


def ping(port: int) -> bytes:
    """PING over a fresh raw connection: what the server (or the proxy) answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        return receive(sock)


def receive(sock: socket.socket) -> bytes:
    """What arrives next; b"" when the other side closed (or reset) the connection."""
    try:
        return sock.recv(64)
    except ConnectionResetError:
        return b""


def no_retries(port: int) -> redis.Redis:
    return redis.Redis(port=port, retry=Retry(NoBackoff(), 0), socket_timeout=5)


def test_bytes_flow_both_ways() -> None:
    with TcpProxy(REDIS_PORT) as proxy:
        assert ping(proxy.port) == b"+PONG\r\n"
        client = no_retries(proxy.port)
        try:
            big = b"x" * 300_000  # many chunks each way
            assert client.echo(big) == big
        finally:
            client.close()


def test_cut_closes_open_connections_and_refuses_new_ones() -> None:
    with TcpProxy(REDIS_PORT) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as held:
            held.sendall(b"PING\r\n")
            assert receive(held) == b"+PONG\r\n"
            assert proxy.open_connections == 1

            proxy.cut()

            assert receive(held) == b""  # closed under the client
            assert proxy.open_connections == 0
            assert ping(proxy.port) == b""  # accepted, then closed at once
            client = no_retries(proxy.port)
            try:
                with pytest.raises(redis.ConnectionError):
                    client.ping()
            finally:
                client.close()


def test_restore_lets_new_connections_through_on_the_same_port() -> None:
    with TcpProxy(REDIS_PORT) as proxy:
        port = proxy.port
        proxy.cut()
        assert ping(port) == b""
        proxy.restore()
        assert proxy.port == port
        assert ping(port) == b"+PONG\r\n"


async def test_from_the_test_event_loop_a_client_reconnects_after_restore() -> None:
    async with TcpProxy(REDIS_PORT) as proxy:
        client = aioredis.Redis(port=proxy.port, retry=Retry(NoBackoff(), 0), socket_timeout=5)
        try:
            assert await client.ping()
            proxy.cut()
            with pytest.raises(redis.ConnectionError):
                await client.ping()
            proxy.restore()
            assert await client.ping()  # a fresh connection from the pool
        finally:
            await client.aclose()


def test_nothing_behind_the_proxy_looks_like_a_dead_server() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        unused = placeholder.getsockname()[1]
    with TcpProxy(unused) as proxy:
        assert ping(proxy.port) == b""


def test_webhooks_are_signed_against_the_public_url() -> None:
    hooks = TwilioWebhooks("http://127.0.0.1:9")
    form = hooks.form("+5217700000001", "hola")
    signature = hooks.headers(form)["X-Twilio-Signature"]
    validator = RequestValidator(AUTH_TOKEN)
    assert validator.validate(PUBLIC_URL + "/webhooks/twilio", form, signature)
    assert not validator.validate(hooks.url, form, signature)  # not the address posted to
    assert form["From"] == "whatsapp:+5217700000001"
    assert form["MessageSid"] != hooks.form("+5217700000001", "hola")["MessageSid"]


def test_a_redis_server_of_our_own_comes_back_empty_on_the_same_port(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = no_retries(server.port)
        try:
            client.set("kept?", "1")
            server.kill()
            assert not server.ping()
            server.start()
            assert client.get("kept?") is None  # no persistence: a crash loses everything
        finally:
            client.close()
    finally:
        server.stop()


def test_a_postgres_cluster_of_our_own_keeps_its_data_across_a_stop() -> None:
    cluster = PostgresCluster()  # its own temp dir: the `postgres` user must reach it
    try:
        cluster.init()
        cluster.start()
        url = cluster.create_database("harness").replace("+asyncpg", "")

        async def query(sql: str) -> object:
            conn = await asyncpg.connect(url)
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        asyncio.run(query("CREATE TABLE t AS SELECT 42 AS answer"))
        cluster.stop()
        assert not cluster.running()
        with pytest.raises(OSError):
            asyncio.run(query("SELECT 1"))
        cluster.start()
        assert asyncio.run(query("SELECT answer FROM t")) == 42
    finally:
        cluster.destroy()
    assert not cluster.root.exists()
