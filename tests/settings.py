"""Where the tests find PostgreSQL and Redis (real servers on 127.0.0.1 by default)."""

import atexit
import os
import uuid

import redis

PG_ADMIN = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CLAIM = "consulta:test-run"
TOKEN = uuid.uuid4().hex
CLAIM_SECONDS = 3 * 3600


def _claim_redis_database() -> str:
    """A Redis database no other test run is using, so runs side by side never flush or read
    each other's keys. Claimed with SET NX, released when this run ends."""
    if os.environ.get("TEST_REDIS_URL"):
        return os.environ["TEST_REDIS_URL"]
    token = TOKEN
    for db in range(1, 14):  # 14 is the benchmarks'; 0 is what a local serve uses
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.set(CLAIM, token, nx=True, ex=CLAIM_SECONDS):
            atexit.register(_release, client, token)
            return f"redis://127.0.0.1:6379/{db}"
        client.close()
    raise RuntimeError("every Redis database 1-13 is claimed by another test run")


def _release(client: redis.Redis, token: str) -> None:
    if client.get(CLAIM) == token.encode():
        client.delete(CLAIM)
    client.close()


REDIS = _claim_redis_database()


async def reset_redis(client) -> None:  # type: ignore[no-untyped-def]
    """Empty this run's Redis database, keeping the claim on it."""
    await client.flushdb()
    await client.set(CLAIM, TOKEN, ex=CLAIM_SECONDS)
