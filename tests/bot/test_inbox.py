"""The inbox on both backends: answers stored before replies, retries processed once, one
resident's messages strictly in order across processes, and nothing lost to a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from consulta.adapters.message import Attachment, Inbound, Outbound, Place, SendError, Sent
from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.flows.i18n import t
from consulta.storage.models import MessageLog
from tests.settings import reset_redis

FIXTURES = str(Path(__file__).parent.parent / "fixtures" / "flows")
CHANNEL = "test"


class Recorder:
    """A channel that records what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[Outbound] = []

    async def send(self, message: Outbound) -> Sent:
        self.sent.append(message)
        return Sent(provider_id=f"p{len(self.sent)}")


@pytest.fixture
def test_settings(settings: Settings) -> Settings:
    return settings.with_(flows_path=(FIXTURES,))


async def open_runtime(settings: Settings) -> Runtime:
    return await Runtime.create(settings, migrate=settings.redis_url is None)


@pytest.fixture
async def rt(test_settings: Settings) -> AsyncIterator[Runtime]:
    runtime = await open_runtime(test_settings)
    runtime.outbox.register(CHANNEL, Recorder())
    try:
        yield runtime
    finally:
        await runtime.close()


def msg(text: str | None = None, *, address: str = "+5213312345678", **kwargs: object) -> Inbound:
    return Inbound(CHANNEL, address, text=text, **kwargs)  # type: ignore[arg-type]


async def begin(rt: Runtime, language: str, **kwargs: object) -> None:
    """Open the test flow and say yes to its consent question."""
    await rt.inbox.handle(msg(start="kinds", language=language, **kwargs))
    await rt.inbox.handle(msg("sí", **kwargs))


async def replies(rt: Runtime, address: str = "+5213312345678") -> list[str]:
    return [
        body or ""
        for _, d, body, _ in await rt.store.conversation_log(CHANNEL, address)
        if d == "out"
    ]


async def test_a_whole_flow_is_stored_answer_by_answer(rt: Runtime) -> None:
    await begin(rt, "es")
    for text in ("1", "2", "si", "4", "7"):
        await rt.inbox.handle(msg(text))
    await rt.inbox.handle(msg(place=Place(20.1, -98.75, "Plaza Juárez")))
    [partial] = await rt.store.submissions()
    assert partial["status"] == "partial"
    assert partial["answers"]["score"] == 4  # each answer stored as it is given
    await rt.inbox.handle(msg(attachments=(Attachment("media/a.jpg", "image/jpeg"),)))
    [done] = await rt.store.submissions()
    assert done["status"] == "complete" and done["flow"] == "kinds" and done["version"] == 1
    assert done["answers"] == {
        "consent": True,
        "age": "young",
        "likes": ["light"],
        "agree": True,
        "score": 4,
        "count": 7,
        "place": {"latitude": 20.1, "longitude": -98.75, "label": "Plaza Juárez"},
        "pic": {"media": "media/a.jpg", "content_type": "image/jpeg"},
    }
    log = await replies(rt)
    assert log[0] == "Hola" and log[-1] == "Gracias"


async def test_replies_leave_through_the_outbox(rt: Runtime) -> None:
    recorder = rt.outbox.senders[CHANNEL]
    assert isinstance(recorder, Recorder)
    await begin(rt, "en")
    stop = asyncio.Event()
    # One sender, so the two turns' replies leave in the order they were queued.
    sending = asyncio.create_task(rt.outbox.run(stop, concurrency=1))
    await rt.queue.join()
    stop.set()
    await sending
    assert [m.text.split("\n")[0] for m in recorder.sent] == ["Hello", "Do you agree?", "Age"]
    assert [b.payload for b in recorder.sent[2].buttons] == ["age:young", "age:older"]
    async with rt.store._sessions() as session:
        statuses = (
            await session.execute(
                select(MessageLog.status, MessageLog.provider_id).where(
                    MessageLog.direction == "out"
                )
            )
        ).all()
    assert statuses == [("sent", "p1"), ("sent", "p2"), ("sent", "p3")]


