"""Broadcasts on SQLite and PostgreSQL: who an audience holds, recipients materialised once and
claimed by one sender each, delivery callbacks that only move forward, and staff's controls."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from consulta.bot.runtime import Runtime
from consulta.storage.broadcasts import (
    STATES,
    Audience,
    BroadcastError,
    Broadcasts,
    Recipient,
)
from consulta.storage.models import (
    BroadcastRecipient,
    Consent,
    Contact,
    Group,
    Submission,
    utcnow,
)

BR = BroadcastRecipient


async def resident(
    rt: Runtime,
    address: str,
    *,
    channel: str = "whatsapp",
    language: str | None = None,
    profile: dict[str, Any] | None = None,
    consent: bool | None = True,
    opted_out: bool = False,
    last_inbound_at: datetime | None = None,
) -> int:
    """A contact, with a consent row unless `consent` is None (never asked)."""
    async with rt.store.engine.begin() as conn:
        contact_id: int = (
            await conn.execute(
                insert(Contact)
                .values(
                    pid=f"p{channel}{address}",
                    channel=channel,
                    address=address,
                    language=language,
                    profile=profile or {},
                    extra={},
                    opted_out=opted_out,
                    created_at=utcnow(),
                    last_inbound_at=last_inbound_at,
                )
                .returning(Contact.id)
            )
        ).scalar_one()
        if consent is not None:
            await conn.execute(
                insert(Consent).values(
                    contact_id=contact_id, flow_id="priorities", given=consent, at=utcnow()
                )
            )
    return contact_id


async def submission(
    rt: Runtime,
    contact_id: int,
    flow_id: str,
    *,
    status: str = "complete",
    territory: str | None = None,
    started_at: datetime | None = None,
) -> None:
    started_at = started_at or utcnow()
    async with rt.store.engine.begin() as conn:
        await conn.execute(
            insert(Submission).values(
                id=f"s{contact_id}{flow_id}{status}{territory}",
                contact_id=contact_id,
                flow_id=flow_id,
                flow_version=1,
                status=status,
                channel="whatsapp",
                territory=territory,
                cursor={},
                started_at=started_at,
                updated_at=started_at,
            )
        )


async def group(
    rt: Runtime, address: str, territory: str, language: str | None, active: bool = True
) -> int:
    async with rt.store.engine.begin() as conn:
        group_id: int = (
            await conn.execute(
                insert(Group)
                .values(
                    channel="telegram",
                    address=address,
                    territory=territory,
                    language=language,
                    active=active,
                    added_at=utcnow(),
                )
                .returning(Group.id)
            )
        ).scalar_one()
    return group_id


def total(counts: dict[tuple[str, str], int]) -> int:
    return sum(counts.values())


async def started(
    b: Broadcasts, audience: Audience | None = None, *, flow_id: str | None = None
) -> int:
    """A broadcast to `audience`, created and started now. Returns its id."""
    info = await b.create(
        kind="flow" if flow_id else "message",
        flow_id=flow_id,
        texts={} if flow_id else {"es": "Hola", "en": "Hello"},
        audience=audience or Audience(),
        template=None,
        send_at=utcnow(),
        created_by="test",
    )
    assert await b.start_due(utcnow()) == [info.id]
    return info.id


async def recipient_rows(rt: Runtime, broadcast_id: int) -> list[Any]:
    async with rt.store.engine.connect() as conn:
        rows = await conn.execute(select(BR).where(BR.broadcast_id == broadcast_id).order_by(BR.id))
        return list(rows)


def aware(moment: datetime | None) -> datetime | None:
    """As read back: naive on SQLite (UTC there)."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# the audience ----------------------------------------------------------------------------


def test_an_audience_round_trips_and_refuses_what_it_does_not_know() -> None:
    audience = Audience(
        channels=("whatsapp", "sms"),
        territories=("centro",),
        languages=("es",),
        where=(("gender", "woman"), ("gender", "man"), ("sector", "employed")),
        answered=("priorities",),
        not_answered=("report",),
    )
    assert Audience.from_dict(audience.to_dict()) == audience
    assert Audience.from_dict({"where": {"gender": ["woman", "man"]}}).where == (
        ("gender", "woman"),
        ("gender", "man"),
    )
    assert Audience.from_dict({}) == Audience()
    with pytest.raises(BroadcastError, match="unknown channel 'signal'"):
        Audience(channels=("signal",))
    with pytest.raises(BroadcastError, match="unknown profile field 'income'"):
        Audience(where=(("income", "high"),))
    with pytest.raises(BroadcastError, match="unknown language 'de'"):
        Audience(languages=("de",))
    with pytest.raises(BroadcastError, match="unknown audience filter 'colour'"):
        Audience.from_dict({"colour": ["red"]})
    with pytest.raises(BroadcastError, match="groups are chosen by territory and language"):
        Audience(groups=True, answered=("priorities",))


