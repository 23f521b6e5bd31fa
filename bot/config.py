"""Settings (12-factor): one typed object read from the environment and an optional `.env`, with
a section per channel. Every variable is in the README and in .env.example."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Self
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from consulta.storage.db import DEFAULT_URL

__all__ = [
    "DEV_SECRET",
    "ConfigError",
    "QuietHours",
    "Settings",
    "TelegramSettings",
    "TwilioSettings",
]

DEV_SECRET = "consulta-dev-secret-change-me"
DEFAULT_TIMEZONE = "America/Mexico_City"
SECTIONS = ("twilio", "telegram")  # TWILIO_ACCOUNT_SID is `twilio.account_sid`
# Values an error message must not repeat: secrets, and URLs that may hold a password.
UNSHOWN = frozenset(
    {
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "TWILIO_AUTH_TOKEN",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_WEBHOOK_SECRET",
    }
)


class ConfigError(ValueError):
    """A variable is set to something Consulta cannot use; the message names it."""


class QuietHours(NamedTuple):
    """A daily range of local time, such as 21:00-08:00 (across midnight when start > end)."""

    start: time
    end: time

    def covers(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


# --- what each kind of value must look like -------------------------------------------------


def _either(words: Sequence[str]) -> str:
    return " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def _url(value: str, schemes: Sequence[str], *, show: bool = True) -> str:
    parts = urlsplit(value)
    if parts.scheme in schemes and (parts.netloc or parts.scheme == "unix"):
        return value
    allowed = _either([f"{s}://" for s in schemes])
    given = repr(value) if show else f"{parts.scheme}://…" if parts.scheme else "that"
    raise ValueError(f"must be a URL starting with {allowed}, not {given}")


def _web_url(value: str) -> str:
    return _url(value, ("https", "http")).rstrip("/")


def _redis_url(value: str) -> str:
    return _url(value, ("redis", "rediss", "unix"), show=False)


def _database_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    # The URLs platforms hand out name no driver: Consulta's are the asyncio ones.
    scheme = {"postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg"}.get(
        scheme, {"sqlite": "sqlite+aiosqlite"}.get(scheme, scheme)
    )
    if not sep or scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ValueError(
            "must be sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DATABASE, "
            f"not {scheme + '://…' if sep else 'that'}"
        )
    return f"{scheme}://{rest}"


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"must be a port number from 1 to 65535, not {value}")
    return value


def _port_or_off(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port number from 1 to 65535, or 0 for none, not {value}")
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _paths(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(p for p in value.split(os.pathsep) if p)
    return value


def _quiet_hours(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    found = re.fullmatch(r"\s*(\d{1,2}):(\d\d)\s*-\s*(\d{1,2}):(\d\d)\s*", value)
    try:
        if found is None:
            raise ValueError
        h1, m1, h2, m2 = map(int, found.groups())
        hours = QuietHours(time(h1, m1), time(h2, m2))
    except ValueError:
        raise ValueError(
            f"must be a range like 21:00-08:00 (or empty for none), not {value!r}"
        ) from None
    if hours.start == hours.end:
        raise ValueError(f"must start and end at different times, not {value!r}")
    return hours


def _templates(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        found = json.loads(value)
    except ValueError:
        found = None
    if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
        raise ValueError('must be JSON like {"reminder": {"es": "HX…", "en": "HX…"}}')
    return found


def _webhook_secret(value: SecretStr | None) -> SecretStr | None:
    # Telegram's own rule for secret_token; anything else is refused by setWebhook.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()):
        raise ValueError("may hold only letters, digits, _ and - (at most 256)")
    return value


WebUrl = Annotated[str, AfterValidator(_web_url)]
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # messages per second
QuietHoursSetting = Annotated[QuietHours | None, NoDecode, BeforeValidator(_quiet_hours)]


class Section(BaseModel):
    """What every part of the settings shares: immutable, and no unknown names."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class TwilioSettings(Section):
    """WhatsApp and SMS through Twilio (`TWILIO_*`): off unless the account SID and token are
    both set."""

    account_sid: str | None = None
    auth_token: SecretStr | None = None
    whatsapp_from: str | None = None  # whatsapp:+52…
    sms_from: str | None = None
    messaging_service_sid: str | None = None
    api_base_url: WebUrl = "https://api.twilio.com"
    whatsapp_rate: Rate = 10.0
    sms_rate: Rate = 1.0
    # Approved WhatsApp templates for messages outside the 24-hour window, by name and language.
    templates: Annotated[dict[str, dict[str, str]], NoDecode, BeforeValidator(_templates)] = {}

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token)


