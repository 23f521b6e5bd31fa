"""Broadcasts end to end, on both backends: residents who consented on WhatsApp and Telegram (by
real webhooks), a broadcast created as staff create it, sent by the broadcaster through the real
twilio and python-telegram-bot libraries to the doubles — languages, opt-outs, the 24-hour window
and templates, quiet hours, pause/resume/cancel, delivery callbacks, groups, invitations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from consulta.bot import broadcasts as bc
from consulta.bot.broadcasts import Broadcaster
from consulta.bot.config import QuietHours, Settings
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.storage.broadcasts import Audience, BroadcastError
from consulta.storage.models import Broadcast, BroadcastRecipient, Contact, Submission
from tests.adapters import test_telegram as tg
from tests.adapters import test_twilio as tw
from tests.adapters.loopback import sending_runtime
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import TwilioDouble

ES, EN, DECLINED, STOPPED = "+5217710000001", "+5217710000002", "+5217710000003", "+5217710000004"
TEXTS = {"es": "Mañana hay asamblea", "en": "Assembly tomorrow", "fr": "Assemblée demain"}
TEMPLATE_SID = "HX" + "7" * 32
NOON = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)  # 12:00 in Mexico City: not quiet


@pytest.fixture
async def rt(
    settings: Settings, doubles: tuple[TwilioDouble, TelegramDouble]
) -> AsyncIterator[Runtime]:
    twilio, telegram = doubles
    async with sending_runtime(
        settings,
        twilio=tw.twilio_settings(twilio, templates={"assembly": {"es": TEMPLATE_SID}}),
        telegram=tg.telegram_settings(telegram),
        public_url=tw.PUBLIC,
        timezone=ZoneInfo("America/Mexico_City"),
    ) as runtime:
        yield runtime


@pytest.fixture
async def client(rt: Runtime, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(build_app(rt))


@pytest.fixture
def broadcaster(rt: Runtime) -> Broadcaster:
    return Broadcaster(
        rt.broadcasts, rt.store, rt.engine, rt.settings, rt.outbox.senders, holder="test-process"
    )


class Town:
    """Residents of every kind a broadcast must tell apart."""

    def __init__(self, client: TestClient, rt: Runtime, doubles: Any) -> None:
        twilio, telegram = doubles
        self.es = tw.Phone(client, rt, twilio, number=ES)
        self.en = tw.Phone(client, rt, twilio, number=EN)
        self.declined = tw.Phone(client, rt, twilio, number=DECLINED)
        self.stopped = tw.Phone(client, rt, twilio, number=STOPPED)
        self.fr = tg.Resident(client, rt, telegram, language_code="fr")
        self.twilio, self.telegram = twilio, telegram

    async def gather(self) -> None:
        await self.es.say("hola")
        await self.es.say("sí")
        await self.en.say("Hello, good afternoon")
        await self.en.say("yes")
        await self.declined.say("hola")
        await self.declined.say("no")
        await self.stopped.say("hola")
        await self.stopped.say("sí")
        await self.stopped.say("baja")  # opted out
        await self.fr.say("Bonjour")
        await self.fr.say("oui")
        for phone in (self.es, self.en, self.declined, self.stopped):
            phone.replies()  # what they were told so far is not the broadcast


@pytest.fixture
async def town(client: TestClient, rt: Runtime, doubles: Any) -> Town:
    town = Town(client, rt, doubles)
    await town.gather()
    return town


async def send_all(broadcaster: Broadcaster, now: datetime = NOON) -> None:
    await broadcaster.housekeeping(now)
    while await broadcaster.step(now):
        pass
    await broadcaster.housekeeping(now)


async def recipients(rt: Runtime, broadcast_id: int) -> list[Any]:
    async with rt.store.engine.connect() as conn:
        rows = await conn.execute(
            select(BroadcastRecipient).where(BroadcastRecipient.broadcast_id == broadcast_id)
        )
        return list(rows)


async def test_a_message_reaches_each_consenting_resident_once_in_their_language(
    rt: Runtime, town: Town, broadcaster: Broadcaster
) -> None:
    plan = await bc.plan(rt.broadcasts, rt.settings, rt.engine, Audience(), texts=TEXTS)
    assert plan.counts == {("whatsapp", "es"): 1, ("whatsapp", "en"): 1, ("telegram", "fr"): 1}
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, Audience(), texts=TEXTS)
    assert info.recipients == 3 and info.status == "scheduled"
    await send_all(broadcaster)
    await send_all(broadcaster)  # a second pass sends nobody again
    assert town.es.replies() == TEXTS["es"]
    assert town.en.replies() == TEXTS["en"]
    assert town.telegram.texts_to(tg.CHAT)[-1] == TEXTS["fr"]
    assert town.telegram.texts_to(tg.CHAT).count(TEXTS["fr"]) == 1
    assert town.declined.replies() == "" and town.stopped.replies() == ""
    progress = await rt.broadcasts.progress(info.id, NOON)
    assert progress.by_state["sent"] == 3
    assert (await rt.broadcasts.get(info.id)).status == "done"


async def test_a_message_missing_a_language_its_audience_speaks_is_refused(
    rt: Runtime, town: Town
) -> None:
    with pytest.raises(BroadcastError, match="en"):
        await bc.create(rt.broadcasts, rt.settings, rt.engine, Audience(), texts={"es": "Hola"})
    only_spanish = Audience(languages=("es",))
    plan = await bc.plan(rt.broadcasts, rt.settings, rt.engine, only_spanish, texts={"es": "x"})
    assert plan.total == 1
    async with rt.store.engine.connect() as conn:
        assert (await conn.execute(select(Broadcast))).all() == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"flow_id": "no-such-flow"}, "no flow"),
        ({"texts": TEXTS, "template": "unconfigured"}, "template"),
        ({"texts": TEXTS, "send_at": datetime(2020, 1, 1, tzinfo=UTC)}, "past"),
        ({}, "either"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    rt: Runtime, options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(BroadcastError, match=problem):
        await bc.create(rt.broadcasts, rt.settings, rt.engine, Audience(), **options)
    assert await rt.broadcasts.all() == []


async def test_an_invitation_is_the_first_question_and_the_answer_continues_the_survey(
    rt: Runtime, town: Town, broadcaster: Broadcaster
) -> None:
    spanish = Audience(languages=("es",), channels=("whatsapp",))
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, spanish, flow_id="report")
    await send_all(broadcaster)
    invitation = town.es.replies()
    assert "1." in invitation  # the report's consent question, numbered
    async with rt.store.engine.connect() as conn:
        contact = (await conn.execute(select(Contact).where(Contact.address == ES))).one()
    assert contact.invited_flow == "report"
    after = await town.es.say("1")  # yes
    assert after and after != invitation
    async with rt.store.engine.connect() as conn:
        flows = {
            s.flow_id: s.status
            for s in await conn.execute(
                select(Submission).where(Submission.contact_id == contact.id)
            )
        }
    assert flows.get("report") == "partial"
    assert (await rt.broadcasts.progress(info.id, datetime.now(UTC))).answered == 1


async def test_outside_the_window_only_a_template_reaches_a_whatsapp_resident(
    rt: Runtime, town: Town, broadcaster: Broadcaster
) -> None:
    async with rt.store.engine.begin() as conn:
        await conn.execute(
            update(Contact)
            .where(Contact.address == ES)
            .values(last_inbound_at=datetime.now(UTC) - timedelta(days=2))
        )
    spanish = Audience(languages=("es",), channels=("whatsapp",))
    plain = await bc.create(rt.broadcasts, rt.settings, rt.engine, spanish, texts=TEXTS)
    await send_all(broadcaster)
    assert town.es.replies() == ""
    progress = await rt.broadcasts.progress(plain.id, NOON)
    assert progress.skipped_by_reason == {"outside window": 1}

    templated = await bc.create(
        rt.broadcasts, rt.settings, rt.engine, spanish, texts=TEXTS, template="assembly"
    )
    await send_all(broadcaster)
    sent = [m for m in town.twilio.messages if m["To"] == f"whatsapp:{ES}"][-1]
    assert sent["ContentSid"] == TEMPLATE_SID and "Body" not in sent
    assert (await rt.broadcasts.progress(templated.id, NOON)).by_state["sent"] == 1


async def test_quiet_hours_are_never_used(
    rt: Runtime, town: Town, broadcaster: Broadcaster
) -> None:
    assert rt.settings.broadcast_quiet_hours == QuietHours(time(21), time(8))
    telegram = Audience(channels=("telegram",))  # no 24-hour window: only the hours matter
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, telegram, texts=TEXTS)
    night = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)  # 23:00 in Mexico City
    before = len(town.telegram.texts_to(tg.CHAT))
    await send_all(broadcaster, night)
    assert (await rt.broadcasts.progress(info.id, night)).by_state["sent"] == 0
    assert len(town.telegram.texts_to(tg.CHAT)) == before
    morning = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # 09:00: sending resumes
    await send_all(broadcaster, morning)
    assert town.telegram.texts_to(tg.CHAT)[before:] == [TEXTS["fr"]]


async def test_pause_resume_and_cancel(rt: Runtime, town: Town, broadcaster: Broadcaster) -> None:
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, Audience(), texts=TEXTS)
    assert (await rt.broadcasts.pause(info.id)).status == "paused"
    await send_all(broadcaster)
    assert town.es.replies() == ""
    with pytest.raises(BroadcastError, match="paused"):
        await rt.broadcasts.pause(info.id)
    assert (await rt.broadcasts.resume(info.id)).status in ("scheduled", "sending")
    with pytest.raises(BroadcastError, match="not paused"):
        await rt.broadcasts.resume(info.id)  # a second resume changes nothing
    await send_all(broadcaster)
    assert town.es.replies() == TEXTS["es"]

    later = await bc.create(
        rt.broadcasts,
        rt.settings,
        rt.engine,
        Audience(),
        texts=TEXTS,
        send_at=datetime.now(UTC) + timedelta(hours=1),
    )
    assert (await rt.broadcasts.cancel(later.id)).status == "cancelled"
    with pytest.raises(BroadcastError):
        await rt.broadcasts.resume(later.id)
    await send_all(broadcaster, datetime.now(UTC) + timedelta(hours=2))
    assert town.es.replies() == ""


async def test_delivery_callbacks_follow_each_recipient_and_21610_opts_out(
    rt: Runtime, client: TestClient, town: Town, broadcaster: Broadcaster
) -> None:
    whatsapp = Audience(channels=("whatsapp",))
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, whatsapp, texts=TEXTS)
    await send_all(broadcaster)
    rows = {r.contact_id: r for r in await recipients(rt, info.id)}
    async with rt.store.engine.connect() as conn:
        ids = dict((await conn.execute(select(Contact.address, Contact.id))).all())
    read, unsubscribed = rows[ids[ES]], rows[ids[EN]]

    async def callback(row: Any, to: str, status: str, **extra: str) -> None:
        form = {
            "MessageSid": row.provider_id,
            "MessageStatus": status,
            "From": tw.WA_FROM,
            "To": f"whatsapp:{to}",
            "AccountSid": tw.SID,
            **extra,
        }
        path = "/webhooks/twilio/status"
        headers = {"X-Twilio-Signature": tw.sign(form, path)}
        assert (await client.post(path, data=form, headers=headers)).status == 204

    await callback(read, ES, "delivered")
    await callback(read, ES, "read")
    await callback(read, ES, "delivered")  # late and out of order: it never goes back
    await callback(unsubscribed, EN, "failed", ErrorCode="21610")
    progress = await rt.broadcasts.progress(info.id, NOON)
    assert progress.by_state["read"] == 1 and progress.by_state["failed"] == 1
    assert progress.failed_by_reason == {"21610": 1}
    assert bc.funnel(progress, survey=False)["delivered"] == 1
    opted = await rt.store.find_contact("whatsapp", EN)
    assert opted is not None and opted.opted_out
    assert (await rt.broadcasts.counts(whatsapp)) == {("whatsapp", "es"): 1}


async def test_a_resident_who_blocked_the_bot_is_opted_out(
    rt: Runtime, town: Town, broadcaster: Broadcaster
) -> None:
    town.telegram.fail_next(403, "Forbidden: bot was blocked by the user")
    telegram = Audience(channels=("telegram",))
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, telegram, texts=TEXTS)
    await send_all(broadcaster)
    assert (await rt.broadcasts.progress(info.id, NOON)).by_state["failed"] == 1
    blocked = await rt.store.find_contact("telegram", str(tg.CHAT))
    assert blocked is not None and blocked.opted_out


async def test_neighbourhood_groups_get_the_message_of_their_territory(
    rt: Runtime, town: Town, broadcaster: Broadcaster
) -> None:
    await rt.groups.register("telegram", str(tg.GROUP_ID), "santa-julia", "es")
    await rt.groups.register("telegram", "-1009999", "centro", "en")
    groups = Audience(groups=True, territories=("santa-julia",))
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, groups, texts={"es": "Hola"})
    assert info.recipients == 1
    await send_all(broadcaster)
    assert town.telegram.texts_to(tg.GROUP_ID) == ["Hola"]
    assert town.telegram.texts_to(-1009999) == []


async def test_a_resident_who_opts_out_during_a_broadcast_is_skipped(
    rt: Runtime, town: Town, broadcaster: Broadcaster
) -> None:
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, Audience(), texts=TEXTS)
    await broadcaster.housekeeping(NOON)  # started: the recipients are written
    await town.es.say("baja")  # and then one of them unsubscribes
    town.es.replies()
    await send_all(broadcaster)
    assert town.es.replies() == ""
    assert town.en.replies() == TEXTS["en"]
    progress = await rt.broadcasts.progress(info.id, NOON)
    assert progress.skipped_by_reason == {"opted out": 1}


async def test_a_send_a_dead_process_began_is_recorded_if_it_arrived_and_sent_if_not(
    rt: Runtime, town: Town, broadcaster: Broadcaster
) -> None:
    spanish = Audience(channels=("whatsapp",))
    info = await bc.create(rt.broadcasts, rt.settings, rt.engine, spanish, texts=TEXTS)
    await broadcaster.housekeeping(NOON)
    # A process claims both, begins both sends, and dies: one reached Twilio (its answer was
    # lost with the process), the other never left.
    arrived, lost = await rt.broadcasts.claim("dead-process", 10, 0.0)  # lease already over
    for recipient in (arrived, lost):
        await broadcaster.notes.begin(recipient.id)
    await rt.outbox.senders["whatsapp"].send(broadcaster._message(arrived))
    sid = town.twilio.created[-1][0]
    sent_before = len(town.twilio.messages)
    await send_all(broadcaster)
    assert len(town.twilio.messages) == sent_before + 1  # only the one that never left
    rows = {r.id: r for r in await recipients(rt, info.id)}
    assert rows[arrived.id].state == "sent" and rows[arrived.id].provider_id == sid
    assert rows[lost.id].state == "sent" and rows[lost.id].provider_id != sid
    assert town.es.replies().count(TEXTS["es"]) == 1
    assert town.en.replies().count(TEXTS["en"]) == 1
