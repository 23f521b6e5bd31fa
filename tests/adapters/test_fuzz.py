"""Fuzzing the channel boundary: whatever a webhook carries, the adapters return a message or
their documented refusal (`BadWebhook`, `BadUpdate`: a 400), and the app never answers 5xx
nor logs a traceback."""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from twilio.request_validator import RequestValidator

from consulta.adapters.message import Inbound
from consulta.adapters.telegram import SECRET_HEADER, BadUpdate, parse_update, read_update
from consulta.adapters.twilio import BadWebhook, parse_message
from consulta.bot.config import Settings, TelegramSettings, TwilioSettings
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from tests.adapters.loopback import sending_runtime
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import TwilioDouble

# Hypothesis's caches go to the system's temporary folder, not the working tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "consulta-hypothesis")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- Twilio: parse_message over arbitrary forms -------------------------------------------

TWILIO_KEYS = [
    "From",
    "To",
    "MessageSid",
    "SmsSid",
    "AccountSid",
    "Body",
    "NumMedia",
    *[f"MediaUrl{i}" for i in range(12)],
    *[f"MediaContentType{i}" for i in range(3)],
    "Latitude",
    "Longitude",
    "Label",
    "Address",
    "ButtonPayload",
    "ButtonText",
    "ListId",
    "ListTitle",
    "WaId",
    "ProfileName",
]
ODD_VALUES = [
    "",
    "0",
    "-1",
    "999",
    "1e9",
    "1e400",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "0x10",
    "١٢",  # Arabic-Indic digits: int() accepts them
    "9" * 5000,  # over int()'s digit limit
    "whatsapp:",
    "whatsapp:+5215512345678",
    "+5215512345678",
    "\0",
    "\u202e\u0301\U0001f4a9",
    "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
]
form_values = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.text(max_size=40),
    st.from_regex(r"-?\d{1,4}(\.\d{1,9})?([eE][+-]?\d{1,3})?", fullmatch=True),
)
forms = st.dictionaries(
    st.one_of(st.sampled_from(TWILIO_KEYS), st.text(max_size=12)), form_values, max_size=16
)
plausible_forms = st.fixed_dictionaries(
    {
        "From": st.one_of(
            st.just("whatsapp:+5215512345678"), st.just("+5215512345678"), form_values
        ),
        "MessageSid": st.one_of(st.just("SM" + "a" * 32), form_values),
    }
).flatmap(lambda base: forms.map(lambda extra: {**extra, **base}))


@FUZZ
@given(st.one_of(forms, plausible_forms))
def test_parse_message_returns_a_message_or_bad_webhook(form: dict[str, str]) -> None:
    try:
        message = parse_message(form)
    except BadWebhook:
        return
    assert isinstance(message, Inbound)
    assert 3 <= len(message.address) <= 32 and message.channel in ("whatsapp", "sms")
    assert message.provider_id and len(message.provider_id) <= 64
    assert message.name is None or len(message.name) <= 128
    assert len(message.attachments) <= 10
    if message.place is not None:
        assert math.isfinite(message.place.latitude) and abs(message.place.latitude) <= 90
        assert math.isfinite(message.place.longitude) and abs(message.place.longitude) <= 180
    json.dumps(message.to_dict())  # what the store writes


# --- Telegram: read_update (Update.de_json and its checks) and parse_update ---------------

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


ODD_JSON = ["abc", "5550001", 1.5, True, 2**80, None, "\ud800", "a\0b", [], {}, float("nan")]
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30) | st.sampled_from(
    ["hola", "1", "/start", "/start reporte", "a\0b"]
)
chat_ids = st.integers(1, 2**52)


