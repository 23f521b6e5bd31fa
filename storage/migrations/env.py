"""Alembic environment: runs the migrations over the async engine of `sqlalchemy.url`."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from consulta.storage.db import connect
from consulta.storage.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several web processes may start at once on an empty database: one migrates.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(732541)")
        context.run_migrations()


async def _run_async() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:  # storage.db.alembic_config always sets it
        raise RuntimeError("no sqlalchemy.url in the Alembic configuration")
    engine = connect(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