async def test_a_retried_webhook_is_processed_once(rt: Runtime) -> None:
    await rt.inbox.handle(msg(start="kinds", language="es", provider_id="SM1"))
    first = await rt.inbox.handle(msg("1", provider_id="SM2"))
    again = await rt.inbox.handle(msg("1", provider_id="SM2"))
    assert not first.duplicate and again.duplicate
    assert len(await replies(rt)) == 3  # Hola, ¿Aceptas?, Edad: one reply to SM2


async def test_a_retry_after_a_restart_is_still_processed_once(test_settings: Settings) -> None:
    first = await open_runtime(test_settings)
    await first.inbox.handle(msg("hola", provider_id="SM9"))
    await first.close()
    second = await open_runtime(test_settings)
    try:
        assert (await second.inbox.handle(msg("hola", provider_id="SM9"))).duplicate
    finally:
        await second.close()


async def test_killing_the_process_mid_survey_loses_nothing(test_settings: Settings) -> None:
    first = await open_runtime(test_settings)
    await begin(first, "fr")
    await first.inbox.handle(msg("1"))
    await first.inbox.handle(msg("1 2"))
    await first.store.close()  # no goodbye: the process state is simply gone
    if test_settings.redis_url:
        await reset_redis(first.states.redis)  # type: ignore[attr-defined]
    second = await open_runtime(test_settings)
    try:
        await second.inbox.handle(msg("oui"))
        [sub] = await second.store.submissions()
        assert sub["answers"] == {
            "consent": True,
            "age": "young",
            "likes": ["water", "light"],
            "agree": True,
        }
        assert (await replies(second))[-1].startswith("Note")  # the next question, in French
    finally:
        await second.close()
        await first.close()  # only to release its sockets; its state was already gone


async def test_one_residents_messages_are_handled_in_order_across_processes(
    test_settings: Settings,
) -> None:
    # Two web processes share one store; on SQLite (one process by design) the same one twice.
    a = await open_runtime(test_settings)
    b = await open_runtime(test_settings) if test_settings.redis_url else a
    try:
        await begin(a, "es")
        first = await a.inbox.receive(msg("1", provider_id="m1"))
        second = await b.inbox.receive(msg("3", provider_id="m2"))
        assert first.contact_id == second.contact_id is not None
        await asyncio.gather(
            *(rt.inbox.process(first.contact_id) for rt in (a, b, a, b))  # type: ignore[arg-type]
        )
        [sub] = await a.store.submissions()
        # "1" answered the age question and "3" the next one — never both the same question.
        assert sub["answers"] == {"consent": True, "age": "young", "likes": ["parks"]}
        assert len(await replies(a)) == 5
    finally:
        await a.close()
        if b is not a:
            await b.close()


async def test_stop_opts_out_until_the_resident_writes_again(rt: Runtime) -> None:
    await rt.inbox.handle(msg(start="kinds", language="en"))
    received = await rt.inbox.handle(msg("stop"))
    assert (await replies(rt))[-1] == t("en", "stopped")
    assert (await rt.store.contact(received.contact_id)).opted_out  # type: ignore[arg-type]
    await rt.inbox.handle(msg("hello"))
    assert not (await rt.store.contact(received.contact_id)).opted_out  # type: ignore[arg-type]


