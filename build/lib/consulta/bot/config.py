"""Settings from the environment (12-factor): each variable is in README and .env.example."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from consulta.storage.db import DEFAULT_URL

__all__ = ["ConfigError", "Settings"]

DEV_SECRET = "consulta-dev-secret-change-me"


class ConfigError(ValueError):
    """A variable is set to something Consulta cannot use."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    database_url: str = DEFAULT_URL
    redis_url: str | None = None
    public_url: str = "http://localhost:8080"
    default_language: str = "es"
    idle_timeout: timedelta = timedelta(hours=24)
    flows_path: tuple[str, ...] = ()
    media_dir: str = "media"
    spool_dir: str = "spool"
    secret_key: str = DEV_SECRET
    staff_token: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        port = _int(env, "PORT", 8080)
        language = env.get("DEFAULT_LANGUAGE", "es").strip().lower() or "es"
        if language not in ("es", "en", "fr"):
            raise ConfigError(f"DEFAULT_LANGUAGE must be es, en or fr, not {language!r}")
        flows = tuple(p for p in env.get("FLOWS_PATH", "").split(os.pathsep) if p)
        return cls(
            port=port,
            database_url=env.get("DATABASE_URL") or DEFAULT_URL,
            redis_url=env.get("REDIS_URL") or None,
            public_url=(env.get("PUBLIC_URL") or f"http://localhost:{port}").rstrip("/"),
            default_language=language,
            idle_timeout=timedelta(minutes=_int(env, "CONVERSATION_IDLE_MINUTES", 24 * 60)),
            flows_path=flows,
            media_dir=env.get("MEDIA_DIR") or "media",
            spool_dir=env.get("SPOOL_DIR") or "spool",
            secret_key=env.get("SECRET_KEY") or DEV_SECRET,
            staff_token=env.get("STAFF_TOKEN") or None,
            env=env,
        )