class TelegramSettings(Section):
    """The Telegram bot (`TELEGRAM_*`): off unless the bot token is set."""

    bot_token: SecretStr | None = None
    webhook_secret: Annotated[SecretStr | None, AfterValidator(_webhook_secret)] = None
    api_base_url: WebUrl = "https://api.telegram.org"
    polling: bool = False  # long polling instead of a webhook
    chat_rate: Rate = 1.0  # messages per second in one private chat

    @property
    def configured(self) -> bool:
        return self.bot_token is not None


class Settings(Section):
    """Everything a Consulta process is configured with. Field names are the variables' names
    in lower case (a section's name is their prefix: `twilio.account_sid` is
    TWILIO_ACCOUNT_SID). Build it with `from_env()`; `with_()` makes a variant."""

    port: Annotated[int, AfterValidator(_port)] = 8080
    # The worker's own /metrics and /healthz; 0: none. Apart from PORT's 8080 (and 8081, a
    # local Bot API server's), so that `serve` and a worker on one machine don't collide.
    metrics_port: Annotated[int, AfterValidator(_port_or_off)] = 9464
    database_url: Annotated[str, AfterValidator(_database_url)] = DEFAULT_URL
    redis_url: Annotated[str, AfterValidator(_redis_url)] | None = None
    public_url: str = Field("", validate_default=True)  # default: http://localhost:$PORT
    default_language: Annotated[Literal["es", "en", "fr"], BeforeValidator(_lower)] = "es"
    conversation_idle_minutes: int = Field(24 * 60, ge=1)
    flows_path: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_paths)] = ()
    media_dir: str = "media"
    spool_dir: str = "spool"
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    timezone: ZoneInfo = Field(default_factory=lambda: ZoneInfo(DEFAULT_TIMEZONE))
    broadcast_quiet_hours: QuietHoursSetting = QuietHours(time(21), time(8))
    twilio: TwilioSettings = TwilioSettings()
    telegram: TelegramSettings = TelegramSettings()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str, info: ValidationInfo) -> str:
        return _web_url(value or f"http://localhost:{info.data.get('port', 8080)}")

    @property
    def idle_timeout(self) -> timedelta:
        """Silence after which a returning resident is offered to resume."""
        return timedelta(minutes=self.conversation_idle_minutes)

    @property
    def development_key(self) -> bool:
        return self.secret_key.get_secret_value() == DEV_SECRET

    @classmethod
    def from_env(cls, env_file: str | Path | None = ".env") -> Settings:
        """The settings of this process: the environment, then `env_file` (in the working
        folder) for what the environment leaves unset, then the defaults.

        Raises:
            ConfigError: naming each variable set to something unusable, and what is wrong.
        """
        try:
            loaded = _Environment(_env_file=env_file)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise ConfigError(explain(exc)) from None
        except SettingsError as exc:  # a value pydantic-settings could not even decode
            raise ConfigError(str(exc)) from None
        return cls.model_construct(loaded.model_fields_set, **dict(loaded))

    def with_(self, **changes: Any) -> Self:
        """A copy with `changes` (field names, sections whole), validated like the original.
        A PUBLIC_URL that was not given follows a changed port."""
        values = dict(self)
        if "public_url" not in self.model_fields_set:
            del values["public_url"]
        return self.model_validate({**values, **changes})

    def check_production(self) -> None:
        """Refuse what a shared deployment must never run with (`serve`, `worker`).

        Raises:
            ConfigError: PostgreSQL with the development SECRET_KEY, with which anyone could
                recompute residents' pseudonymous ids.
        """
        if self.database_url.startswith("postgresql") and self.development_key:
            raise ConfigError(
                "SECRET_KEY must be set to a long random value when DATABASE_URL is PostgreSQL "
                "(e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`), "
                "and never changed afterwards: the development key makes residents' "
                "pseudonymous ids guessable"
            )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in ("database_url", "redis_url") and isinstance(value, str):
                value = _without_password(value)
            yield name, value


