"""Fixtures for tests that talk to both remote APIs: the Twilio and Telegram doubles on loopback,
a runtime that sends through them, and a test client of the web process over that runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from tests.adapters import test_telegram as tg
from tests.adapters import test_twilio as tw
from tests.adapters.loopback import sending_runtime
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import TwilioDouble


@pytest.fixture
async def doubles() -> AsyncIterator[tuple[TwilioDouble, TelegramDouble]]:
    twilio, telegram = TwilioDouble(tw.SID, tw.TOKEN), TelegramDouble(tg.TOKEN)
    await twilio.start()
    await telegram.start()
    try:
        yield twilio, telegram
    finally:
        await twilio.stop()
        await telegram.stop()


@pytest.fixture
async def rt(
    settings: Settings, doubles: tuple[TwilioDouble, TelegramDouble]
) -> AsyncIterator[Runtime]:
    """A runtime that sends WhatsApp, SMS and Telegram replies to the doubles."""
    twilio, telegram = doubles
    async with sending_runtime(
        settings,
        twilio=tw.twilio_settings(twilio),
        telegram=tg.telegram_settings(telegram),
        public_url=tw.PUBLIC,
    ) as runtime:
        yield runtime


@pytest.fixture
async def client(rt: Runtime, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(build_app(rt))