async def test_an_idle_resident_is_known_idle_without_asking_the_database(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rt.inbox.handle(msg(start="kinds", language="en"))
    received = await rt.inbox.handle(msg("stop"))
    assert await rt.states.get(received.contact_id) == {}  # type: ignore[arg-type]

    async def no_lookup(contact_id: int) -> None:
        raise AssertionError("an idle conversation was looked up in the database")

    monkeypatch.setattr(rt.store, "open_cursor", no_lookup)
    await rt.inbox.handle(msg("hello"))
    assert await replies(rt)


async def test_profile_answers_are_reused_by_later_flows(rt: Runtime) -> None:
    await begin(rt, "es")
    await rt.inbox.handle(msg("2"))
    await rt.inbox.handle(msg("stop"))
    await rt.inbox.handle(msg(start="kinds"))
    received = await rt.inbox.handle(msg("sí"))
    contact = await rt.store.contact(received.contact_id)  # type: ignore[arg-type]
    assert contact.profile == {"age_group": "older"} and contact.language == "es"
    subs = await rt.store.submissions()
    assert len(subs) == 2 and subs[1]["answers"] == {"consent": True, "age": "older"}
    assert (await replies(rt))[-1].startswith("Gustos")  # the age question was skipped


async def test_consent_is_stored_with_notice_version(rt: Runtime) -> None:
    await rt.inbox.handle(msg(start="reporte", language="es"))
    received = await rt.inbox.handle(msg("acepto"))
    [consent] = await rt.store.consents(received.contact_id)  # type: ignore[arg-type]
    assert consent["given"] is True and consent["notice_version"] == "v7"
    await rt.inbox.handle(msg("Fuga en la calle Allende"))
    [sub] = await rt.store.submissions()
    assert sub["folio"] and (await replies(rt))[-1] == f"Folio {sub['folio']}"


async def test_a_permanent_send_error_opts_the_contact_out(rt: Runtime) -> None:
    class Blocked:
        async def send(self, message: Outbound) -> Sent:
            raise SendError("blocked by the user", opted_out=True, code="21610")

    rt.outbox.register(CHANNEL, Blocked())
    await rt.inbox.handle(msg("hola"))
    ids = [
        i for i, d, _, _ in await rt.store.conversation_log(CHANNEL, "+5213312345678") if d == "out"
    ]
    assert await rt.outbox.deliver(ids[0]) == "failed"
    contact = await rt.store.find_contact(CHANNEL, "+5213312345678")
    assert contact is not None and contact.opted_out


async def test_the_sweep_picks_up_what_a_crash_left(rt: Runtime) -> None:
    received = await rt.inbox.receive(msg("hola"))  # recorded, then the process "died"
    assert (await rt.store.inbox(received.contact_id)).waiting  # type: ignore[arg-type]
    await rt.sweep(pending_after=timedelta(0))
    await rt.settle()
    assert not (await rt.store.inbox(received.contact_id)).waiting  # type: ignore[arg-type]
    assert await replies(rt)


async def test_health_reports_each_backend(rt: Runtime) -> None:
    checks = await rt.health()
    assert checks["database"] == "ok"
    assert checks.get("redis", "ok") == "ok"
    assert ("redis" in checks) == bool(rt.settings.redis_url)


async def test_a_bug_in_the_engine_does_not_wedge_the_inbox(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    await begin(rt, "es")
    monkeypatch.setattr(rt.engine, "handle", broken)
    received = await rt.inbox.handle(msg("1"))
    assert (await replies(rt))[-1] == t("es", "not-understood")
    assert (await rt.store.inbox(received.contact_id)).waiting == 0  # type: ignore[arg-type]
    assert "+5213312345678" not in caplog.text  # the log names the pseudonym, not the number
    monkeypatch.undo()
    await rt.inbox.handle(msg("1"))  # the resident carries on where they were
    assert (await replies(rt))[-1].startswith("Gustos")


async def test_a_resident_sees_what_is_held_about_them(rt: Runtime) -> None:
    await begin(rt, "es", name="Rosa")
    await rt.inbox.handle(msg("2"))
    await rt.inbox.handle(msg("mis datos"))
    summary, question = (await replies(rt))[-2:]
    assert "Nombre: Rosa" in summary and "age_group: older" in summary
    assert "Participaciones: 1 (2 respuestas)" in summary and question.startswith("Gustos")


@pytest.mark.parametrize(("answer", "kept"), [("1", True), ("2", False)])
async def test_a_resident_who_asks_to_be_forgotten_is(rt: Runtime, answer: str, kept: bool) -> None:
    recorder = rt.outbox.senders[CHANNEL]
    assert isinstance(recorder, Recorder)
    await begin(rt, "es", name="Rosa")
    received = await rt.inbox.handle(msg("1"))
    await rt.inbox.handle(msg("borrar mis datos"))
    await rt.inbox.handle(msg(answer))
    # The confirmation was sent before the address was forgotten...
    assert recorder.sent[-1].text == t("es", "forget-done" if kept else "forget-done-all")
    # ...and nothing points back to the resident any more.
    assert await rt.store.find_contact(CHANNEL, "+5213312345678") is None
    subs = await rt.store.submissions()
    assert ([s["answers"] for s in subs] == [{"consent": True, "age": "young"}]) is kept
    assert await rt.states.get(received.contact_id) is None  # type: ignore[arg-type]
