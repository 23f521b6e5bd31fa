"""Pacing as channels use it: `LocalPacing`'s buckets on a clock of the test's own, the bulk
flag an outbound message carries, and the keys Twilio and Telegram pace their senders by.
(Sharing one cap between processes, through Redis: tests/storage/test_limiter.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from consulta.adapters.delivery import LocalPacing
from consulta.adapters.message import Button, Outbound
from consulta.adapters.telegram import GLOBAL_RATE, GROUP_RATE, TelegramChannel, TelegramConfig
from consulta.adapters.twilio import SMS, WHATSAPP, TwilioChannel, TwilioConfig, TwilioGateway
from consulta.gcra import cell
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import TwilioDouble

SID, TWILIO_TOKEN = "AC" + "1" * 32, "twilio-test-token"
TELEGRAM_TOKEN = "123456:TEST-token"
PUBLIC = "https://consulta.example.org"
WA_FROM, SMS_FROM, RESIDENT = "whatsapp:+5213300000000", "+5213300000001", "+5217711234567"


TENTH, SECOND = cell(10)[0], cell(1)[0]  # one cell at 10/s and at 1/s (a little over the rate's)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recording:
    """A `Pacing` that lets everything through and notes what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float, bool]] = []

    async def wait(self, key: str, rate: float, burst: float = 1.0, *, bulk: bool = False) -> None:
        self.calls.append((key, rate, burst, bulk))


def test_a_full_bucket_lets_the_burst_through_then_paces() -> None:
    clock = Clock()
    pacing = LocalPacing(clock)
    assert [pacing.acquire("s", 10, 3) for _ in range(3)] == [0, 0, 0]
    assert pacing.acquire("s", 10, 3) == pytest.approx(TENTH)  # one interval
    clock.now += TENTH
    assert pacing.acquire("s", 10, 3) == 0
    assert pacing.acquire("other", 10, 3) == 0  # each sender its own bucket


def test_bulk_leaves_a_cell_for_replies() -> None:
    clock = Clock()
    pacing = LocalPacing(clock)
    assert [pacing.acquire("s", 10, 3, bulk=True) for _ in range(2)] == [0, 0]
    assert pacing.acquire("s", 10, 3, bulk=True) == pytest.approx(TENTH)
    assert pacing.acquire("s", 10, 3) == 0  # a reply takes the cell bulk left
    assert pacing.acquire("s", 10, 3) > 0  # the next reply must wait: it marks the sender…
    assert pacing.acquire("s", 10, 3, bulk=True) == pytest.approx(1.25 * TENTH)  # …bulk waits


def test_with_a_burst_of_one_bulk_runs_at_the_full_rate_until_a_reply_waits() -> None:
    clock = Clock()
    pacing = LocalPacing(clock)
    assert pacing.acquire("s", 1, bulk=True) == 0
    clock.now += SECOND  # the next cell is due: bulk takes it, as a reply would
    assert pacing.acquire("s", 1, bulk=True) == 0
    clock.now += SECOND / 2
    assert pacing.acquire("s", 1) == pytest.approx(SECOND / 2)  # a reply must wait: it says so…
    clock.now += SECOND / 2
    assert pacing.acquire("s", 1, bulk=True) > 0  # …and bulk holds back for it
    assert pacing.acquire("s", 1) == 0
    clock.now += SECOND  # the reply went, its mark lapsed: bulk goes on
    assert pacing.acquire("s", 1, bulk=True) == 0


def test_a_late_send_is_made_up_but_never_crowds_a_second() -> None:
    clock = Clock()
    pacing = LocalPacing(clock)
    sent = []
    for _ in range(30):
        while (wait := pacing.acquire("s", 10)) > 0:
            clock.now += wait + 0.004  # every sleep ends 4 ms late, as event loops' do
        sent.append(clock.now)
    spacing = (sent[-1] - sent[0]) / (len(sent) - 1)
    assert spacing == pytest.approx(TENTH, rel=0.01)  # the lateness is not lost…
    assert all(later - first >= 1.0 for first, later in zip(sent, sent[10:], strict=False))


async def test_wait_sleeps_until_the_bucket_allows() -> None:
    pacing = LocalPacing()
    await pacing.wait("s", 20)
    before = pacing.acquire("s", 20)
    assert 0 < before <= cell(20)[0]
    await pacing.wait("s", 20)  # slept the 50 ms out
    assert pacing.acquire("s", 20) > 0


def test_bulk_round_trips_and_a_reply_reads_as_before() -> None:
    reply = Outbound("whatsapp", RESIDENT, "¿Cuál es tu colonia?", buttons=(Button("1", "Centro"),))
    assert "bulk" not in reply.to_dict()
    assert Outbound.from_dict(reply.to_dict()) == reply
    broadcast = Outbound("sms", RESIDENT, "Asamblea el sábado", bulk=True)
    assert broadcast.to_dict()["bulk"] is True
    assert Outbound.from_dict(broadcast.to_dict()) == broadcast


@pytest.fixture
async def twilio_api() -> AsyncIterator[TwilioDouble]:
    api = TwilioDouble(SID, TWILIO_TOKEN)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def telegram_api() -> AsyncIterator[TelegramDouble]:
    api = TelegramDouble(TELEGRAM_TOKEN)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


async def test_twilio_paces_each_sender_number(twilio_api: TwilioDouble) -> None:
    pacing = Recording()
    config = TwilioConfig(
        SID,
        TWILIO_TOKEN,
        PUBLIC,
        whatsapp_from=WA_FROM,
        sms_from=SMS_FROM,
        api_base_url=twilio_api.url,
        whatsapp_rate=20,
        sms_rate=1,
    )
    gateway = TwilioGateway(config, pacing=pacing)
    whatsapp = TwilioChannel(WHATSAPP, gateway, owns_routes=True)
    sms = TwilioChannel(SMS, gateway, owns_routes=False)
    try:
        await whatsapp.send(Outbound(WHATSAPP, RESIDENT, "Hola", last_inbound_at=1e12))
        await sms.send(Outbound(SMS, RESIDENT, "Asamblea el sábado", bulk=True))
    finally:
        await whatsapp.close()
    assert pacing.calls == [
        (f"twilio:{WA_FROM}", 20, 1.0, False),
        (f"twilio:{SMS_FROM}", 1, 1, True),
    ]


async def test_telegram_paces_the_chat_then_the_bot(telegram_api: TelegramDouble) -> None:
    pacing = Recording()
    config = TelegramConfig(TELEGRAM_TOKEN, "secret", PUBLIC, api_base_url=telegram_api.url)
    channel = TelegramChannel(config, pacing=pacing)
    try:
        await channel.send(Outbound("telegram", "5550001", "Hola"))
        await channel.send(Outbound("telegram", "-100200", "Asamblea el sábado", bulk=True))
    finally:
        await channel.close()
    assert pacing.calls == [
        ("telegram:chat:5550001", 1.0, 3.0, False),
        ("telegram:all", GLOBAL_RATE, 1.0, False),
        ("telegram:chat:-100200", GROUP_RATE, 3.0, True),
        ("telegram:all", GLOBAL_RATE, 1.0, True),
    ]
