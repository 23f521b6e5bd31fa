"""WhatsApp and SMS through Twilio, end to end: webhooks signed exactly as Twilio signs them,
replies sent with the real `twilio` library to a double of the REST API on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from consulta.adapters.delivery import split_text
from consulta.adapters.media import MAX_BYTES, MediaRefused
from consulta.adapters.message import Attachment, Outbound, SendError
from consulta.adapters.twilio import (
    WHATSAPP,
    TwilioChannel,
    TwilioConfig,
    TwilioGateway,
    parse_message,
)
from consulta.bot.config import Settings, TwilioSettings
from consulta.bot.runtime import Runtime
from consulta.bot.server import MAX_BODY, build_app
from consulta.storage.models import MessageLog
from tests.adapters.loopback import sending_runtime
from tests.adapters.twilio_double import PNG, StorageDouble, TwilioDouble

SID = "AC" + "1" * 32
TOKEN = "twilio-test-token"
PUBLIC = "https://consulta.example.org"  # behind a TLS proxy: not the test server's own URL
WA_FROM = "whatsapp:+5213300000000"
SMS_FROM = "+5213300000001"
RESIDENT = "+5217711234567"


@pytest.fixture
async def double() -> AsyncIterator[TwilioDouble]:
    api = TwilioDouble(SID, TOKEN)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


def twilio_settings(double: TwilioDouble, **changes: Any) -> TwilioSettings:
    """The `twilio` section for `double`: WhatsApp and SMS, unpaced (Twilio's pacing would make
    each survey here last seconds)."""
    section = {
        "account_sid": SID,
        "auth_token": TOKEN,
        "whatsapp_from": WA_FROM,
        "sms_from": SMS_FROM,
        "api_base_url": double.url,
        "whatsapp_rate": 1000,
        "sms_rate": 1000,
    }
    return TwilioSettings.model_validate({**section, **changes})


@pytest.fixture
async def rt(settings: Settings, double: TwilioDouble) -> AsyncIterator[Runtime]:
    async with sending_runtime(
        settings, twilio=twilio_settings(double), public_url=PUBLIC
    ) as runtime:
        yield runtime


@pytest.fixture
async def client(rt: Runtime, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(build_app(rt))


def sign(form: dict[str, str], path: str = "/webhooks/twilio") -> str:
    return RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)


class Phone:
    """A resident's phone: sends signed webhooks, reads what the bot sent back."""

    def __init__(
        self,
        client: TestClient,
        rt: Runtime,
        double: TwilioDouble,
        *,
        sms: bool = False,
        number: str = RESIDENT,
    ):
        self.client, self.rt, self.double, self.sms = client, rt, double, sms
        self.number = number
        self.to = number if sms else f"whatsapp:{number}"
        self.seen = 0

    def form(self, body: str = "", **extra: str) -> dict[str, str]:
        form = {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "AccountSid": SID,
            "Body": body,
            "From": self.to,
            "To": SMS_FROM if self.sms else WA_FROM,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        if not self.sms:
            form |= {"ProfileName": "Doña Lupe", "WaId": self.number[1:]}
        return form | extra

    async def post(self, form: dict[str, str], signature: str | None = None) -> int:
        headers = {"X-Twilio-Signature": sign(form) if signature is None else signature}
        response = await self.client.post("/webhooks/twilio", data=form, headers=headers)
        if response.status == 200:
            assert response.content_type == "text/xml"
            assert await response.text() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
        await self.rt.drain()
        return response.status

    async def say(self, body: str = "", **extra: str) -> str:
        assert await self.post(self.form(body, **extra)) == 200
        return self.replies()

    def replies(self) -> str:
        bodies = self.double.bodies_to(self.to)
        new, self.seen = bodies[self.seen :], len(bodies)
        return "\n---\n".join(new)


@pytest.fixture
def phone(client: TestClient, rt: Runtime, double: TwilioDouble) -> Phone:
    return Phone(client, rt, double)


GREETING = {"es": "hola", "en": "hello", "fr": "bonjour"}
YES, NO = {"es": "Sí", "en": "Yes", "fr": "Oui"}, {"es": "No", "en": "No", "fr": "Non"}
PROBLEM = {
    "es": "Se va el agua diario",
    "en": "The water is cut every day",
    "fr": "L'eau est coupée chaque jour",
}
THANKS = {"es": "¡Gracias! Tu opinión", "en": "Thank you! Your views", "fr": "Merci ! Votre avis"}


@pytest.mark.parametrize("lang", ["es", "en", "fr"])
async def test_the_priorities_survey_over_whatsapp(phone: Phone, rt: Runtime, lang: str) -> None:
    assert "{privacy_url}" not in await phone.say(GREETING[lang])
    for answer in ("1", "2", "1", "Centro", "1", "2", "1,3", PROBLEM[lang], "4"):
        assert await phone.say(answer)
    last = await phone.say(Latitude="20.1011", Longitude="-98.7591", Label="Plaza Juárez")
    assert last.startswith(THANKS[lang])
    [sub] = await rt.store.submissions()
    assert sub["status"] == "complete" and sub["language"] == lang and sub["channel"] == "whatsapp"
    assert sub["answers"]["problem_location"] == {
        "latitude": 20.1011,
        "longitude": -98.7591,
        "label": "Plaza Juárez",
    }
    assert sub["answers"]["services_detail"] == ["water", "waste"]
    sent = phone.double.messages[-1]
    assert sent["From"] == WA_FROM and sent["To"] == f"whatsapp:{RESIDENT}"
    assert sent["StatusCallback"] == PUBLIC + "/webhooks/twilio/status"
    # Choices came as real WhatsApp buttons: a quick reply for yes/no, lists for longer menus.
    consent, age = phone.double.messages[0], phone.double.messages[1]
    assert phone.double.buttons_of(consent) == ("twilio/quick-reply", [YES[lang], NO[lang]])
    kind, items = phone.double.buttons_of(age)
    assert kind == "twilio/list-picker" and len(items) == 5


async def test_the_same_survey_over_sms_with_digits(
    client: TestClient, rt: Runtime, double: TwilioDouble
) -> None:
    phone = Phone(client, rt, double, sms=True)
    await phone.say("hola")
    for answer in ("1", "3", "2", "San Bartolo", "2", "3", "1 2", "Los baches", "2"):
        await phone.say(answer)
    assert (await phone.say("Calle Guerrero 12")).startswith(THANKS["es"])
    [sub] = await rt.store.submissions()
    assert sub["status"] == "complete" and sub["channel"] == "sms"
    assert sub["answers"]["problem_location"] == {"text": "Calle Guerrero 12"}
    assert {m["From"] for m in double.messages} == {SMS_FROM}
    assert {m["To"] for m in double.messages} == {RESIDENT}


async def test_a_report_with_a_photo_downloaded_with_the_account_credentials(
    phone: Phone, rt: Runtime, double: TwilioDouble
) -> None:
    await phone.say("reporte")
    await phone.say("sí")
    await phone.say("4")
    await phone.say(Latitude="20.12", Longitude="-98.73")
    assert "foto" in await phone.say("Bache enorme frente a la escuela")
    done = await phone.say(
        NumMedia="1", MediaUrl0=double.media_url("ME1"), MediaContentType0="image/png"
    )
    [sub] = await rt.store.submissions()
    assert sub["folio"] and sub["folio"] in done
    photo = sub["answers"]["photo"]
    assert photo["content_type"] == "image/png" and photo["media"].startswith("media/")
    kept = Path(rt.settings.media_dir) / Path(photo["media"]).name
    assert kept.read_bytes().startswith(b"\x89PNG")
    assert double.media_requests[-1] is not None and double.media_requests[-1].startswith("Basic")


async def test_a_voice_note_gets_asked_to_type(phone: Phone) -> None:
    await phone.say("hola")
    reply = await phone.say(
        NumMedia="1", MediaUrl0="https://api.twilio.com/x/Media/ME9", MediaContentType0="audio/ogg"
    )
    assert "notas de voz" in reply


async def test_profile_name_and_whatsapp_id_are_kept_on_the_contact(
    phone: Phone, rt: Runtime
) -> None:
    await phone.say("hola")
    contact = await rt.store.find_contact("whatsapp", RESIDENT)
    assert contact is not None and contact.name is None  # not before she consents
    await phone.say("sí")
    contact = await rt.store.find_contact("whatsapp", RESIDENT)
    assert contact is not None and contact.name == "Doña Lupe"
    async with rt.store._sessions() as session:
        from consulta.storage.models import Contact

        extra = (await session.execute(select(Contact.extra))).scalar_one()
    assert extra == {"wa_id": RESIDENT[1:]}


async def test_a_replayed_message_sid_gets_one_reply(phone: Phone, double: TwilioDouble) -> None:
    form = phone.form("hola")
    assert await phone.post(form) == 200
    assert await phone.post(form) == 200  # Twilio's retry after a timeout
    assert len(double.messages) == 1


@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl", "forged"])
async def test_forged_or_unsigned_requests_change_nothing(
    phone: Phone, rt: Runtime, double: TwilioDouble, signature: str
) -> None:
    assert await phone.post(phone.form("hola"), signature=signature) == 403
    assert await rt.store.submissions() == []
    assert await rt.store.find_contact("whatsapp", RESIDENT) is None
    assert double.messages == []


async def test_a_signature_for_the_socket_url_is_refused(phone: Phone, rt: Runtime) -> None:
    form = phone.form("hola")
    own_url = str(phone.client.make_url("/webhooks/twilio"))
    assert await phone.post(form, RequestValidator(TOKEN).compute_signature(own_url, form)) == 403
    assert await rt.store.find_contact("whatsapp", RESIDENT) is None


async def test_bad_requests_get_a_clear_4xx(phone: Phone, rt: Runtime) -> None:
    client = phone.client
    assert (await client.get("/webhooks/twilio")).status == 405
    json_body = await client.post("/webhooks/twilio", json={"Body": "hola"})
    assert json_body.status == 415
    huge = await client.post(
        "/webhooks/twilio",
        data=b"Body=" + b"a" * MAX_BODY,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status == 413
    broken = await client.post(
        "/webhooks/twilio",
        data=b"Body=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert broken.status == 400
    no_sender = phone.form("hola")
    del no_sender["From"]
    assert await phone.post(no_sender) == 400
    bad_media = phone.form("hola", NumMedia="lots")
    assert await phone.post(bad_media) == 400
    assert await rt.store.submissions() == []


async def test_a_rate_limited_send_is_retried(phone: Phone, double: TwilioDouble) -> None:
    double.fail_next(429, 20429, "Too Many Requests")
    assert await phone.say("hola")
    assert len(double.messages) == 1


async def test_a_server_error_is_retried(phone: Phone, double: TwilioDouble) -> None:
    double.fail_next(503, 20503, "Service unavailable", times=2)
    assert await phone.say("hola")


async def test_21610_marks_the_contact_opted_out(
    phone: Phone, rt: Runtime, double: TwilioDouble
) -> None:
    double.fail_next(400, 21610, "Attempt to send to unsubscribed recipient")
    await phone.say("hola")
    contact = await rt.store.find_contact("whatsapp", RESIDENT)
    assert contact is not None and contact.opted_out
    assert double.messages == []  # not retried


async def test_other_client_errors_are_not_retried(
    phone: Phone, rt: Runtime, double: TwilioDouble
) -> None:
    double.fail_next(400, 21211, "Invalid 'To' Phone Number")
    await phone.say("hola")
    async with rt.store._sessions() as session:
        row = (
            await session.execute(select(MessageLog).where(MessageLog.direction == "out"))
        ).scalar_one()
    assert row.status == "failed" and row.attempts == 1 and row.error.startswith("21211")


async def test_status_callbacks_are_recorded(
    phone: Phone, rt: Runtime, double: TwilioDouble
) -> None:
    await phone.say("hola")
    async with rt.store._sessions() as session:
        sid = (
            await session.execute(
                select(MessageLog.provider_id).where(MessageLog.direction == "out")
            )
        ).scalar_one()
    for state, error in (("sent", ""), ("delivered", ""), ("read", "")):
        form = {
            "MessageSid": sid,
            "MessageStatus": state,
            "From": WA_FROM,
            "To": f"whatsapp:{RESIDENT}",
            "AccountSid": SID,
        }
        if error:
            form["ErrorCode"] = error
        response = await phone.client.post(
            "/webhooks/twilio/status",
            data=form,
            headers={"X-Twilio-Signature": sign(form, "/webhooks/twilio/status")},
        )
        assert response.status == 204
    async with rt.store._sessions() as session:
        row = (
            await session.execute(select(MessageLog).where(MessageLog.provider_id == sid))
        ).scalar_one()
    assert row.status == "read"
    unsigned = await phone.client.post("/webhooks/twilio/status", data={"MessageSid": sid})
    assert unsigned.status == 403


async def test_a_button_press_answers_the_question(phone: Phone, rt: Runtime) -> None:
    await phone.say("hola")
    await phone.say(ButtonPayload="consent:1", ButtonText="Sí")
    reply = await phone.say(ListId="age_group:30_44", ListTitle="30 a 44")
    assert reply.startswith("¿Con qué género te identificas?")
    [sub] = await rt.store.submissions()
    assert sub["answers"]["age_group"] == "30_44" and sub["answers"]["consent"] is True


async def test_buttons_are_created_once_and_reused(phone: Phone, double: TwilioDouble) -> None:
    await phone.say("hola")
    await phone.say("reiniciar")  # the same consent question again
    consent_sids = {m["ContentSid"] for m in double.messages if "ContentSid" in m}
    assert len(double.contents) == len(consent_sids) == 1


async def test_if_the_content_api_fails_numbered_text_still_goes(
    phone: Phone, double: TwilioDouble
) -> None:
    double.contents_down = True
    reply = await phone.say("hola")
    assert "1. Sí\n2. No" in reply and "Body" in double.messages[-1]


def test_a_quick_reply_press_carries_the_payload() -> None:
    message = parse_message(
        {
            "From": "whatsapp:+52155",
            "MessageSid": "SM1",
            "ButtonPayload": "pillar:security",
            "ButtonText": "Seguridad",
        }
    )
    assert message.payload == "pillar:security" and message.text is None


def test_a_button_without_payload_reads_as_its_title() -> None:
    message = parse_message({"From": "whatsapp:+52155", "MessageSid": "SM1", "ButtonText": "Sí"})
    assert message.text == "Sí" and message.channel == "whatsapp" and message.address == "+52155"


def test_long_sms_split_between_lines() -> None:
    text = "\n".join(f"{i}. " + "x" * 90 for i in range(1, 40))
    parts = split_text(text, limit=400)
    assert all(len(p) <= 400 for p in parts)
    assert "\n".join(parts) == text
    assert split_text("short", 1600) == ["short"]
    words = split_text("palabra " * 100, limit=50)
    assert all(len(p) <= 50 for p in words) and " ".join(words).split() == ["palabra"] * 100


def _channel(double: TwilioDouble, templates: dict[str, dict[str, str]]) -> TwilioChannel:
    config = TwilioConfig(
        account_sid=SID,
        auth_token=TOKEN,
        public_url=PUBLIC,
        whatsapp_from=WA_FROM,
        api_base_url=double.url,
        whatsapp_rate=1000,
        templates=templates,
    )
    return TwilioChannel(WHATSAPP, TwilioGateway(config), owns_routes=True)


async def test_outside_the_24_hour_window_an_approved_template_is_used(
    double: TwilioDouble,
) -> None:
    channel = _channel(double, {"reminder": {"es": "HXes", "fr": "HXfr"}})
    late = Outbound(
        WHATSAPP,
        RESIDENT,
        "Votre signalement est résolu",
        language="fr",
        last_inbound_at=time.time() - 25 * 3600,
        template="reminder",
    )
    try:
        await channel.send(late)
        await channel.send(replace(late, last_inbound_at=time.time() - 60))  # window open
    finally:
        await channel.close()
    template, reply = double.messages
    assert template["ContentSid"] == "HXfr" and "Body" not in template
    assert json.loads(template["ContentVariables"]) == {"1": "Votre signalement est résolu"}
    assert reply["Body"] == "Votre signalement est résolu" and "ContentSid" not in reply


async def test_outside_the_window_without_a_template_nothing_is_sent(double: TwilioDouble) -> None:
    channel = _channel(double, {})
    late = Outbound(WHATSAPP, RESIDENT, "Recordatorio", language="es", last_inbound_at=None)
    try:
        with pytest.raises(SendError) as refused:
            await channel.send(late)
    finally:
        await channel.close()
    assert refused.value.permanent and "24-hour window" in str(refused.value)
    assert double.messages == []


def test_the_settings_section_becomes_the_channels_configuration() -> None:
    section = TwilioSettings(
        account_sid=SID,
        auth_token=TOKEN,
        whatsapp_from=WA_FROM,
        api_base_url="https://proxy.example/twilio/",
        templates='{"reminder": {"es": "HXes"}}',  # as the environment gives it
    )
    config = TwilioConfig.from_settings(section, PUBLIC + "/")
    assert config is not None and config.auth_token == TOKEN and config.public_url == PUBLIC
    assert config.api_base_url == "https://proxy.example/twilio"
    assert config.templates == {"reminder": {"es": "HXes"}}
    assert TwilioConfig.from_settings(TwilioSettings(account_sid=SID), PUBLIC) is None


# --- media: only from Twilio's host, credentials only there, capped, images only ----------


@pytest.fixture
async def storage() -> AsyncIterator[StorageDouble]:
    other = StorageDouble()
    await other.start()
    try:
        yield other
    finally:
        await other.stop()


def _gateway(double: TwilioDouble) -> TwilioGateway:
    return TwilioGateway(TwilioConfig(SID, TOKEN, PUBLIC, api_base_url=double.url))


async def _fetch(double: TwilioDouble, url: str) -> bytes:
    gateway = _gateway(double)
    try:
        return await gateway.fetch_media(Attachment(url, "image/png"))
    finally:
        await gateway.close()


async def test_the_redirect_to_storage_on_another_host_carries_no_credentials(
    double: TwilioDouble, storage: StorageDouble
) -> None:
    double.storage = storage.url
    assert await _fetch(double, double.media_url("ME1")) == PNG
    [asked] = double.media_requests
    assert asked is not None and asked.startswith("Basic ")
    assert storage.requests == [None]


@pytest.mark.parametrize(
    "where",
    [
        "{storage}/storage/ME1",  # another port of the same address: another origin
        "https://evil.example/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        "{api}@evil.example/x",  # the API's host as user info
        "http://user:pw@{api_host}/2010-04-01/x",
        "ftp://{api_host}/x",
        "/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        "not a url at all",
    ],
)
async def test_a_media_url_off_the_api_host_is_never_fetched(
    double: TwilioDouble, storage: StorageDouble, where: str
) -> None:
    url = where.format(storage=storage.url, api=double.url, api_host=double.url[7:])
    with pytest.raises(MediaRefused):
        await _fetch(double, url)
    assert storage.requests == [] and double.media_requests == []


async def test_redirects_are_followed_a_few_times_only(
    double: TwilioDouble, storage: StorageDouble
) -> None:
    double.storage, storage.hops = storage.url, 2
    assert await _fetch(double, double.media_url("ME1")) == PNG
    assert storage.requests == [None, None, None]
    storage.hops = 10
    with pytest.raises(MediaRefused, match="redirected more than"):
        await _fetch(double, double.media_url("ME1"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
async def test_a_file_over_the_limit_is_refused(
    double: TwilioDouble, storage: StorageDouble, chunked: bool
) -> None:
    double.storage = storage.url
    storage.body, storage.chunked = PNG + b"\0" * MAX_BYTES, chunked
    with pytest.raises(MediaRefused, match="byte limit"):
        await _fetch(double, double.media_url("ME1"))


@pytest.mark.parametrize(
    "body", [b"<html>login</html>", b"%PDF-1.7\n", b"", b"RIFF\0\0\0\0WAVEfmt "]
)
async def test_a_file_that_is_not_an_image_is_refused_whatever_its_content_type(
    double: TwilioDouble, storage: StorageDouble, body: bytes
) -> None:
    double.storage, storage.body = storage.url, body
    with pytest.raises(MediaRefused, match="not an image"):
        await _fetch(double, double.media_url("ME1"))


async def test_a_refused_photo_is_logged_without_its_url_or_the_resident(
    phone: Phone, rt: Runtime, storage: StorageDouble, caplog: pytest.LogCaptureFixture
) -> None:
    for step in ("reporte", "sí", "4"):  # as in the report test above, up to the photo
        await phone.say(step)
    await phone.say(Latitude="20.12", Longitude="-98.73")
    await phone.say("Bache enorme frente a la escuela")
    url = f"{storage.url}/storage/ME1?Signature=very-secret-signature"
    with caplog.at_level(logging.INFO):
        await phone.say(NumMedia="1", MediaUrl0=url, MediaContentType0="image/png")
    assert storage.requests == []
    [sub] = await rt.store.submissions()
    assert sub["answers"]["photo"]["media"] == url  # the provider's reference, not a copy
    kept = await asyncio.to_thread(lambda: list(Path(rt.settings.media_dir).glob("*")))
    assert kept == []
    logged = "\n".join(
        r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
    )
    assert "could not keep a photo" in logged
    assert "very-secret-signature" not in logged and RESIDENT[1:] not in logged


async def test_twilios_own_media_urls_go_through_the_configured_api_base(
    double: TwilioDouble,
) -> None:
    path = double.media_url("ME7").removeprefix(double.url)
    assert await _fetch(double, "https://api.twilio.com" + path) == PNG
    assert double.media_requests[0] is not None  # the base is the API: credentials go there


def test_media_urls_are_fetched_from_the_api_base_host_by_default() -> None:
    section = TwilioSettings(account_sid=SID, auth_token=TOKEN)
    config = TwilioConfig.from_settings(section, PUBLIC)
    assert config is not None and config.api_base_url == "https://api.twilio.com"


# --- what Postgres can't hold never reaches it ------------------------------------------


async def test_nul_characters_a_long_sid_and_a_long_name_are_not_a_server_error(
    phone: Phone, rt: Runtime
) -> None:
    long_name = "Lupe\0" + "x" * 500
    assert await phone.post(phone.form("ho\0la", ProfileName=long_name)) == 200
    assert await phone.post(phone.form("s\0í", ProfileName=long_name)) == 200  # consent: name
    assert await phone.post(phone.form("hola", MessageSid="SM" + "1" * 100)) == 400
    assert await _inbound_bodies(rt) == ["hola", "sí"]


async def test_an_unknown_delivery_status_is_refused(phone: Phone) -> None:
    form = {"MessageSid": "SM1", "MessageStatus": "x" * 40, "From": WA_FROM, "AccountSid": SID}
    response = await phone.client.post(
        "/webhooks/twilio/status",
        data=form,
        headers={"X-Twilio-Signature": sign(form, "/webhooks/twilio/status")},
    )
    assert response.status == 400


async def _inbound_bodies(rt: Runtime) -> list[str | None]:
    async with rt.store._sessions() as session:
        rows = await session.execute(select(MessageLog.body).where(MessageLog.direction == "in"))
    return list(rows.scalars())
