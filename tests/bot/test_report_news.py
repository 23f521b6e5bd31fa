"""A report's status changes reach its reporter, on both backends, through the real twilio and
python-telegram-bot libraries to the doubles: as text inside WhatsApp's 24-hour window, by the
`report_status` template outside it, counted as not deliverable without one — and always on
Telegram — in the reporter's language, with the staff's note."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from consulta.bot.config import Settings
from consulta.bot.report_news import tell_reporter
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.storage.models import Contact, MessageLog, Submission
from consulta.storage.reports import Reports
from tests.adapters import test_telegram as tg
from tests.adapters import test_twilio as tw
from tests.adapters.loopback import sending_runtime
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import TwilioDouble

TEMPLATE_SID = "HX" + "5" * 32


async def file_report(say: Any, first: str) -> None:
    for text in (first, "sí" if first == "reporte" else "oui", "3", "Calle Hidalgo 12"):
        await say(text)
    await say("Lámpara fundida" if first == "reporte" else "Lampadaire en panne")
    await say("saltar" if first == "reporte" else "passer")  # no photo


async def folio_of(rt: Runtime, channel: str) -> str:
    async with rt.store.engine.connect() as conn:
        found = await conn.execute(
            select(Submission.folio)
            .where(Submission.channel == channel, Submission.status == "complete")
            .order_by(Submission.started_at.desc())
        )
        folio = found.scalars().first()
    assert folio, "the report was not completed"
    return folio


async def change(rt: Runtime, folio: str, status: str, note: str | None = None) -> None:
    reports = Reports(rt.store.engine, rt.settings.default_language)
    notice = await reports.set_status(folio, status, note=note, by="Ana")
    await tell_reporter(rt.inbox, notice)
    await rt.drain()


@pytest.fixture
async def templated(
    settings: Settings, doubles: tuple[TwilioDouble, TelegramDouble]
) -> AsyncIterator[Runtime]:
    twilio, _ = doubles
    async with sending_runtime(
        settings,
        twilio=tw.twilio_settings(twilio, templates={"report_status": {"es": TEMPLATE_SID}}),
        public_url=tw.PUBLIC,
    ) as runtime:
        yield runtime


async def test_inside_the_window_the_news_is_text_in_the_reporters_language(
    client: TestClient, rt: Runtime, doubles: tuple[TwilioDouble, TelegramDouble]
) -> None:
    phone = tw.Phone(client, rt, doubles[0])
    await file_report(phone.say, "reporte")
    folio = await folio_of(rt, "whatsapp")
    phone.replies()
    await change(rt, folio, "in_progress", "La cuadrilla va el lunes")
    assert phone.replies() == (
        f"Tu reporte {folio}: en proceso.\nNota del equipo: La cuadrilla va el lunes"
    )


async def test_on_telegram_the_news_always_arrives(
    client: TestClient, rt: Runtime, doubles: tuple[TwilioDouble, TelegramDouble]
) -> None:
    resident = tg.Resident(client, rt, doubles[1], language_code="fr")
    await file_report(resident.say, "signalement")
    folio = await folio_of(rt, "telegram")
    await change(rt, folio, "resolved")
    assert doubles[1].texts_to(tg.CHAT)[-1] == f"Votre signalement {folio} : résolu."


async def _outside_the_window(rt: Runtime) -> None:
    async with rt.store.engine.begin() as conn:
        await conn.execute(
            update(Contact).values(last_inbound_at=datetime.now(UTC) - timedelta(days=3))
        )


async def test_outside_the_window_the_template_carries_the_news(
    templated: Runtime, aiohttp_client: Any, doubles: tuple[TwilioDouble, TelegramDouble]
) -> None:
    client = await aiohttp_client(build_app(templated))
    phone = tw.Phone(client, templated, doubles[0])
    await file_report(phone.say, "reporte")
    folio = await folio_of(templated, "whatsapp")
    await _outside_the_window(templated)
    await change(templated, folio, "rejected", "Es propiedad privada")
    sent = doubles[0].messages[-1]
    assert sent["ContentSid"] == TEMPLATE_SID and "Body" not in sent
    assert f"Tu reporte {folio}: no procede." in sent["ContentVariables"]


async def test_outside_the_window_without_a_template_it_is_counted_undeliverable(
    client: TestClient, rt: Runtime, doubles: tuple[TwilioDouble, TelegramDouble]
) -> None:
    phone = tw.Phone(client, rt, doubles[0])
    await file_report(phone.say, "reporte")
    folio = await folio_of(rt, "whatsapp")
    before = len(doubles[0].messages)
    await _outside_the_window(rt)
    await change(rt, folio, "in_review")
    assert len(doubles[0].messages) == before  # no free text outside the window
    async with rt.store.engine.connect() as conn:
        last = (
            await conn.execute(
                select(MessageLog.status, MessageLog.error, MessageLog.body)
                .where(MessageLog.direction == "out")
                .order_by(MessageLog.id.desc())
            )
        ).first()
    assert last is not None and last.status == "failed" and "window" in (last.error or "")
    assert last.body == f"Tu reporte {folio}: en revisión."


async def test_a_reporter_asks_in_chat_and_sees_only_their_own_reports(
    client: TestClient, rt: Runtime, doubles: tuple[TwilioDouble, TelegramDouble]
) -> None:
    phone = tw.Phone(client, rt, doubles[0])
    await file_report(phone.say, "reporte")
    folio = await folio_of(rt, "whatsapp")
    await change(rt, folio, "in_progress", "La cuadrilla va el lunes")
    other = tw.Phone(client, rt, doubles[0], number="+5217700000009")
    await file_report(other.say, "reporte")
    theirs = await folio_of(rt, "whatsapp")
    assert theirs != folio
    phone.replies()

    mine = await phone.say("mis reportes")
    assert mine.startswith("Tus reportes:") and folio in mine and theirs not in mine
    assert "Alumbrado descompuesto · en proceso" in mine
    assert "en proceso: La cuadrilla va el lunes" in mine
    one = await phone.say(f"estado {folio.lower()}")
    assert one.startswith(f"{folio} · ") and "Tus reportes" not in one
    refused = await phone.say(f"estado {theirs}")
    assert refused.startswith(f"No encontramos el reporte {theirs} entre los tuyos.")

    english = await other.say("my reports")  # the language of the question, not a fixed one
    assert theirs in english and folio not in english


async def test_on_telegram_in_french(
    client: TestClient, rt: Runtime, doubles: tuple[TwilioDouble, TelegramDouble]
) -> None:
    resident = tg.Resident(client, rt, doubles[1], language_code="fr")
    await resident.say("mes signalements")
    assert doubles[1].texts_to(tg.CHAT)[-1].startswith("Vous n'avez pas encore de signalement")
    await file_report(resident.say, "signalement")
    folio = await folio_of(rt, "telegram")
    await resident.say(f"statut {folio}")
    assert f"{folio} · Éclairage en panne · reçu" in doubles[1].texts_to(tg.CHAT)[-1]