class _Environment(Settings, BaseSettings):
    """`Settings` as the environment and a .env file give them. Kept apart so that building a
    `Settings` by hand (tests, benchmarks) reads nothing from the process."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        # TWILIO_WHATSAPP_RATE: the section `twilio`, its field `whatsapp_rate`.
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _Ours(env_settings), _Ours(dotenv_settings))


class _Ours(PydanticBaseSettingsSource):
    """What a source (the environment, the .env file) says about our variables: an empty one
    is unset (`X=` leaves X to the next source, then the default), except where empty means
    something; and the TWILIO_… and TELEGRAM_… variables we don't know (TWILIO_REGION, read by
    the twilio library itself) are not ours to refuse."""

    KEEP_EMPTY = frozenset({"broadcast_quiet_hours"})  # empty: no quiet hours at all

    def __init__(self, source: PydanticBaseSettingsSource) -> None:
        super().__init__(source.settings_cls)
        self.source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.source.get_field_value(field, field_name)

    def _set_current_state(self, state: dict[str, Any]) -> None:
        super()._set_current_state(state)
        self.source._set_current_state(state)

    def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
        super()._set_settings_sources_data(states)
        self.source._set_settings_sources_data(states)

    def __call__(self) -> dict[str, Any]:
        found = {k: v for k, v in self.source().items() if v != "" or k in self.KEEP_EMPTY}
        for name in SECTIONS:
            if isinstance(found.get(name), dict):
                known = type(Settings.model_fields[name].default).model_fields
                found[name] = {k: v for k, v in found[name].items() if k in known and v != ""}
        return found


# --- errors as a person reads them ------------------------------------------------------------


def explain(error: ValidationError) -> str:
    """Each problem of `error` as "VARIABLE what is wrong", one per variable."""
    said: dict[str, str] = {}
    for detail in error.errors():
        name = variable(detail["loc"])
        said.setdefault(name, f"{name} {_problem(detail, show=name not in UNSHOWN)}")
    return "; ".join(said.values())


def variable(loc: tuple[int | str, ...]) -> str:
    """The variable a pydantic error location stands for: ("twilio", "sms_rate") is
    TWILIO_SMS_RATE."""
    names = [part for part in loc if isinstance(part, str)][:2]
    if not names:
        return "the settings"
    if names[0] not in SECTIONS:
        names = names[:1]
    return "_".join(names).upper()


def _problem(detail: ErrorDetails, *, show: bool) -> str:
    kind, ctx = detail["type"], detail.get("ctx", {})
    given = f", not {detail['input']!r}" if show else ""
    if kind == "value_error":  # our own validators: they say what was given, when they may
        return str(ctx["error"])
    if kind.startswith("int_"):
        return f"must be a whole number{given}"
    if kind.startswith("float_"):
        return f"must be a number{given}"
    if kind == "finite_number":
        return f"must be a finite number{given}"
    if kind == "bool_parsing":
        return f"must be 1 or 0{given}"
    if kind == "literal_error":
        return f"must be {str(ctx['expected']).replace(chr(39), '')}{given}"
    if kind == "zoneinfo_str":
        return f"must be an IANA time zone such as {DEFAULT_TIMEZONE}{given}"
    if kind == "greater_than":
        return f"must be above {ctx['gt']:g}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}{given}"
    if kind == "extra_forbidden":
        return "is not a setting"
    return f"is not usable: {detail['msg']}"


def _without_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
