"""Group-committed writes on SQLite and PostgreSQL: a batch records each message once, keeps
each resident's rows apart, survives a dropped connection, and one bad turn sinks no other."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from consulta.bot.runtime import Runtime
from consulta.storage.models import Answer, Contact, MessageLog, Submission
from consulta.storage.turns import Changes, InboundRecord, record_many, write_turns


def said(
    address: str, provider_id: str | None, text: str, name: str | None = None
) -> InboundRecord:
    return InboundRecord("whatsapp", address, provider_id, text, {"text": text}, name=name)


async def count(rt: Runtime, column: object) -> int:
    async with rt.store.engine.connect() as conn:
        return (await conn.execute(select(func.count(column)))).scalar_one()  # type: ignore[call-overload]


async def test_one_batch_records_each_message_once(runtime: Runtime) -> None:
    store = runtime.store
    (earlier,) = await record_many(
        store.statements, store.pseudonym, store._lanes[0], [said("+521", "SM0", "hola")]
    )
    assert not isinstance(earlier, BaseException) and earlier.message_id
    batch = [
        said("+521", "SM1", "1"),
        said("+522", "SM2", "hola", name="Lupe"),
        said("+521", "SM3", "2"),  # the same resident again, in the same batch
        said("+522", "SM2", "hola"),  # a retry inside the batch
        said("+521", "SM0", "hola"),  # a retry of a message recorded before
        said("+523", None, "hola"),  # a local channel: no provider id
    ]
    results = await record_many(store.statements, store.pseudonym, store._lanes[0], batch)
    assert not any(isinstance(r, BaseException) for r in results)
    one, two, three, retry, old, local = results  # type: ignore[misc]
    assert one.contact_id == three.contact_id == old.contact_id == earlier.contact_id
    assert two.contact_id == retry.contact_id != one.contact_id
    assert None not in (one.message_id, two.message_id, three.message_id, local.message_id)
    assert retry.message_id is None and old.message_id is None
    assert one.message_id < three.message_id  # type: ignore[operator]
    assert await count(runtime, MessageLog.id) == 5
    assert await count(runtime, Contact.id) == 3
    lupe = await store.contact(two.contact_id)
    assert lupe.name is None  # the name the channel shows is kept only once she consents


async def test_many_callers_share_batches_and_each_gets_its_own_ids(runtime: Runtime) -> None:
    recorded = await asyncio.gather(
        *(
            runtime.store.record_inbound("whatsapp", f"+52{n % 7}", f"SM{n}", "hola", {})
            for n in range(60)
        )
    )
    assert len({message for _, message in recorded}) == 60
    assert len({contact for contact, _ in recorded}) == 7
    assert await count(runtime, MessageLog.id) == 60


async def test_a_dropped_connection_costs_a_retry_not_a_message(runtime: Runtime) -> None:
    store = runtime.store
    await store.record_inbound("whatsapp", "+521", "SM1", "hola", {})
    lane = store._lanes[0]
    assert lane._conn is not None
    kept = lane._conn
    raw = await kept.get_raw_connection()
    await raw.driver_connection.close()  # the server went away under the kept connection
    _, message_id = await store.record_inbound("whatsapp", "+521", "SM2", "1", {})
    assert message_id is not None
    assert lane._conn is not None and lane._conn is not kept  # dropped, and a fresh one taken
    assert await count(runtime, MessageLog.id) == 2


def turn(rt_contact: object, submission: str, folio: str, answer: str) -> Changes:
    changes = Changes(rt_contact)  # type: ignore[arg-type]
    changes.start_submission(submission, "priorities", 1, "es", None, folio)
    changes.save_answer(submission, "q1", "q1", answer, answer)
    changes.queue_outbound("whatsapp", f"thanks {answer}", {"text": f"thanks {answer}"})
    changes.queue_outbound("whatsapp", "next", {"text": "next"})
    return changes


async def test_one_bad_turn_sinks_no_other(runtime: Runtime) -> None:
    store = runtime.store
    contacts = []
    for n in range(3):
        contact_id, _ = await store.record_inbound("whatsapp", f"+52{n}", f"SM{n}", "hola", {})
        contacts.append(await store.contact(contact_id))
    turns = [
        turn(contacts[0], "s0", "F-0001", "a"),
        turn(contacts[1], "s1", "F-0001", "b"),  # the same folio again: refused
        turn(contacts[2], "s2", "F-0002", "c"),
    ]
    results = await write_turns(store.statements, store._lanes[2], turns)
    good, bad, other = results
    assert isinstance(bad, BaseException)
    assert not isinstance(good, BaseException) and not isinstance(other, BaseException)
    # Each turn's replies got their own ids, in the order they were queued.
    assert len(good.outbound_ids) == 2 and good.outbound_ids[0] < good.outbound_ids[1]
    assert len(other.outbound_ids) == 2 and not set(good.outbound_ids) & set(other.outbound_ids)
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(Submission.id).order_by(Submission.id))
        assert [r.id for r in rows] == ["s0", "s2"]
        answers = await conn.execute(select(Answer.raw_text).order_by(Answer.raw_text))
        assert [a.raw_text for a in answers] == ["a", "c"]
        bodies = await conn.execute(
            select(MessageLog.body).where(MessageLog.direction == "out").order_by(MessageLog.id)
        )
        assert [b.body for b in bodies] == ["thanks a", "next", "thanks c", "next"]


async def test_a_turn_that_fails_alone_raises_for_its_caller(runtime: Runtime) -> None:
    contact_id, _ = await runtime.store.record_inbound("whatsapp", "+521", "SM1", "hola", {})
    contact = await runtime.store.contact(contact_id)
    async with runtime.store.changes(contact) as tx:
        tx.start_submission("s0", "priorities", 1, "es", None, "F-0001")
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        async with runtime.store.changes(contact) as tx:
            tx.start_submission("s1", "priorities", 1, "es", None, "F-0001")
    assert await count(runtime, Submission.id) == 1