@st.composite
def valid_updates(draw: st.DrawFn) -> dict[str, Any]:
    """An update of a kind Consulta acts on, as Telegram sends it."""
    chat_id = draw(chat_ids)
    user = {
        "id": chat_id,
        "is_bot": False,
        "first_name": draw(texts),
        "language_code": draw(st.sampled_from(["es", "en-US", "fr"])),
    }
    chat = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
    message = {"message_id": draw(st.integers(1, 10**6)), "date": 1, "chat": chat, "from": user}
    place = {"latitude": draw(st.floats(-90, 90)), "longitude": draw(st.floats(-180, 180))}
    size = {"file_id": draw(texts), "file_unique_id": "u", "width": 9, "height": 9}
    kinds = {
        "text": {"message": {**message, "text": draw(texts)}},
        "location": {"message": {**message, "location": place}},
        "photo": {"message": {**message, "photo": [size], "caption": draw(texts)}},
        "press": {
            "callback_query": {
                "id": draw(texts),
                "from": user,
                "chat_instance": "ci",
                "data": draw(texts),
                "message": {"message_id": 1, "date": 1, "chat": chat, "text": "?"},
            }
        },
        "member": {
            "my_chat_member": {
                "chat": draw(st.sampled_from([chat, {**chat, "id": -chat_id, "type": "group"}])),
                "from": user,
                "date": 1,
                "old_chat_member": {"status": "member", "user": user},
                "new_chat_member": {
                    "status": draw(st.sampled_from(["kicked", "member"])),
                    "user": user,
                },
            }
        },
        "vote": {"poll_answer": {"poll_id": draw(texts), "user": user, "option_ids": [0]}},
    }
    return {"update_id": draw(st.integers(0, 2**40)), **kinds[draw(st.sampled_from(sorted(kinds)))]}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _paths(inner, (*prefix, i))
    return found


@st.composite
def updates(draw: st.DrawFn) -> Any:
    """A real update with one to three parts replaced by junk of any type, or removed."""
    update = json.loads(json.dumps(draw(valid_updates())))
    pick = draw(st.randoms(use_true_random=False))  # uniform over paths, deep ones included
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(update)
        if not paths:
            break
        if draw(st.integers(0, 2)) == 0:  # an id, the field this fuzzing is most about
            paths = [p for p in paths if p[-1] in ("id", "update_id")] or paths
        *parents, last = pick.choice(paths)
        node = update
        for part in parents:
            node = node[part]
        if isinstance(node, dict) and draw(st.booleans()) and draw(st.booleans()):
            del node[last]
        else:
            node[last] = draw(st.sampled_from(ODD_JSON) | json_values)
    return update


def _telegram_body(update: Any) -> bytes:
    return json.dumps(update, allow_nan=True).encode()  # NaN and Infinity, as Python reads them


@FUZZ
@given(updates() | json_values)
def test_an_update_reads_as_a_message_nothing_or_bad_update(update: Any) -> None:
    try:
        parsed = read_update(_telegram_body(update), None)
    except BadUpdate:
        return
    inbound = parse_update(parsed)
    if inbound is None:
        return
    assert isinstance(inbound, Inbound)
    int(inbound.address)  # a chat id, as an integer's text
    assert inbound.provider_id == str(int(inbound.provider_id))
    for text in (inbound.text, inbound.payload, inbound.name, inbound.start, inbound.language_hint):
        assert text is None or (isinstance(text, str) and "\0" not in text)
        if text is not None:
            text.encode("utf-8")  # no lone surrogate: every store can write it
    if inbound.place is not None:
        assert math.isfinite(inbound.place.latitude) and math.isfinite(inbound.place.longitude)
    json.dumps(inbound.to_dict())


@FUZZ
@given(st.binary(max_size=200))
def test_a_body_of_any_bytes_is_bad_update_or_an_update(body: bytes) -> None:
    try:
        read_update(body, None)
    except BadUpdate:
        pass


# --- the real app, thousands of signed malformed webhooks ----------------------------------

SID = "AC" + "f" * 32
TOKEN = "fuzz-twilio-token"
TG_TOKEN = "424242:FUZZ-token"
TG_SECRET = "fuzz-webhook-secret"
PUBLIC = "https://consulta.example.org"
TWILIO_REQUESTS, STATUS_REQUESTS, TELEGRAM_REQUESTS = 2000, 200, 1000
JUNK = [
    "",
    "-1",
    "999",
    "1e9",
    "nan",
    "inf",
    "-inf",
    "0",
    "\0",
    "\u202e\U0001f4a9\u0301",
    "ñ" * 300,
    "9" * 5000,
    "whatsapp:",
    "whatsapp:+",
    "+",
    "whatsapp:whatsapp:+5215512345678",
]


