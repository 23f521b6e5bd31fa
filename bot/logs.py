"""The processes' log lines: one handler whose formatter keeps secrets (tokens, keys) and the row
values a database error quotes out of every line, tracebacks included."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import urlsplit

from consulta.bot.config import Settings

__all__ = ["QUIET", "REDACTED", "PrivateFormatter", "configure_logging", "secrets_of"]

REDACTED = "[redacted]"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Variables whose values never belong in a log line, whichever part of the code reads them.
SECRET_VARIABLES = (
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_WEBHOOK_SECRET",
    "TWILIO_AUTH_TOKEN",
    "SECRET_KEY",
    "STAFF_TOKEN",
)
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


def secrets_of(settings: Settings) -> list[str]:
    """The configured values no log line may show: tokens (and the Twilio credentials as Basic
    auth carries them), keys, and the passwords of the database and Redis URLs."""
    env = settings.env
    found = [settings.secret_key, settings.staff_token or ""]
    found += [env.get(name, "") for name in SECRET_VARIABLES]
    bot_token = env.get("TELEGRAM_BOT_TOKEN", "")
    found.append(bot_token.partition(":")[2])  # the secret half, after the bot's public id
    if env.get("TWILIO_ACCOUNT_SID") and env.get("TWILIO_AUTH_TOKEN"):
        pair = f"{env['TWILIO_ACCOUNT_SID']}:{env['TWILIO_AUTH_TOKEN']}"
        found.append(base64.b64encode(pair.encode()).decode())  # as in an Authorization header
    for url in (settings.database_url, settings.redis_url or ""):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        found.append(password or "")
    return [s for s in found if s]


def configure_logging(
    level: int, secrets: Iterable[str], stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to `stream` (standard error) through a `PrivateFormatter` that
    redacts `secrets`, with the root logger at `level`. The libraries that log values of
    residents' messages below WARNING are held at `QUIET` even when `level` is lower.

    Returns:
        the handler installed on the root logger.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PrivateFormatter(FORMAT, secrets=secrets))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for name, floor in QUIET.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(floor, level, logger.level))
    return handler
