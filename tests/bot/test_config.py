"""Settings as a process reads them: every variable, its default, the .env file, and a bad
value stopping start-up with the variable's name and what is wrong."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from consulta.bot.config import (
    DEV_SECRET,
    ConfigError,
    QuietHours,
    Settings,
    TelegramSettings,
    TwilioSettings,
)

EVERY_VARIABLE = {
    "PORT": "9090",
    "METRICS_PORT": "9091",
    "DATABASE_URL": "postgresql+asyncpg://consulta:db-password@db.internal/consulta",
    "REDIS_URL": "redis://:redis-password@cache:6379/0",
    "PUBLIC_URL": "https://consulta.example.gob.mx/",
    "DEFAULT_LANGUAGE": "fr",
    "CONVERSATION_IDLE_MINUTES": "90",
    "FLOWS_PATH": "flows/a.yaml:/srv/flows",
    "MEDIA_DIR": "/srv/media",
    "SPOOL_DIR": "/srv/spool",
    "SECRET_KEY": "a-long-random-production-key",
    "LOG_FORMAT": "json",
    "TIMEZONE": "America/Monterrey",
    "BROADCAST_QUIET_HOURS": "22:30-07:15",
    "TWILIO_ACCOUNT_SID": "AC0123",
    "TWILIO_AUTH_TOKEN": "twilio-auth-token",
    "TWILIO_WHATSAPP_FROM": "whatsapp:+5213300000000",
    "TWILIO_SMS_FROM": "+5213300000001",
    "TWILIO_MESSAGING_SERVICE_SID": "MG0123",
    "TWILIO_API_BASE_URL": "https://twilio-proxy.example/",
    "TWILIO_WHATSAPP_RATE": "20",
    "TWILIO_SMS_RATE": "0.5",
    "TWILIO_TEMPLATES": '{"reminder": {"es": "HXes", "fr": "HXfr"}}',
    "TELEGRAM_BOT_TOKEN": "123:telegram-token",
    "TELEGRAM_WEBHOOK_SECRET": "hook_secret-1",
    "TELEGRAM_API_BASE_URL": "http://127.0.0.1:8081",
    "TELEGRAM_POLLING": "1",
    "TELEGRAM_CHAT_RATE": "2",
}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A process with none of our variables set, in an empty working folder."""
    for name in [*EVERY_VARIABLE, "STAFF_TOKEN"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _error(environ: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        environ.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env()
    return str(refused.value)


def test_nothing_set_is_the_local_default(environ: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert settings == Settings()
    assert settings.port == 8080 and settings.public_url == "http://localhost:8080"
    assert settings.metrics_port == 9464
    assert settings.database_url == "sqlite+aiosqlite:///consulta.db"
    assert settings.redis_url is None and settings.flows_path == ()
    assert settings.default_language == "es" and settings.idle_timeout == timedelta(days=1)
    assert (settings.media_dir, settings.spool_dir) == ("media", "spool")
    assert settings.secret_key.get_secret_value() == DEV_SECRET and settings.development_key
    assert settings.log_format == "text"
    assert settings.timezone == ZoneInfo("America/Mexico_City")
    assert settings.broadcast_quiet_hours == QuietHours(time(21), time(8))
    assert settings.twilio == TwilioSettings() and not settings.twilio.configured
    assert settings.telegram == TelegramSettings() and not settings.telegram.configured
    assert settings.twilio.api_base_url == "https://api.twilio.com"
    assert (settings.twilio.whatsapp_rate, settings.twilio.sms_rate) == (10, 1)
    assert settings.telegram.api_base_url == "https://api.telegram.org"
    assert not settings.telegram.polling and settings.telegram.chat_rate == 1


def test_every_variable_is_read(environ: pytest.MonkeyPatch) -> None:
    for name, value in EVERY_VARIABLE.items():
        environ.setenv(name, value)
    settings = Settings.from_env()
    assert settings.port == 9090 and settings.metrics_port == 9091
    assert settings.database_url == EVERY_VARIABLE["DATABASE_URL"]
    assert settings.redis_url == EVERY_VARIABLE["REDIS_URL"]
    assert settings.public_url == "https://consulta.example.gob.mx"
    assert settings.default_language == "fr"
    assert settings.idle_timeout == timedelta(minutes=90)
    assert settings.flows_path == ("flows/a.yaml", "/srv/flows")
    assert (settings.media_dir, settings.spool_dir) == ("/srv/media", "/srv/spool")
    assert settings.secret_key.get_secret_value() == "a-long-random-production-key"
    assert not settings.development_key
    assert settings.log_format == "json"
    assert settings.timezone == ZoneInfo("America/Monterrey")
    assert settings.broadcast_quiet_hours == QuietHours(time(22, 30), time(7, 15))
    twilio = settings.twilio
    assert twilio.configured and twilio.account_sid == "AC0123"
    assert twilio.auth_token is not None
    assert twilio.auth_token.get_secret_value() == "twilio-auth-token"
    assert (twilio.whatsapp_from, twilio.sms_from) == ("whatsapp:+5213300000000", "+5213300000001")
    assert twilio.messaging_service_sid == "MG0123"
    assert twilio.api_base_url == "https://twilio-proxy.example"
    assert (twilio.whatsapp_rate, twilio.sms_rate) == (20, 0.5)
    assert twilio.templates == {"reminder": {"es": "HXes", "fr": "HXfr"}}
    telegram = settings.telegram
    assert telegram.configured and telegram.bot_token is not None
    assert telegram.bot_token.get_secret_value() == "123:telegram-token"
    assert telegram.webhook_secret is not None
    assert telegram.webhook_secret.get_secret_value() == "hook_secret-1"
    assert telegram.api_base_url == "http://127.0.0.1:8081"
    assert telegram.polling and telegram.chat_rate == 2


def test_an_empty_variable_is_unset_but_empty_quiet_hours_are_none(
    environ: pytest.MonkeyPatch,
) -> None:
    for name in EVERY_VARIABLE:
        environ.setenv(name, "")
    settings = Settings.from_env()
    assert settings.with_(broadcast_quiet_hours=QuietHours(time(21), time(8))) == Settings()
    assert settings.broadcast_quiet_hours is None  # empty: no quiet hours


def test_the_public_url_follows_the_port(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("PORT", "8500")
    settings = Settings.from_env()
    assert settings.public_url == "http://localhost:8500"
    assert settings.with_(port=8600).public_url == "http://localhost:8600"
    given = settings.with_(public_url="https://example.org")
    assert given.with_(port=8700).public_url == "https://example.org"


def test_a_dot_env_file_in_the_working_folder_is_read(
    environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "# a comment\nPORT=9100\nTELEGRAM_BOT_TOKEN=1:from-the-file\nTWILIO_SMS_RATE=\n"
        "NOT_OURS=whatever\nTWILIO_REGION=au1\n",
        encoding="utf-8",
    )
    settings = Settings.from_env()
    assert settings.port == 9100 and settings.public_url == "http://localhost:9100"
    assert settings.telegram.bot_token is not None
    assert settings.telegram.bot_token.get_secret_value() == "1:from-the-file"
    assert settings.twilio.sms_rate == 1
    assert Settings.from_env(env_file=None).port == 8080


def test_the_environment_beats_the_dot_env_file(
    environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "PORT=9100\nDEFAULT_LANGUAGE=fr\nTWILIO_ACCOUNT_SID=ACfile\nTWILIO_AUTH_TOKEN=file\n"
        "BROADCAST_QUIET_HOURS=22:00-07:00\n",
        encoding="utf-8",
    )
    environ.setenv("DEFAULT_LANGUAGE", "EN")
    environ.setenv("TWILIO_AUTH_TOKEN", "from-the-environment")
    environ.setenv("PORT", "")  # unset: the file's value stands
    environ.setenv("BROADCAST_QUIET_HOURS", "")  # set, to none
    settings = Settings.from_env()
    assert settings.default_language == "en" and settings.port == 9100
    assert settings.twilio.account_sid == "ACfile"  # one section from both sources
    assert settings.twilio.auth_token is not None
    assert settings.twilio.auth_token.get_secret_value() == "from-the-environment"
    assert settings.broadcast_quiet_hours is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "abc", "PORT must be a whole number, not 'abc'"),
        ("PORT", "70000", "PORT must be a port number from 1 to 65535, not 70000"),
        ("PORT", "0", "PORT must be a port number from 1 to 65535, not 0"),
        ("METRICS_PORT", "-1", "METRICS_PORT must be a port number from 1 to 65535, or 0 for"),
        ("METRICS_PORT", "http", "METRICS_PORT must be a whole number, not 'http'"),
        ("DEFAULT_LANGUAGE", "de", "DEFAULT_LANGUAGE must be es, en or fr, not 'de'"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be text or json, not 'xml'"),
        ("CONVERSATION_IDLE_MINUTES", "0", "CONVERSATION_IDLE_MINUTES must be at least 1"),
        ("CONVERSATION_IDLE_MINUTES", "1.5", "CONVERSATION_IDLE_MINUTES must be a whole number"),
        ("TIMEZONE", "Mars/Base", "TIMEZONE must be an IANA time zone"),
        ("BROADCAST_QUIET_HOURS", "9-5", "BROADCAST_QUIET_HOURS must be a range like 21:00-08:00"),
        ("BROADCAST_QUIET_HOURS", "25:00-08:00", "BROADCAST_QUIET_HOURS must be a range like"),
        ("BROADCAST_QUIET_HOURS", "08:00-08:00", "BROADCAST_QUIET_HOURS must start and end"),
        ("PUBLIC_URL", "consulta.example.org", "PUBLIC_URL must be a URL starting with https://"),
        ("DATABASE_URL", "mysql://root@db/consulta", "DATABASE_URL must be sqlite+aiosqlite:///"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL must be a URL starting with redis://"),
        ("TWILIO_WHATSAPP_RATE", "0", "TWILIO_WHATSAPP_RATE must be above 0"),
        ("TWILIO_SMS_RATE", "-1", "TWILIO_SMS_RATE must be above 0"),
        ("TWILIO_SMS_RATE", "fast", "TWILIO_SMS_RATE must be a number, not 'fast'"),
        ("TWILIO_API_BASE_URL", "api.twilio.com", "TWILIO_API_BASE_URL must be a URL starting"),
        ("TWILIO_TEMPLATES", "[1]", 'TWILIO_TEMPLATES must be JSON like {"reminder"'),
        ("TWILIO_TEMPLATES", '{"reminder": "HX1"}', "TWILIO_TEMPLATES must be JSON like"),
        ("TELEGRAM_CHAT_RATE", "0", "TELEGRAM_CHAT_RATE must be above 0"),
        ("TELEGRAM_POLLING", "maybe", "TELEGRAM_POLLING must be 1 or 0, not 'maybe'"),
        ("TELEGRAM_WEBHOOK_SECRET", "has spaces", "TELEGRAM_WEBHOOK_SECRET may hold only"),
        ("TELEGRAM_API_BASE_URL", "ftp://x", "TELEGRAM_API_BASE_URL must be a URL starting"),
    ],
)
def test_a_bad_value_names_its_variable_and_what_is_wrong(
    environ: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    assert message in _error(environ, **{variable: value})


def test_every_bad_value_is_named_at_once(environ: pytest.MonkeyPatch) -> None:
    said = _error(environ, PORT="x", DEFAULT_LANGUAGE="de", TWILIO_WHATSAPP_RATE="0")
    assert said.count(";") == 2
    assert all(name in said for name in ("PORT", "DEFAULT_LANGUAGE", "TWILIO_WHATSAPP_RATE"))


def test_an_error_does_not_repeat_a_secret_or_a_password(environ: pytest.MonkeyPatch) -> None:
    said = _error(
        environ,
        TELEGRAM_WEBHOOK_SECRET="the secret with spaces",
        DATABASE_URL="mysql://root:db-password@db/consulta",
        REDIS_URL="http://:redis-password@cache",
    )
    assert "TELEGRAM_WEBHOOK_SECRET" in said and "DATABASE_URL" in said and "REDIS_URL" in said
    assert "the secret" not in said and "password" not in said


def test_platform_database_urls_get_the_asyncio_drivers(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("DATABASE_URL", "postgres://consulta@db/consulta")
    assert Settings.from_env().database_url == "postgresql+asyncpg://consulta@db/consulta"
    assert Settings(database_url="sqlite:///x.db").database_url == "sqlite+aiosqlite:///x.db"


def test_secrets_are_not_in_the_repr() -> None:
    settings = Settings(
        secret_key="the-secret-key",
        database_url="postgresql+asyncpg://consulta:db-password@db/consulta",
        redis_url="redis://:redis-password@cache:6379/0",
        twilio=TwilioSettings(account_sid="AC1", auth_token="twilio-auth"),
        telegram=TelegramSettings(bot_token="1:tok-secret-half", webhook_secret="hook-secret"),
    )
    shown = repr(settings) + str(settings)
    for secret in ("the-secret-key", "db-password", "redis-password", "twilio-auth", "tok-secret"):
        assert secret not in shown
    assert "hook-secret" not in shown
    assert "postgresql+asyncpg://consulta:***@db/consulta" in shown


def test_variants_are_validated_and_settings_are_immutable() -> None:
    settings = Settings()
    assert settings.with_(port="9000").port == 9000
    with pytest.raises(ValueError, match="default_language"):
        settings.with_(default_language="de")
    with pytest.raises(ValueError):
        settings.port = 9000  # type: ignore[misc]
    assert settings.port == 8080


def test_quiet_hours_may_span_midnight() -> None:
    night, lunch = QuietHours(time(21), time(8)), QuietHours(time(14), time(16))
    assert night.covers(time(23, 30)) and night.covers(time(7, 59))
    assert not night.covers(time(8)) and not night.covers(time(12))
    assert lunch.covers(time(15)) and not lunch.covers(time(16, 30))
    assert str(night) == "21:00-08:00"


def test_postgresql_refuses_the_development_key() -> None:
    local = Settings()
    local.check_production()  # SQLite: the development key is fine
    shared = Settings(database_url="postgresql+asyncpg://consulta@db/consulta")
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        shared.check_production()
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        shared.with_(secret_key=DEV_SECRET).check_production()
    shared.with_(secret_key="a-long-random-value").check_production()


ROOT = Path(__file__).resolve().parents[2]


def test_the_example_file_is_the_defaults_and_every_variable_is_documented(
    environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    (tmp_path / ".env").write_text(example, encoding="utf-8")
    assert Settings.from_env() == Settings()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in EVERY_VARIABLE:
        assert f"\n{name}=" in example, name
        assert f"`{name}`" in readme, name