def _junk(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(JUNK)
    if roll < 0.9:
        return "".join(
            chr(rng.choice((rng.randrange(32, 0x2FFF), rng.randrange(0x10000, 0x10FFFF))))
            for _ in range(rng.randrange(1, 30))
        )
    return "x" * rng.randrange(1000, 60_000)


def _twilio_pairs(rng: random.Random, media_host: str) -> list[tuple[str, str]]:
    phone = f"+52155{rng.randrange(10):01d}0000000"  # a few residents, so conversations grow
    form: dict[str, str] = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": SID,
        "From": rng.choice([f"whatsapp:{phone}", phone]),
        "To": "whatsapp:+5213300000000",
        "Body": rng.choice(["hola", "1", "2", "sí", "no", "reporte", "atrás", "ayuda", ""]),
        "NumMedia": "0",
    }
    for _ in range(rng.randrange(1, 5)):
        action = rng.random()
        key = rng.choice(TWILIO_KEYS)
        if action < 0.3:  # a field gone: most often one Twilio always sends
            form.pop(rng.choice(["From", "MessageSid", key]), None)
        elif action < 0.4:
            form["NumMedia"] = rng.choice(["-1", "999", "1e9", "lots", "10", "1", "３"])
            for i in range(rng.randrange(0, 3)):
                form[f"MediaUrl{i}"] = rng.choice(
                    [f"{media_host}/2010-04-01/x/Media/ME{i}", "https://evil.example/x", "::", ""]
                )
                form[f"MediaContentType{i}"] = rng.choice(["image/jpeg", "audio/ogg", "", "x"])
        elif action < 0.45:
            form["Latitude"] = rng.choice(["nan", "inf", "-91", "20.1", "1e400", "", "abc"])
            form["Longitude"] = rng.choice(["nan", "-inf", "181", "-98.7", "0", "x"])
        else:
            form[key] = _junk(rng)
    pairs = list(form.items())
    if rng.random() < 0.15:  # a key twice
        pairs.append((rng.choice(list(form) or ["Body"]), _junk(rng)))
    if rng.random() < 0.1:
        pairs.append((_junk(rng)[:20], _junk(rng)))
    if rng.random() < 0.02:  # about 200 KB in all
        pairs.append(("Body", "b" * 200_000))
    return pairs


def _signed(pairs: list[tuple[str, str]], path: str) -> tuple[bytes, dict[str, str]]:
    body = urlencode(pairs).encode()
    # Signed over the parameters as the server reads them (the last of a repeated key).
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
    return body, {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def _status_pairs(rng: random.Random) -> list[tuple[str, str]]:
    form = {
        "MessageSid": rng.choice(["SM" + uuid.uuid4().hex, _junk(rng)]),
        "MessageStatus": rng.choice(["delivered", "read", "failed", "", _junk(rng)]),
        "From": rng.choice(["whatsapp:+5213300000000", _junk(rng)]),
        "ErrorCode": rng.choice(["", "63016", _junk(rng)]),
    }
    return [(k, v) for k, v in form.items() if rng.random() > 0.1]


def _mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """`value` with a few of its parts replaced by junk of another type, or removed."""
    if isinstance(value, dict) and value:
        value = dict(value)
        for key in rng.sample(list(value), k=min(len(value), rng.randrange(1, 3))):
            roll = rng.random()
            if roll < 0.2:
                del value[key]
            elif roll < 0.6 and depth < 4:
                value[key] = _mutate(value[key], rng, depth + 1)
            else:
                value[key] = _json_junk(rng)
        return value
    if isinstance(value, list) and value:
        return [_mutate(v, rng, depth + 1) for v in value]
    return _json_junk(rng)


def _json_junk(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            1.5,
            2**80,
            -(2**63),
            float("nan"),
            float("inf"),
            "abc",
            "",
            "\0",
            "\ud800",
            "\U0001f4a9" * 50,
            "x" * 70_000,
            [],
            {},
            [1, [2, [3, [4]]]],
            {"id": "abc"},
            rng.randrange(-(2**53), 2**53),
            _junk(rng),
        ]
    )


