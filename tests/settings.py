"""Where the tests find PostgreSQL and Redis (real servers on 127.0.0.1 by default)."""

import os

PG_ADMIN = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# A Redis database of this run's own, so parallel runs do not flush each other's keys.
REDIS = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{1 + os.getpid() % 15}")
