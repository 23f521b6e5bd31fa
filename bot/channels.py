"""Which channels this process runs: one line of registration per channel adapter, and the
pacing they share (one send cap per sender across every process when Redis is configured)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from consulta.adapters import telegram, twilio
from consulta.adapters.delivery import LocalPacing, Pacing
from consulta.adapters.message import Channel
from consulta.bot.config import Settings
from consulta.storage.limiter import RedisPacing
from consulta.storage.state import redis_client

__all__ = ["FACTORIES", "close_pacing", "configured_channels", "open_pacing"]

# Each entry builds the channels of one adapter from the settings: none when not configured.
FACTORIES: list[Callable[[Settings, Pacing | None], Iterable[Channel]]] = [
    twilio.channels_from_settings,
    telegram.channels_from_settings,
]


def configured_channels(settings: Settings, pacing: Pacing | None = None) -> list[Channel]:
    """The channels the settings configure, all paced by `pacing` (each in this process alone
    when None)."""
    return [channel for build in FACTORIES for channel in build(settings, pacing)]


def open_pacing(settings: Settings) -> Pacing:
    """Shared through Redis when it is configured, else this process's own."""
    if not settings.redis_url:
        return LocalPacing()
    return RedisPacing(redis_client(settings.redis_url, max_connections=8), fallback=LocalPacing())


async def close_pacing(pacing: Pacing | None) -> None:
    if isinstance(pacing, RedisPacing):
        await pacing.close()
