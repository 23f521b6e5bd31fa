"""Which channels this process runs: one line of registration per channel adapter."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from consulta.adapters import telegram, twilio
from consulta.adapters.message import Channel
from consulta.bot.config import Settings

__all__ = ["FACTORIES", "configured_channels"]

# Each entry builds the channels of one adapter from the settings: none when not configured.
FACTORIES: list[Callable[[Settings], Iterable[Channel]]] = [
    twilio.channels_from_settings,
    telegram.channels_from_settings,
]


def configured_channels(settings: Settings) -> list[Channel]:
    return [channel for build in FACTORIES for channel in build(settings)]
