"""Shared fixtures: every storage-touching test runs on SQLite + in-process state and on
PostgreSQL + Redis (real servers on 127.0.0.1; a test run fails, never skips, without them)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import hypothesis  # noqa: F401 - imported early: trio's plugin warns (an error here) when it is not
import pytest
import redis.asyncio as aioredis

from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.storage.db import migrate
from consulta.storage.models import Base
from tests.settings import PG_ADMIN, REDIS, reset_redis

TABLES = ", ".join(table.name for table in Base.metadata.sorted_tables)  # every table, always


def _blocking(function: Callable[..., Any], *args: Any) -> Any:
    """Run in a thread of its own: fixtures may be set up inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of this test run's own, migrated once."""
    name = f"consulta_test_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _blocking(asyncio.run, admin(f"DROP DATABASE IF EXISTS {name}"))
    _blocking(asyncio.run, admin(f"CREATE DATABASE {name}"))
    url = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + "/" + name
    _blocking(migrate, url)
    yield url
    _blocking(asyncio.run, admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def _reset_postgres(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    client = aioredis.from_url(REDIS)
    try:
        await reset_redis(client)
    finally:
        await client.aclose()


def _base(tmp_path: Path) -> Settings:
    return Settings(
        secret_key="test-secret",
        media_dir=str(tmp_path / "media"),
        spool_dir=str(tmp_path / "spool"),
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'consulta.db'}"
        return _base(tmp_path).with_(database_url=url)
    return await _shared(request.getfixturevalue("pg_url"), tmp_path)


@pytest.fixture
async def shared_settings(pg_url: str, tmp_path: Path) -> Settings:
    """PostgreSQL + Redis only: for what exists only when several processes share the work."""
    return await _shared(pg_url, tmp_path)


async def _shared(pg_url: str, tmp_path: Path) -> Settings:
    await _reset_postgres(pg_url)
    return _base(tmp_path).with_(database_url=pg_url, redis_url=REDIS)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = await Runtime.create(settings, migrate=settings.redis_url is None)
    try:
        yield rt
    finally:
        await rt.close()
