"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from consulta.storage.db import migrate
from consulta.storage.models import Base


async def _compare(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()


def _differences(url: str) -> list[Any]:
    migrate(url)  # a no-op where the database is already at head
    return asyncio.run(_compare(url))


def test_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    assert _differences(f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}") == []


def test_postgres_schema_matches_the_models(pg_url: str) -> None:
    assert _differences(pg_url) == []
