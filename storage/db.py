"""Database connection and migrations: SQLite by default, PostgreSQL through asyncpg."""

from __future__ import annotations

import asyncio
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["DEFAULT_URL", "connect", "migrate", "migrate_async"]

DEFAULT_URL = "sqlite+aiosqlite:///consulta.db"
MIGRATIONS = Path(str(files("consulta.storage") / "migrations"))  # package data


def connect(url: str = DEFAULT_URL, **kwargs: object) -> AsyncEngine:
    """An async engine. SQLite gets WAL, foreign keys and a busy timeout for concurrent use."""
    parsed = make_url(url)
    # Statement parameters hold addresses and answers: never in an error message or a log.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    # Recycle rather than ping on every checkout: a ping is one more round trip per query.
    kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine(url, **kwargs)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str = DEFAULT_URL, revision: str = "head") -> None:
    """Apply migrations (blocking; runs its own event loop inside Alembic's env.py)."""
    command.upgrade(alembic_config(url), revision)


async def migrate_async(url: str = DEFAULT_URL) -> None:
    """`migrate` from inside a running event loop."""
    await asyncio.to_thread(migrate, url)