def _telegram_update(rng: random.Random, n: int) -> Any:
    chat_id = 7000 + rng.randrange(8)
    user = {"id": chat_id, "is_bot": False, "first_name": "Vecina", "language_code": "es"}
    chat = {"id": chat_id, "type": "private", "first_name": "Vecina"}
    message = {"message_id": n, "date": int(time.time()), "chat": chat, "from": user}
    shapes = [
        {"message": {**message, "text": rng.choice(["hola", "/start", "/start reporte", "1"])}},
        {"message": {**message, "location": {"latitude": 20.1, "longitude": -98.7}}},
        {
            "message": {
                **message,
                "photo": [{"file_id": "f", "file_unique_id": "u", "width": 9, "height": 9}],
            }
        },
        {
            "callback_query": {
                "id": str(n),
                "from": user,
                "chat_instance": "ci",
                "data": "consent:1",
                "message": {"message_id": 1, "date": 1, "chat": chat, "text": "?"},
            }
        },
        {
            "my_chat_member": {
                "chat": rng.choice([chat, {"id": -100 - n, "type": "supergroup", "title": "G"}]),
                "from": user,
                "date": 1,
                "old_chat_member": {"status": "member", "user": user},
                "new_chat_member": {"status": rng.choice(["kicked", "member"]), "user": user},
            }
        },
        {"poll_answer": {"poll_id": "p1", "user": user, "option_ids": [0]}},
    ]
    update = {"update_id": 10**6 + n, **rng.choice(shapes)}
    return _mutate(update, rng) if rng.random() < 0.9 else update


def _telegram_raw(rng: random.Random, n: int) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
    if roll < 0.08:
        return b"[" * 100_000  # nesting deeper than any parser's stack
    body = json.dumps(_telegram_update(rng, n), allow_nan=True).encode()
    if roll < 0.12:
        return body[: rng.randrange(len(body) + 1)]  # cut short
    return body


@pytest.fixture
async def fuzz_runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, TwilioDouble]]:
    twilio, telegram = TwilioDouble(SID, TOKEN), TelegramDouble(TG_TOKEN)
    await twilio.start()
    await telegram.start()
    base = Settings(
        secret_key="fuzz",
        media_dir=str(tmp_path / "media"),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}",
    )
    channels = {
        "twilio": TwilioSettings(
            account_sid=SID,
            auth_token=TOKEN,
            whatsapp_from="whatsapp:+5213300000000",
            sms_from="+5213300000001",
            api_base_url=twilio.url,
            whatsapp_rate=100000,
            sms_rate=100000,
        ),
        "telegram": TelegramSettings(
            bot_token=TG_TOKEN,
            webhook_secret=TG_SECRET,
            api_base_url=telegram.url,
            chat_rate=100000,
        ),
    }
    try:
        async with sending_runtime(base, public_url=PUBLIC, **channels) as rt:
            yield rt, twilio
    finally:
        await twilio.stop()
        await telegram.stop()


async def test_thousands_of_malformed_webhooks_get_no_5xx_and_log_no_traceback(
    fuzz_runtime: tuple[Runtime, TwilioDouble],
    aiohttp_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt, twilio = fuzz_runtime
    client: TestClient = await aiohttp_client(build_app(rt))
    rng = random.Random(20261125)
    statuses: dict[str, dict[int, int]] = {"twilio": {}, "status": {}, "telegram": {}}

    def count(route: str, status: int) -> None:
        statuses[route][status] = statuses[route].get(status, 0) + 1

    with caplog.at_level(logging.WARNING):
        for _ in range(TWILIO_REQUESTS):
            body, headers = _signed(_twilio_pairs(rng, twilio.url), "/webhooks/twilio")
            response = await client.post("/webhooks/twilio", data=body, headers=headers)
            count("twilio", response.status)
        for _ in range(STATUS_REQUESTS):
            body, headers = _signed(_status_pairs(rng), "/webhooks/twilio/status")
            response = await client.post("/webhooks/twilio/status", data=body, headers=headers)
            count("status", response.status)
        for n in range(TELEGRAM_REQUESTS):
            response = await client.post(
                "/webhooks/telegram",
                data=_telegram_raw(rng, n),
                headers={SECRET_HEADER: TG_SECRET, "Content-Type": "application/json"},
            )
            count("telegram", response.status)
        await rt.drain()

    failures = {
        route: {s: n for s, n in seen.items() if s >= 500} for route, seen in statuses.items()
    }
    assert failures == {"twilio": {}, "status": {}, "telegram": {}}, statuses
    # Both kinds were exercised: accepted and refused (the fuzz is neither all junk nor all fine).
    for route in ("twilio", "telegram"):
        assert statuses[route].get(200, 0) > 50 and statuses[route].get(400, 0) > 50, statuses
    bad = [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info or "Traceback" in r.getMessage()
    ]
    assert bad == []
