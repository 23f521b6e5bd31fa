"""No secret and no resident in the logs: a whole WhatsApp and a whole Telegram conversation
through the real runtime, every logger at DEBUG, formatted as `consulta` formats its lines."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from consulta.bot.config import Settings, TelegramSettings, TwilioSettings
from consulta.bot.logs import (
    QUIET,
    REDACTED,
    PrivateFormatter,
    PrivateJsonFormatter,
    configure_logging,
    secrets_of,
)
from consulta.bot.server import build_app
from tests.adapters import test_telegram as tg
from tests.adapters import test_twilio as tw
from tests.adapters.loopback import sending_runtime
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import TwilioDouble

PHONE = tw.RESIDENT  # "+5217711234567"
FORBIDDEN = {
    "the bot token": tg.TOKEN,
    "the bot token's secret half": tg.TOKEN.split(":", 1)[1],
    "the Twilio auth token": tw.TOKEN,
    "the Telegram webhook secret": tg.SECRET,
    "the phone number": PHONE,
    "the phone number without +": PHONE[1:],
    "the WhatsApp address": f"whatsapp:{PHONE}",
    "the chat id": str(tg.CHAT),
}


class Captured:
    """Everything logged while a test runs, through the CLI's own handler and formatter."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self._handler: logging.Handler | None = None
        names = ["", *QUIET, "httpx"]
        self._levels = {name: logging.getLogger(name).level for name in names}

    def start(self, settings: Settings, log_format: Literal["text", "json"] = "text") -> None:
        self._handler = configure_logging(
            logging.DEBUG, secrets_of(settings), self.stream, log_format=log_format
        )

    def stop(self) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def loggers(self) -> set[str]:
        """The names of the loggers that wrote a line."""
        return set(re.findall(r"^\S+ \S+ [A-Z]+ ([\w.]+): ", self.text, re.M))


@pytest.fixture
def captured() -> Iterator[Captured]:
    capture = Captured()
    try:
        yield capture
    finally:
        capture.stop()


async def _whatsapp_conversation(phone: tw.Phone) -> None:
    phone.double.fail_next(400, 21211, "Invalid 'To' Phone Number")  # a logged failure too
    await phone.say("hola")
    for answer in ("1", "2", "1", "Centro", "1", "2", "1,3", "Se va el agua diario", "4"):
        assert await phone.say(answer)
    last = await phone.say(Latitude="20.1011", Longitude="-98.7591", Label="Plaza Juárez")
    assert last.startswith(tw.THANKS["es"])
    assert await phone.post(phone.form("hola", MessageSid="")) == 400  # a refused webhook too


async def _telegram_conversation(resident: tg.Resident) -> None:
    resident.double.fail_next(400, "Bad Request: can't parse entities")  # logged, as above
    assert await resident.post(resident.message(text="/start prioridades_centro")) == 200
    for index in (0, 1, 0):  # consent, age group, gender
        await resident.press(index)
    await resident.say("Santa Julia")
    await resident.press(2)
    await resident.press(0)
    await resident.say("No hay alumbrado")
    await resident.press(3)
    assert (await resident.share_location(20.1, -98.7)).startswith(tg.THANKS["es"])
    bad = resident.message(text="hola")
    bad["message"]["chat"] = {**tg.PRIVATE, "id": "abc"}
    assert await resident.post(bad) == 400


async def _both_conversations(
    settings: Settings, doubles: tuple[TwilioDouble, TelegramDouble], aiohttp_client: Any
) -> None:
    twilio, telegram = doubles
    async with sending_runtime(settings) as rt:
        client = await aiohttp_client(build_app(rt))
        await _whatsapp_conversation(tw.Phone(client, rt, twilio))
        await _telegram_conversation(tg.Resident(client, rt, telegram))
        assert len(await rt.store.submissions()) == 2


def _leaks(text: str) -> list[str]:
    return [what for what, value in FORBIDDEN.items() if value in text]


@pytest.fixture
def app_settings(settings: Settings, doubles: tuple[TwilioDouble, TelegramDouble]) -> Settings:
    twilio, telegram = doubles
    return settings.with_(
        twilio=tw.twilio_settings(twilio, sms_from=None),  # WhatsApp only
        telegram=tg.telegram_settings(telegram),
        public_url=tw.PUBLIC,
    )


async def test_a_whatsapp_and_a_telegram_conversation_leave_no_secret_in_the_logs(
    app_settings: Settings,
    doubles: tuple[TwilioDouble, TelegramDouble],
    aiohttp_client: Any,
    captured: Captured,
) -> None:
    captured.start(app_settings)
    await _both_conversations(app_settings, doubles, aiohttp_client)
    # The capture works: DEBUG lines of the libraries and our own lines are in it.
    loggers = captured.loggers()
    assert {"aiohttp.access", "consulta.bot.outbound"} <= loggers, captured.text
    assert re.search(r"^\S+ \S+ DEBUG ", captured.text, re.M) and "not sent" in captured.text
    assert _leaks(captured.text) == [], captured.text