async def test_only_residents_who_consented_and_did_not_opt_out(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    kept = await resident(runtime, "+521")
    await resident(runtime, "+522", opted_out=True)
    await resident(runtime, "forgotten:abc")
    await resident(runtime, "+523", consent=None)  # never asked
    await resident(runtime, "+524", consent=False)  # said no
    assert await b.counts(Audience()) == {("whatsapp", "es"): 1}
    broadcast_id = await started(b)
    assert [row.contact_id for row in await recipient_rows(runtime, broadcast_id)] == [kept]


async def test_each_filter_narrows_the_audience(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine, default_language="fr")
    ana = await resident(runtime, "+521", language="es", profile={"gender": "woman"})
    ben = await resident(runtime, "+522", channel="sms", language="en")
    cloe = await resident(runtime, "7001", channel="telegram", profile={"gender": "man"})
    await submission(runtime, ana, "priorities", territory="centro")
    await submission(runtime, ben, "priorities", status="partial", territory="norte")
    await submission(runtime, cloe, "report", territory="centro")

    async def who(**filters: Any) -> int:
        return total(await b.counts(Audience(**filters)))

    assert await b.counts(Audience()) == {
        ("whatsapp", "es"): 1,
        ("sms", "en"): 1,
        ("telegram", "fr"): 1,  # no language of her own: the default
    }
    assert await who(channels=("sms", "telegram")) == 2
    assert await who(languages=("fr",)) == 1
    assert await who(languages=("es", "en")) == 2
    assert await who(territories=("centro",)) == 2
    assert await who(territories=("norte",)) == 1  # any submission, finished or not
    assert await who(where=(("gender", "woman"),)) == 1
    assert await who(where=(("gender", "nonbinary"),)) == 0
    assert await who(answered=("priorities",)) == 1  # ben's is partial
    assert await who(answered=("priorities", "report")) == 2
    assert await who(not_answered=("priorities",)) == 2
    assert await who(not_answered=("priorities", "report")) == 1


async def test_fields_combine_with_and_a_repeated_field_with_or(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    await resident(runtime, "+521", profile={"gender": "woman", "age_group": "18_29"})
    await resident(runtime, "+522", profile={"gender": "man", "age_group": "18_29"})
    await resident(runtime, "+523", profile={"gender": "woman", "age_group": "45_59"})
    await resident(runtime, "+524", profile={})
    young = ("age_group", "18_29")
    assert total(await b.counts(Audience(where=(("gender", "woman"), young)))) == 1
    assert total(await b.counts(Audience(where=(("gender", "woman"), ("gender", "man"))))) == 3
    either = (("gender", "woman"), ("gender", "man"), ("age_group", "45_59"))
    assert total(await b.counts(Audience(where=either))) == 1
    assert total(await b.counts(Audience(channels=("sms",), where=(young,)))) == 0


async def test_groups_instead_of_residents(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    await resident(runtime, "+521")
    centro = await group(runtime, "-1001", "centro", "en")
    await group(runtime, "-1002", "norte", None)
    await group(runtime, "-1003", "centro", "es", active=False)  # the bot was removed
    assert await b.counts(Audience(groups=True)) == {("telegram", "en"): 1, ("telegram", "es"): 1}
    only = Audience(groups=True, territories=("centro",), channels=("whatsapp",))
    assert await b.counts(only) == {("telegram", "en"): 1}  # channels: not for groups
    assert total(await b.counts(Audience(groups=True, languages=("es",)))) == 1
    broadcast_id = await started(b, only)
    [row] = await recipient_rows(runtime, broadcast_id)
    assert (row.group_id, row.contact_id, row.language) == (centro, None, "en")
    [claimed] = await b.claim("p1", 10, 30)
    assert (claimed.group_id, claimed.address, claimed.last_inbound_at) == (centro, "-1001", None)


# materialising ---------------------------------------------------------------------------


async def test_started_once_even_by_two_callers_at_the_same_time(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    now = utcnow()
    soon = await resident(runtime, "+521", last_inbound_at=now - timedelta(hours=23))
    later = await resident(runtime, "+522", language="en", last_inbound_at=now - timedelta(hours=2))
    closed = await resident(runtime, "+523", last_inbound_at=now - timedelta(hours=30))
    sms = await resident(runtime, "+524", channel="sms", last_inbound_at=now)
    info = await b.create(
        kind="flow",
        flow_id="priorities",
        texts={},
        audience=Audience(),
        template="invite",
        send_at=now + timedelta(minutes=5),
        created_by="ana",
    )
    assert (info.status, info.recipients, info.started_at) == ("scheduled", 4, None)
    assert info.send_at == now + timedelta(minutes=5)
    assert await b.start_due(now) == []  # not yet
    await resident(runtime, "+525")  # joins the audience before it starts
    first, second = await asyncio.gather(
        b.start_due(now + timedelta(minutes=6)), b.start_due(now + timedelta(minutes=6))
    )
    assert sorted(first + second) == [info.id]
    again = await b.get(info.id)
    assert (again.status, again.recipients) == ("sending", 5)
    assert again.started_at == now + timedelta(minutes=6)
    rows = {row.contact_id: row for row in await recipient_rows(runtime, info.id)}
    assert len(rows) == 5
    assert {row.state for row in rows.values()} == {"queued"}
    assert rows[later].language == "en" and rows[soon].language == "es"
    assert aware(rows[soon].window_closes_at) == now + timedelta(hours=1)
    assert aware(rows[later].window_closes_at) == now + timedelta(hours=22)
    assert rows[closed].window_closes_at is None  # closed already: no hurry
    assert rows[sms].window_closes_at is None
    assert await b.start_due(now + timedelta(hours=1)) == []


async def test_create_refuses_what_cannot_be_sent(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    base: dict[str, Any] = {
        "flow_id": None,
        "texts": {"es": "Hola"},
        "audience": Audience(),
        "template": None,
        "send_at": utcnow(),
        "created_by": None,
    }
    with pytest.raises(BroadcastError, match="unknown kind"):
        await b.create(**base | {"kind": "poster"})
    with pytest.raises(BroadcastError, match="needs the survey"):
        await b.create(**base | {"kind": "flow"})
    with pytest.raises(BroadcastError, match="needs its text"):
        await b.create(**base | {"kind": "message", "texts": {}})
    with pytest.raises(BroadcastError, match="unknown language 'de'"):
        await b.create(**base | {"kind": "message", "texts": {"de": "Hallo"}})
    assert await b.all() == []
    with pytest.raises(BroadcastError, match="no broadcast 7"):
        await b.get(7)


async def test_all_newest_first(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    first = await started(b)
    second = await started(b, flow_id="priorities")
    infos = await b.all()
    assert [i.id for i in infos] == [second, first]
    assert infos[0].kind == "flow" and infos[0].texts == {}
    assert infos[1].texts == {"es": "Hola", "en": "Hello"} and infos[1].created_by == "test"


# claiming --------------------------------------------------------------------------------


async def test_claimed_soonest_closing_window_first_then_no_window(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    now = utcnow()
    none = await resident(runtime, "+520")
    late = await resident(runtime, "+521", last_inbound_at=now - timedelta(hours=1))
    sms = await resident(runtime, "+522", channel="sms", language="fr")
    soon = await resident(runtime, "+523", last_inbound_at=now - timedelta(hours=20))
    broadcast_id = await started(b, flow_id="priorities")
    first = await b.claim("p1", 2, 30)
    assert [r.contact_id for r in first] == [soon, late]
    rest = await b.claim("p1", 10, 30)
    assert [r.contact_id for r in rest] == [none, sms]
    assert await b.claim("p1", 10, 30) == []
    one = first[0]
    assert one == Recipient(
        id=one.id,
        broadcast_id=broadcast_id,
        contact_id=soon,
        group_id=None,
        channel="whatsapp",
        address="+523",
        language="es",
        last_inbound_at=now - timedelta(hours=20),
        kind="flow",
        flow_id="priorities",
        texts={},
        template=None,
    )
    assert rest[1].language == "fr" and rest[1].last_inbound_at is None
    assert await b.holders() == {"p1"}


async def test_claims_by_channel(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    await resident(runtime, "+521")
    sms = await resident(runtime, "+522", channel="sms")
    await started(b)
    assert [r.contact_id for r in await b.claim("p1", 10, 30, channels=["sms"])] == [sms]
    assert await b.claim("p1", 10, 30, channels=["telegram"]) == []
    assert len(await b.claim("p1", 10, 30, channels={"whatsapp": 1}.keys())) == 1


async def test_two_claimers_never_share_a_recipient(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    for n in range(40):
        await resident(runtime, f"+52{n:03}")
    await started(b)
    batches = await asyncio.gather(*(b.claim(f"p{n}", 7, 30) for n in range(6)))
    ids = [r.id for batch in batches for r in batch]
    assert len(ids) == len(set(ids)) == 40
    rows = await recipient_rows(runtime, batches[0][0].broadcast_id)
    assert {row.state for row in rows} == {"sending"}
    assert {row.claimed_by for row in rows} == await b.holders()


async def test_expired_claims_are_taken_again_and_dead_holders_released(
    runtime: Runtime,
) -> None:
    b = Broadcasts(runtime.store.engine)
    for n in range(3):
        await resident(runtime, f"+52{n}")
    broadcast_id = await started(b)
    [held] = await b.claim("alive", 1, 60)
    [dead] = await b.claim("dead", 1, 60)
    [expired] = await b.claim("crashed", 1, -1)  # its lease has already run out
    assert await b.holders() == {"crashed", "alive", "dead"}
    [again] = await b.claim("p2", 5, 60)
    assert again.id == expired.id
    assert await b.release(["dead", "gone"]) == 1
    assert await b.release([]) == 0
    assert await b.holders() == {"alive", "p2"}
    [back] = await b.claim("p2", 5, 60)
    assert back.id == dead.id
    states = {
        row.id: (row.state, row.claimed_by) for row in await recipient_rows(runtime, broadcast_id)
    }
    assert states[held.id] == ("sending", "alive")
    await b.requeue(held.id)
    [retried] = await b.claim("p3", 5, 60)
    assert retried.id == held.id


async def test_a_paused_or_cancelled_broadcast_hands_out_nobody(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    await resident(runtime, "+521")
    await resident(runtime, "+522")
    broadcast_id = await started(b)
    await b.pause(broadcast_id)
    assert await b.claim("p1", 10, 30) == []
    await b.resume(broadcast_id)
    [one] = await b.claim("p1", 1, 30)
    await b.cancel(broadcast_id)
    assert await b.claim("p1", 10, 30) == []
    rows = {row.id: row for row in await recipient_rows(runtime, broadcast_id)}
    assert rows[one.id].state == "sending"  # being sent: its sender reports back
    [other] = [row for row in rows.values() if row.id != one.id]
    assert (other.state, other.reason) == ("skipped", "cancelled")


# outcomes --------------------------------------------------------------------------------


async def test_sent_invites_residents_to_a_flow_broadcasts_survey(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    ana = await resident(runtime, "+521")
    ben = await resident(runtime, "+522")
    flow_id = await started(b, Audience(where=()), flow_id="priorities")
    message_id = await started(b)
    claimed = await b.claim("p1", 10, 30)
    by = {(r.broadcast_id, r.contact_id): r.id for r in claimed}
    await b.sent(
        [
            (by[flow_id, ana], "SMa"),
            (by[message_id, ben], "SMb"),
            (by[message_id, ana], "SMc"),
        ]
    )
    await b.sent([])
    store = runtime.store
    invited = await store.contact(ana)
    assert invited.invited_flow == "priorities" and invited.invited_at is not None
    assert (await store.contact(ben)).invited_flow is None  # a message invites to nothing
    rows = {row.id: row for row in await recipient_rows(runtime, flow_id)}
    row = rows[by[flow_id, ana]]
    assert (row.state, row.provider_id, row.claimed_by, row.claimed_until) == (
        "sent",
        "SMa",
        None,
        None,
    )
    assert row.sent_at is not None
    assert rows[by[flow_id, ben]].state == "sending"  # not reported yet


async def test_failed_and_skipped_keep_their_reason(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    for n in range(3):
        await resident(runtime, f"+52{n}")
    broadcast_id = await started(b)
    one, two, three = await b.claim("p1", 10, 30)
    await b.failed(one.id, "63016")
    await b.skipped([two.id, three.id], "outside window")
    await b.skipped([], "nothing")
    rows = await recipient_rows(runtime, broadcast_id)
    assert [(r.state, r.reason, r.claimed_by) for r in rows] == [
        ("failed", "63016", None),
        ("skipped", "outside window", None),
        ("skipped", "outside window", None),
    ]
    assert await b.holders() == set()


async def test_delivery_statuses_only_move_forward(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    ana = await resident(runtime, "+521")
    ben = await resident(runtime, "+522")
    cloe = await resident(runtime, "+523")
    broadcast_id = await started(b)
    ids = {r.contact_id: r.id for r in await b.claim("p1", 10, 30)}
    await b.sent([(ids[ana], "SMa"), (ids[ben], "SMb"), (ids[cloe], "SMc")])

    async def state(contact_id: int) -> tuple[str, str | None]:
        rows = {r.contact_id: r for r in await recipient_rows(runtime, broadcast_id)}
        return rows[contact_id].state, rows[contact_id].reason

    assert await b.record_status("whatsapp", "SMa", "sent", None) == ana
    assert await b.record_status("whatsapp", "SMa", "read", None) == ana
    assert await b.record_status("whatsapp", "SMa", "delivered", None) == ana  # late
    assert await b.record_status("whatsapp", "SMa", "failed", "30008") == ana
    assert await state(ana) == ("read", None)
    await b.record_status("whatsapp", "SMb", "delivered", None)
    assert await state(ben) == ("delivered", None)
    assert await b.record_status("whatsapp", "SMc", "undelivered", "30003") == cloe
    assert await state(cloe) == ("failed", "30003")
    assert await b.record_status("whatsapp", "SMzz", "delivered", None) is None
    assert await b.record_status("sms", "SMa", "delivered", None) is None  # another channel
    assert not (await runtime.store.contact(cloe)).opted_out


async def test_unsubscribed_error_opts_the_resident_out(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    ana = await resident(runtime, "+521")
    await resident(runtime, "+522")
    broadcast_id = await started(b)
    ids = {r.contact_id: r.id for r in await b.claim("p1", 10, 30)}
    await b.sent([(ids[ana], "SMa")])
    assert await b.record_status("whatsapp", "SMa", "failed", "21610") == ana
    assert (await runtime.store.contact(ana)).opted_out
    async with runtime.store.engine.connect() as conn:
        at = (
            await conn.execute(select(Contact.opted_out_at).where(Contact.id == ana))
        ).scalar_one()
    assert at is not None
    [row] = [r for r in await recipient_rows(runtime, broadcast_id) if r.contact_id == ana]
    assert (row.state, row.reason) == ("failed", "21610")
    assert total(await b.counts(Audience())) == 1  # out of every audience from now on


# staff's controls ------------------------------------------------------------------------


async def test_pause_resume_and_cancel(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    await resident(runtime, "+521")
    later = await b.create(
        kind="message",
        flow_id=None,
        texts={"es": "Hola"},
        audience=Audience(),
        template=None,
        send_at=utcnow() + timedelta(hours=1),
        created_by=None,
    )
    assert (await b.pause(later.id)).status == "paused"
    assert (await b.resume(later.id)).status == "scheduled"  # it has not started yet
    now_id = await started(b)
    assert (await b.pause(now_id)).status == "paused"
    assert await b.start_due(utcnow() + timedelta(hours=2)) == [later.id]
    assert (await b.resume(now_id)).status == "sending"
    cancelled = await b.cancel(later.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert (await b.cancel(now_id)).status == "cancelled"
    paused = await b.create(
        kind="message",
        flow_id=None,
        texts={"es": "Hola"},
        audience=Audience(),
        template=None,
        send_at=utcnow() + timedelta(hours=1),
        created_by=None,
    )
    await b.pause(paused.id)
    assert (await b.cancel(paused.id)).status == "cancelled"


async def test_refused_transitions_say_why_and_change_nothing(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    await resident(runtime, "+521")
    sending = await started(b)
    with pytest.raises(
        BroadcastError, match=rf"^broadcast {sending} is not paused \(it is sending\)$"
    ):
        await b.resume(sending)
    assert (await b.get(sending)).status == "sending"
    await b.cancel(sending)
    before = await b.get(sending)
    with pytest.raises(BroadcastError, match=r"cannot be paused \(it is cancelled\)"):
        await b.pause(sending)
    with pytest.raises(BroadcastError, match=r"cannot be cancelled \(it is cancelled\)"):
        await b.cancel(sending)
    with pytest.raises(BroadcastError, match=r"is not paused \(it is cancelled\)"):
        await b.resume(sending)
    assert await b.get(sending) == before
    for control in (b.pause, b.resume, b.cancel):
        with pytest.raises(BroadcastError, match=r"^no broadcast 99$"):
            await control(99)


async def test_finished_when_nobody_is_left_to_send_to(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    await resident(runtime, "+521")
    await resident(runtime, "+522")
    waiting = await b.create(
        kind="message",
        flow_id=None,
        texts={"es": "Hola"},
        audience=Audience(languages=("fr",)),
        template=None,
        send_at=utcnow() + timedelta(hours=1),
        created_by=None,
    )
    broadcast_id = await started(b)
    empty = await started(b, Audience(languages=("fr",)))  # nobody speaks French
    assert await b.finish() == [empty]
    one, two = await b.claim("p1", 10, 30)
    await b.sent([(one.id, "SM1")])
    assert await b.finish() == []  # two is being sent
    await b.failed(two.id, "30003")
    assert await b.finish() == [broadcast_id]
    done = await b.get(broadcast_id)
    assert done.status == "done" and done.finished_at is not None
    assert (await b.get(waiting.id)).status == "scheduled"
    assert await b.finish() == []


async def test_progress_counts_the_funnel(runtime: Runtime) -> None:
    b = Broadcasts(runtime.store.engine)
    contacts = [await resident(runtime, f"+52{n}") for n in range(6)]
    await resident(runtime, "7001", channel="telegram")
    broadcast_id = await started(b, Audience(channels=("whatsapp",)), flow_id="priorities")
    empty = await b.progress(broadcast_id, utcnow())
    assert empty.by_state == dict.fromkeys(STATES, 0) | {"queued": 6}
    assert list(empty.by_state) == list(STATES)
    ids = {r.contact_id: r.id for r in await b.claim("p1", 5, 30)}
    ana, ben, cloe, dan, eva = contacts[:5]
    await b.sent([(ids[ana], "SMa"), (ids[ben], "SMb"), (ids[cloe], "SMc")])
    await b.record_status("whatsapp", "SMb", "delivered", None)
    await b.record_status("whatsapp", "SMc", "read", None)
    await b.failed(ids[dan], "63016")
    await b.skipped([ids[eva]], "outside window")

    async with runtime.store.engine.begin() as conn:
        rows = await conn.execute(select(BR.contact_id, BR.sent_at).where(BR.sent_at.is_not(None)))
        sent_at = {contact_id: utc(at) for contact_id, at in rows}
        # ana wrote back and completed the survey, ben wrote back, cloe had written before
        for contact_id, moment in (
            (ana, sent_at[ana] + timedelta(minutes=1)),
            (ben, sent_at[ben] + timedelta(minutes=2)),
            (cloe, sent_at[cloe] - timedelta(hours=1)),
        ):
            await conn.execute(
                update(Contact).where(Contact.id == contact_id).values(last_inbound_at=moment)
            )
    await submission(runtime, ana, "priorities", started_at=sent_at[ana] + timedelta(minutes=1))
    await submission(runtime, cloe, "priorities", started_at=sent_at[cloe] - timedelta(hours=1))
    await submission(runtime, ben, "priorities", status="partial", started_at=sent_at[ben])

    now = utcnow()
    progress = await b.progress(broadcast_id, now)
    assert progress.by_state == {
        "queued": 1,
        "sending": 0,
        "sent": 1,
        "delivered": 1,
        "read": 1,
        "failed": 1,
        "skipped": 1,
    }
    assert progress.failed_by_reason == {"63016": 1}
    assert progress.skipped_by_reason == {"outside window": 1}
    assert (progress.answered, progress.completed) == (2, 1)
    assert progress.sent_last_minute == 3
    assert (await b.progress(broadcast_id, now + timedelta(minutes=5))).sent_last_minute == 0

    message_id = await started(b, Audience(channels=("whatsapp",)))
    await b.sent([(r.id, f"SMm{r.id}") for r in await b.claim("p1", 10, 30, ["whatsapp"])])
    assert (await b.progress(message_id, utcnow())).completed == 0  # messages have no survey
    with pytest.raises(BroadcastError, match="no broadcast 99"):
        await b.progress(99, now)
