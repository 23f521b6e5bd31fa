"""The processes' log lines: one handler whose formatter keeps secrets (tokens, keys) and the row
values a database error quotes out of every line, tracebacks included — as text, or as one JSON
object a line (`LOG_FORMAT=json`) for a log collector."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr
from pythonjsonlogger.json import JsonFormatter

from consulta.bot.config import Settings

__all__ = [
    "QUIET",
    "REDACTED",
    "PrivateFormatter",
    "PrivateJsonFormatter",
    "configure_logging",
    "secrets_of",
]

REDACTED = "[redacted]"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Libraries whose records below these levels quote what residents and the bot said: SQL
# parameters (sqlalchemy at INFO, aiosqlite at DEBUG: phone numbers, chat ids, answers),
# request URLs holding the bot token (httpx at INFO), the Bot API's parameters (DEBUG).
QUIET = {
    "sqlalchemy.engine": logging.WARNING,
    "aiosqlite": logging.INFO,
    "httpx": logging.WARNING,
    "httpcore": logging.INFO,
    "telegram.Bot": logging.INFO,
    "twilio.http_client": logging.WARNING,
}
# The JSON lines' names for the record's attributes.
JSON_FIELDS = {
    "levelname": "level",
    "name": "logger",
    "exc_info": "exception",
    "stack_info": "stack",
}
# Shorter values would blank ordinary words and numbers of unrelated lines.
MIN_SECRET_LENGTH = 4


class PrivateFormatter(logging.Formatter):
    """Log lines without the row values a database error quotes (PostgreSQL's "DETAIL: Key
    (channel, address)=(whatsapp, +52…)"): a traceback must not carry a phone number; and
    without any of `secrets`, wherever they appear (a URL httpx logs, an exception's text).

    Args:
        fmt, datefmt, style: as for `logging.Formatter`.
        secrets: values replaced by "[redacted]" in every formatted line.
    """

    DETAIL = re.compile(r"(DETAIL:\s+Key \().*?\)=\(.*?\)", re.DOTALL)

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Any = "%",
        *,
        secrets: Iterable[str] = (),
    ) -> None:
        super().__init__(fmt, datefmt, style)
        # Longest first, so a secret containing another is blanked whole.
        kept = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len)
        self._secrets = re.compile("|".join(re.escape(s) for s in reversed(kept))) if kept else None

    def formatException(self, ei: Any) -> str:
        # Redacted here too: the record caches this text for every other handler.
        return self.redact(self.DETAIL.sub(r"\1…)=(…)", super().formatException(ei)))

    def formatMessage(self, record: logging.LogRecord) -> str:
        return self.DETAIL.sub(r"\1…)=(…)", super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))  # the message, its arguments, the stack

    def redact(self, text: str) -> str:
        """`text` with every configured secret replaced."""
        return self._secrets.sub(REDACTED, text) if self._secrets else text

    def private(self, text: str) -> str:
        """`text` without the row values of a database error, nor any secret."""
        return self.redact(self.DETAIL.sub(r"\1…)=(…)", text))


class PrivateJsonFormatter(JsonFormatter):
    """One JSON object a line — `time` (ISO 8601, UTC), `level`, `logger`, `message`, and
    `exception` (its traceback) when there is one — kept private as `PrivateFormatter` keeps
    the text lines: every value of the object, an `extra` one too, goes through the same
    redaction before it is encoded.

    Args:
        secrets: values replaced by "[redacted]" wherever they appear.
    """

    def __init__(self, *, secrets: Iterable[str] = ()) -> None:
        super().__init__(
            "{levelname}{name}{message}", style="{", timestamp="time", rename_fields=JSON_FIELDS
        )
        self._private = PrivateFormatter(secrets=secrets)

    def formatException(self, ei: Any) -> str:
        return self._private.formatException(ei)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        time = log_data.pop("time", None)  # first, as in the text lines
        return {"time": self._clean(time), **{k: self._clean(v) for k, v in log_data.items()}}

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._private.private(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {str(k): self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v) for v in value]
        return self._private.private(str(value))  # as the encoder would show it, redacted


def secrets_of(settings: Settings) -> list[str]:
    """The configured values no log line may show: every secret setting (a `SecretStr`, in
    any section), the bot token's secret half, the Twilio credentials as Basic auth carries
    them, and the passwords of the database and Redis URLs."""
    found = [secret.get_secret_value() for secret in _secrets_in(settings)]
    if settings.telegram.bot_token is not None:
        token = settings.telegram.bot_token.get_secret_value()
        found.append(token.partition(":")[2])  # the secret half, after the bot's public id
    twilio = settings.twilio
    if twilio.account_sid and twilio.auth_token is not None:
        pair = f"{twilio.account_sid}:{twilio.auth_token.get_secret_value()}"
        found.append(base64.b64encode(pair.encode()).decode())  # as in an Authorization header
    for url in (settings.database_url, settings.redis_url or ""):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        found.append(password or "")
    return [s for s in found if s]


def _secrets_in(model: BaseModel) -> Iterator[SecretStr]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield value
        elif isinstance(value, BaseModel):
            yield from _secrets_in(value)


def configure_logging(
    level: int,
    secrets: Iterable[str],
    stream: TextIO | None = None,
    *,
    log_format: Literal["text", "json"] = "text",
) -> logging.Handler:
    """Send every log record to `stream` (standard error) through a `PrivateFormatter` (or,
    with `log_format` "json", a `PrivateJsonFormatter`) that redacts `secrets`, with the root
    logger at `level`. The libraries that log values of residents' messages below WARNING are
    held at `QUIET` even when `level` is lower.

    Returns:
        the handler installed on the root logger.
    """
    handler = logging.StreamHandler(stream)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = PrivateJsonFormatter(secrets=secrets)
    else:
        formatter = PrivateFormatter(FORMAT, secrets=secrets)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for name, floor in QUIET.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(floor, level, logger.level))
    return handler