async def test_a_library_turned_up_to_debug_still_shows_no_token(
    app_settings: Settings,
    doubles: tuple[TwilioDouble, TelegramDouble],
    aiohttp_client: Any,
    captured: Captured,
) -> None:
    """The redaction holds where the quieting is undone: httpx logs every Bot API URL."""
    captured.start(app_settings)
    telegram = doubles[1]
    async with sending_runtime(app_settings) as rt:
        logging.getLogger("httpx").setLevel(logging.DEBUG)  # after the channel quieted it
        client = await aiohttp_client(build_app(rt))
        await _telegram_conversation(tg.Resident(client, rt, telegram))
    httpx_lines = [line for line in captured.text.splitlines() if " httpx: " in line]
    assert any("/sendMessage" in line for line in httpx_lines), captured.loggers()
    assert all(f"/bot{REDACTED}/" in line for line in httpx_lines if "/bot" in line)
    assert tg.TOKEN not in captured.text and tg.TOKEN.split(":")[1] not in captured.text


async def test_json_lines_parse_and_leave_no_secret_and_no_resident(
    app_settings: Settings,
    doubles: tuple[TwilioDouble, TelegramDouble],
    aiohttp_client: Any,
    captured: Captured,
) -> None:
    """LOG_FORMAT=json: the same conversations, one JSON object a line, nothing leaked."""
    captured.start(app_settings, "json")
    await _both_conversations(app_settings, doubles, aiohttp_client)
    lines = [json.loads(line) for line in captured.text.splitlines()]
    assert len(lines) > 20, captured.text
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"aiohttp.access", "consulta.bot.outbound"} <= loggers, loggers
    assert any(line["level"] == "DEBUG" for line in lines)
    assert any("not sent" in line["message"] for line in lines)
    assert _leaks(captured.text) == [], captured.text


def test_a_json_line_carries_the_fields_and_is_redacted_like_a_text_line() -> None:
    formatter = PrivateJsonFormatter(secrets=["s3cr3t-token"])
    try:
        raise RuntimeError(
            "POST https://api.example/bots3cr3t-token/x failed\n"
            "DETAIL:  Key (channel, address)=(whatsapp, +5215550001) already exists."
        )
    except RuntimeError:
        record = logging.LogRecord(
            "consulta.bot.outbound",
            logging.ERROR,
            __file__,
            1,
            "url %s",
            ("/s3cr3t-token/",),
            sys.exc_info(),
        )
    record.extra_value = {"token": "s3cr3t-token"}  # passed with `extra=`: redacted too
    line = formatter.format(record)
    assert "\n" not in line  # one line
    parsed = json.loads(line)
    assert parsed["level"] == "ERROR" and parsed["logger"] == "consulta.bot.outbound"
    assert parsed["message"] == f"url /{REDACTED}/"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", parsed["time"])
    exception = parsed["exception"]
    assert exception.startswith("Traceback") and "RuntimeError: POST" in exception
    assert "DETAIL:  Key (" in exception and "already exists" in exception
    assert "+5215550001" not in line and "whatsapp, " not in line
    assert "s3cr3t-token" not in line and parsed["extra_value"] == {"token": REDACTED}
    plain = json.loads(formatter.format(logging.makeLogRecord({"msg": "hola", "name": "x"})))
    assert "exception" not in plain and plain["message"] == "hola"


def test_the_formatter_redacts_secrets_from_messages_arguments_and_tracebacks() -> None:
    formatter = PrivateFormatter("%(levelname)s %(message)s", secrets=["s3cr3t-token", "abc"])
    try:
        raise RuntimeError("POST https://api.example/bots3cr3t-token/x failed")
    except RuntimeError:
        record = logging.LogRecord(
            "httpx", logging.ERROR, __file__, 1, "url %s", ("/s3cr3t-token/",), sys.exc_info()
        )
    record.stack_info = "Stack (most recent call last): s3cr3t-token"
    line = formatter.format(record)
    assert "s3cr3t-token" not in line and line.count(REDACTED) >= 3
    short = PrivateFormatter("%(message)s", secrets=["abc"])
    assert short.format(logging.makeLogRecord({"msg": "abc"})) == "abc"  # too short to redact


def test_the_secrets_come_from_the_settings() -> None:
    settings = Settings(
        secret_key="the-secret-key",
        database_url="postgresql+asyncpg://consulta:db-password@db/consulta",
        redis_url="redis://:redis-password@cache:6379/0",
        twilio=TwilioSettings(account_sid="AC1", auth_token="twilio-auth"),
        telegram=TelegramSettings(bot_token="1:tok-secret-half", webhook_secret="hook-secret"),
    )
    assert set(secrets_of(settings)) == {
        "1:tok-secret-half",
        "tok-secret-half",
        "twilio-auth",
        base64.b64encode(b"AC1:twilio-auth").decode(),
        "hook-secret",
        "the-secret-key",
        "db-password",
        "redis-password",
    }
