"""Consent cannot be skipped, on every channel: a resident who answers the consent question with
"quizás", "mmm no sé", "a lo mejor" has nothing kept but the refusal — no answer, no profile
field, no photo, no name, not even their words in the message log — and writing again offers
the survey again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from consulta.adapters.message import Attachment, Inbound
from consulta.bot.runtime import Runtime
from consulta.flows.i18n import t
from consulta.storage.models import Consent, Contact, MessageLog, Submission
from consulta.storage.staff import Staff
from tests.adapters import test_telegram as tg
from tests.adapters import test_twilio as tw
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import TwilioDouble

MAYBE = ["quizás", "mmm no sé", "a lo mejor"]
CONSENT_QUESTION = "¿Aceptas participar?"


Say = Callable[[str], Awaitable[str]]


async def _resident(
    channel: str, client: TestClient, rt: Runtime, doubles: tuple[TwilioDouble, TelegramDouble]
) -> tuple[str, str, Say, Callable[[], Awaitable[None]]]:
    """(channel, address, say, send a photo) for one resident of `channel`."""
    twilio, telegram = doubles
    if channel in ("whatsapp", "sms"):
        phone = tw.Phone(client, rt, twilio, sms=channel == "sms")

        async def photo() -> None:
            form = phone.form(
                NumMedia="1", MediaUrl0=twilio.media_url("ME1"), MediaContentType0="image/png"
            )
            assert await phone.post(form) == 200

        return channel, tw.RESIDENT, phone.say, photo
    if channel == "telegram":
        resident = tg.Resident(client, rt, telegram)

        async def picture() -> None:
            photo = [{"file_id": "big", "file_unique_id": "b", "width": 640, "height": 480}]
            assert await resident.post(resident.message(photo=photo)) == 200

        return channel, str(tg.CHAT), resident.say, picture
    address = "vecina1234" if channel == "simulator" else "local"
    staff = await Staff(rt.store).add("Ana Analista", "analyst") if channel == "simulator" else ""

    async def say(text: str) -> str:
        before = len(await rt.store.conversation_log(channel, address))
        if channel == "simulator":
            response = await client.post(
                "/simulator/api/send",
                json={"session": address, "text": text},
                headers={"Authorization": f"Bearer {staff}"},
            )
            assert response.status == 200
        else:
            await rt.inbox.handle(Inbound(channel, address, text=text))
        await rt.drain()
        log = (await rt.store.conversation_log(channel, address))[before:]
        return "\n---\n".join(body or "" for _, d, body, _ in log if d == "out")

    async def local_photo() -> None:
        await rt.inbox.handle(
            Inbound(channel, address, attachments=(Attachment("/tmp/x.png", "image/png"),))
        )

    return channel, address, say, local_photo


@pytest.mark.parametrize("channel", ["whatsapp", "sms", "telegram", "terminal", "simulator"])
async def test_maybe_is_not_consent_and_nothing_is_kept(
    channel: str,
    client: TestClient,
    rt: Runtime,
    doubles: tuple[TwilioDouble, TelegramDouble],
) -> None:
    channel, address, say, photo = await _resident(channel, client, rt, doubles)
    assert CONSENT_QUESTION in await say("hola")
    assert await say(MAYBE[0]) == t("es", "reprompt-yes-no")
    assert await say(MAYBE[1]) == t("es", "reprompt-yes-no")
    ended = await say(MAYBE[2])
    assert ended == t("es", "consent-unclear")
    assert t("es", "moving-on") not in ended

    async with rt.store.engine.connect() as conn:
        contact = (
            await conn.execute(
                select(Contact).where(Contact.channel == channel, Contact.address == address)
            )
        ).one()
        submissions = (
            await conn.execute(select(Submission).where(Submission.contact_id == contact.id))
        ).all()
        consents = (
            await conn.execute(select(Consent).where(Consent.contact_id == contact.id))
        ).all()
        words = (
            await conn.execute(
                select(MessageLog.body, MessageLog.payload).where(
                    MessageLog.contact_id == contact.id, MessageLog.direction == "in"
                )
            )
        ).all()
    assert contact.profile == {} and contact.name is None
    assert [(s.status, s.cursor) for s in submissions] == [("declined", {})]
    assert [c.given for c in consents] == [False]
    assert (await rt.store.submissions(contact.id))[0]["answers"] == {}
    assert words and all(body is None and payload == {} for body, payload in words)

    # Writing again offers the survey again — not "thanks, you've already answered".
    again = await say("hola")
    assert CONSENT_QUESTION in again and "ya respondiste" not in again
    await photo()  # a photo before consent is no answer, and is neither fetched nor kept
    twilio, telegram = doubles
    assert twilio.media_requests == [] and telegram.called("getFile") == []
    assert not [p for p in Path(rt.settings.media_dir).glob("*")]  # noqa: ASYNC240


async def test_a_yes_keeps_answers_and_the_name_the_channel_shows(
    client: TestClient, rt: Runtime, doubles: tuple[TwilioDouble, TelegramDouble]
) -> None:
    phone = tw.Phone(client, rt, doubles[0])
    await phone.say("hola")
    assert (await rt.store.find_contact("whatsapp", tw.RESIDENT)).name is None  # type: ignore[union-attr]
    await phone.say("sí")
    await phone.say("2")
    contact = await rt.store.find_contact("whatsapp", tw.RESIDENT)
    assert contact is not None and contact.name == "Doña Lupe"
    assert contact.profile == {"age_group": "18_29"}
    [sub] = await rt.store.submissions(contact.id)
    assert sub["status"] == "partial" and sub["answers"]["age_group"] == "18_29"
