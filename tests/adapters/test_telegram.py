"""Telegram end to end: real Bot API update shapes through the webhook, replies through the real
python-telegram-bot `Bot` to a double of the Bot API on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from consulta.adapters.media import MAX_BYTES, MediaRefused
from consulta.adapters.message import Attachment
from consulta.adapters.telegram import SECRET_HEADER, TelegramChannel, TelegramConfig
from consulta.bot.config import Settings, TelegramSettings
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.bot.telegram_setup import StaffError, invite, post_poll, register_group, set_webhook
from consulta.storage.models import MessageLog
from tests.adapters.loopback import sending_runtime
from tests.adapters.telegram_double import TelegramDouble
from tests.adapters.twilio_double import PNG

TOKEN = "123456:TEST-token"
SECRET = "webhook-secret-of-the-test"
PUBLIC = "https://consulta.example.org"
CHAT = 5550001


@pytest.fixture
async def double() -> AsyncIterator[TelegramDouble]:
    api = TelegramDouble(TOKEN)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


def telegram_settings(double: TelegramDouble, **changes: Any) -> TelegramSettings:
    """The `telegram` section for `double`. Telegram's 1 message/s per chat would make each
    survey here last half a minute."""
    section = {
        "bot_token": TOKEN,
        "webhook_secret": SECRET,
        "api_base_url": double.url,
        "chat_rate": 100,
    }
    return TelegramSettings.model_validate({**section, **changes})


@pytest.fixture
async def rt(settings: Settings, double: TelegramDouble) -> AsyncIterator[Runtime]:
    async with sending_runtime(
        settings, telegram=telegram_settings(double), public_url=PUBLIC
    ) as runtime:
        yield runtime


@pytest.fixture
async def client(rt: Runtime, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(build_app(rt))


USER = {"id": CHAT, "is_bot": False, "first_name": "Lupita", "language_code": "es-MX"}
PRIVATE = {"id": CHAT, "type": "private", "first_name": "Lupita"}


class Resident:
    """A Telegram user in a private chat with the bot."""

    ids = itertools.count(1000)

    def __init__(
        self, client: TestClient, rt: Runtime, double: TelegramDouble, language_code: str = "es"
    ) -> None:
        self.client, self.rt, self.double = client, rt, double
        self.user = {**USER, "language_code": language_code}
        self.seen = 0

    def message(self, **content: Any) -> dict[str, Any]:
        return {
            "update_id": next(self.ids),
            "message": {
                "message_id": next(self.ids),
                "date": int(time.time()),
                "chat": PRIVATE,
                "from": self.user,
                **content,
            },
        }

    async def post(self, update: dict[str, Any], secret: str | None = SECRET) -> int:
        headers = {SECRET_HEADER: secret} if secret is not None else {}
        response = await self.client.post("/webhooks/telegram", json=update, headers=headers)
        await self.rt.drain()
        await asyncio.sleep(0)  # let the keyboard clean-up run
        await self.rt.drain()
        return response.status

    async def say(self, text: str) -> str:
        assert await self.post(self.message(text=text)) == 200
        return self.replies()

    async def press(self, index: int = 0) -> str:
        """Press a button of the last message that has an inline keyboard."""
        last = [
            f
            for f in self.double.called("sendMessage")
            if int(f["chat_id"]) == CHAT and "inline_keyboard" in (f.get("reply_markup") or {})
        ][-1]
        button = last["reply_markup"]["inline_keyboard"][index][0]
        update = {
            "update_id": next(self.ids),
            "callback_query": {
                "id": str(next(self.ids)),
                "from": self.user,
                "chat_instance": "ci",
                "data": button["callback_data"],
                "message": {
                    "message_id": 1,
                    "date": int(time.time()),
                    "chat": PRIVATE,
                    "text": last["text"],
                },
            },
        }
        assert await self.post(update) == 200
        return self.replies()

    async def share_location(self, latitude: float, longitude: float) -> str:
        update = self.message(location={"latitude": latitude, "longitude": longitude})
        assert await self.post(update) == 200
        return self.replies()

    def replies(self) -> str:
        texts = self.double.texts_to(CHAT)
        new, self.seen = texts[self.seen :], len(texts)
        return "\n---\n".join(new)


@pytest.fixture
def resident(client: TestClient, rt: Runtime, double: TelegramDouble) -> Resident:
    return Resident(client, rt, double)


THANKS = {"es": "¡Gracias! Tu opinión", "en": "Thank you! Your views", "fr": "Merci ! Votre avis"}
NEIGHBOURHOOD = {"es": "Santa Julia", "en": "Santa Julia", "fr": "Santa Julia"}
PROBLEM = {"es": "No hay alumbrado", "en": "No street lights", "fr": "Pas d'éclairage"}
LOCATION_BUTTON = {
    "es": "📍 Compartir mi ubicación",
    "en": "📍 Share my location",
    "fr": "📍 Partager ma position",
}


@pytest.mark.parametrize("lang", ["es", "en", "fr"])
async def test_the_priorities_survey_in_a_private_chat(
    client: TestClient, rt: Runtime, double: TelegramDouble, lang: str
) -> None:
    resident = Resident(client, rt, double, language_code=lang)
    assert await resident.post(resident.message(text="/start prioridades_centro")) == 200
    resident.replies()
    await resident.press(0)  # consent: yes
    await resident.press(1)  # age group
    await resident.press(0)  # gender
    await resident.say(NEIGHBOURHOOD[lang])
    await resident.press(2)  # sector
    await resident.press(0)  # pillar: social wellbeing
    await resident.say(PROBLEM[lang])
    await resident.press(3)  # satisfaction 4
    where = double.last_to(CHAT)["reply_markup"]
    assert where["keyboard"][0][0] == {"text": LOCATION_BUTTON[lang], "request_location": True}
    assert (await resident.share_location(20.1, -98.7)).startswith(THANKS[lang])
    [sub] = await rt.store.submissions()
    assert sub["status"] == "complete" and sub["language"] == lang
    assert sub["territory"] == "centro"
    assert sub["answers"]["satisfaction"] == 4
    assert sub["answers"]["problem_location"] == {"latitude": 20.1, "longitude": -98.7}
    # Each press was acknowledged and its keyboard taken away.
    assert len(double.called("answerCallbackQuery")) == 6
    edits = double.called("editMessageReplyMarkup")
    assert len(edits) == 6 and all("reply_markup" not in e for e in edits)


async def test_typed_digits_and_labels_work_too(resident: Resident, rt: Runtime) -> None:
    await resident.say("/start")
    await resident.say("sí")
    assert "¿Con qué género" in await resident.say("3")
    [sub] = await rt.store.submissions()
    assert sub["answers"]["age_group"] == "30_44"


async def test_a_photo_is_fetched_with_get_file_and_kept(
    resident: Resident, rt: Runtime, double: TelegramDouble
) -> None:
    await resident.say("/start reporte")
    await resident.press(0)  # consent: yes
    await resident.press(3)
    await resident.share_location(20.11, -98.72)
    await resident.say("Bache frente al mercado")
    photo = [
        {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
        {"file_id": "big", "file_unique_id": "b", "width": 1280, "height": 960},
    ]
    assert await resident.post(resident.message(photo=photo, caption=None)) == 200
    assert double.called("getFile")[-1]["file_id"] == "big"
    [sub] = await rt.store.submissions()
    kept = Path(rt.settings.media_dir) / Path(sub["answers"]["photo"]["media"]).name
    assert kept.read_bytes().startswith(b"\x89PNG") and sub["folio"] in resident.replies()


async def test_a_voice_note_gets_asked_to_type(resident: Resident) -> None:
    await resident.say("/start")
    voice = {"file_id": "v1", "file_unique_id": "v", "duration": 3, "mime_type": "audio/ogg"}
    assert await resident.post(resident.message(voice=voice)) == 200
    assert "notas de voz" in resident.replies()


@pytest.mark.parametrize("secret", [None, "", "wrong-secret"])
async def test_a_wrong_or_missing_secret_changes_nothing(
    resident: Resident, rt: Runtime, double: TelegramDouble, secret: str | None
) -> None:
    assert await resident.post(resident.message(text="hola"), secret=secret) == 403
    assert await rt.store.find_contact("telegram", str(CHAT)) is None
    assert double.called("sendMessage") == []


async def test_a_redelivered_update_is_processed_once(
    resident: Resident, double: TelegramDouble
) -> None:
    update = resident.message(text="hola")
    assert await resident.post(update) == 200
    assert await resident.post(update) == 200
    assert len(double.called("sendMessage")) == 1


async def test_malformed_bodies_get_400(client: TestClient) -> None:
    headers = {SECRET_HEADER: SECRET}
    assert (await client.post("/webhooks/telegram", data=b"{", headers=headers)).status == 400
    assert (await client.post("/webhooks/telegram", json=[1], headers=headers)).status == 400
    assert (await client.get("/webhooks/telegram")).status == 405


GROUP = {"id": -100123, "type": "supergroup", "title": "Vecinos de Santa Julia"}


@pytest.mark.parametrize(
    "update",
    [
        {
            "edited_message": {
                "message_id": 1,
                "date": 1,
                "edit_date": 2,
                "chat": PRIVATE,
                "from": USER,
                "text": "editado",
            }
        },
        {
            "channel_post": {
                "message_id": 1,
                "date": 1,
                "text": "aviso",
                "chat": {"id": -100999, "type": "channel", "title": "Canal"},
            }
        },
        {"message": {"message_id": 1, "date": 1, "chat": GROUP, "from": USER, "text": "hola"}},
        {
            "message": {
                "message_id": 1,
                "date": 1,
                "chat": GROUP,
                "from": USER,
                "new_chat_members": [USER],
            }
        },
        {
            "my_chat_member": {
                "chat": GROUP,
                "from": USER,
                "date": 1,
                "old_chat_member": {
                    "status": "left",
                    "user": {**USER, "id": 777000, "is_bot": True, "first_name": "Consulta"},
                },
                "new_chat_member": {
                    "status": "member",
                    "user": {**USER, "id": 777000, "is_bot": True, "first_name": "Consulta"},
                },
            }
        },
        {
            "message_reaction": {
                "chat": PRIVATE,
                "message_id": 5,
                "date": 1,
                "user": USER,
                "old_reaction": [],
                "new_reaction": [{"type": "emoji", "emoji": "👍"}],
            }
        },
    ],
)
async def test_updates_we_do_not_act_on_are_acknowledged_and_ignored(
    resident: Resident, rt: Runtime, double: TelegramDouble, update: dict[str, Any]
) -> None:
    assert await resident.post({"update_id": next(resident.ids), **update}) == 200
    assert await rt.store.submissions() == []
    assert double.called("sendMessage") == []


async def test_a_resident_who_blocks_the_bot_is_opted_out(resident: Resident, rt: Runtime) -> None:
    await resident.say("hola")
    blocked = {
        "update_id": next(resident.ids),
        "my_chat_member": {
            "chat": PRIVATE,
            "from": USER,
            "date": 1,
            "old_chat_member": {"status": "member", "user": {**USER, "id": 777000, "is_bot": True}},
            "new_chat_member": {
                "status": "kicked",
                "until_date": 0,
                "user": {**USER, "id": 777000, "is_bot": True},
            },
        },
    }
    assert await resident.post(blocked) == 200
    contact = await rt.store.find_contact("telegram", str(CHAT))
    assert contact is not None and contact.opted_out


async def test_flood_control_is_honoured(resident: Resident, double: TelegramDouble) -> None:
    double.fail_next(429, "Too Many Requests: retry after 1", retry_after=1)
    started = time.monotonic()
    assert await resident.say("hola")
    assert time.monotonic() - started >= 1
    assert len(double.called("sendMessage")) == 2  # the refused one and the retry


async def test_a_block_reported_on_send_opts_out(
    resident: Resident, rt: Runtime, double: TelegramDouble
) -> None:
    double.fail_next(403, "Forbidden: bot was blocked by the user")
    await resident.say("hola")
    contact = await rt.store.find_contact("telegram", str(CHAT))
    assert contact is not None and contact.opted_out
    async with rt.store._sessions() as session:
        status = (
            await session.execute(select(MessageLog.status).where(MessageLog.direction == "out"))
        ).scalar_one()
    assert status == "failed"


async def test_set_webhook_registers_the_secret_and_commands_in_three_languages(
    double: TelegramDouble,
) -> None:
    channel = TelegramChannel(TelegramConfig(TOKEN, SECRET, PUBLIC, api_base_url=double.url))
    try:
        assert await set_webhook(channel, "es") == PUBLIC + "/webhooks/telegram"
    finally:
        await channel.close()
    [hook] = double.called("setWebhook")
    assert hook["url"] == PUBLIC + "/webhooks/telegram" and hook["secret_token"] == SECRET
    menus = {c.get("language_code"): c["commands"] for c in double.called("setMyCommands")}
    assert set(menus) == {"es", "en", "fr", None}
    assert {c["command"] for c in menus["fr"]} == {"help", "back", "restart", "stop", "language"}
    assert {c["description"] for c in menus["fr"]} >= {"Changer de langue"}


async def test_long_polling_for_staff_without_a_public_url(
    settings: Settings, double: TelegramDouble
) -> None:
    runtime = await Runtime.create(
        settings.with_(telegram=telegram_settings(double, polling=True)),
        migrate=settings.redis_url is None,
    )
    double.updates.append(
        {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": PRIVATE,
                "from": USER,
                "text": "hola",
            },
        }
    )
    stop = asyncio.Event()
    sending = asyncio.create_task(runtime.outbox.run(stop))
    try:
        await runtime.start_channels()
        for _ in range(100):
            if double.called("sendMessage"):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await sending
        await runtime.close()
    assert double.called("deleteWebhook")
    assert "Aviso de privacidad" in double.called("sendMessage")[0]["text"]


GROUP_ID = -1001234567890
NEIGHBOURS_GROUP = {"id": GROUP_ID, "type": "supergroup", "title": "Vecinos de Santa Julia"}
BOT_USER = {"id": 777000, "is_bot": True, "first_name": "Consulta"}


ADMIN_RIGHTS = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": False,
    "can_restrict_members": False,
    "can_promote_members": False,
    "can_change_info": False,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
}


def membership(status: str) -> dict[str, Any]:
    return {
        "update_id": next(Resident.ids),
        "my_chat_member": {
            "chat": NEIGHBOURS_GROUP,
            "from": USER,
            "date": 1,
            "old_chat_member": {"status": "left", "user": BOT_USER},
            "new_chat_member": {
                "status": status,
                "user": BOT_USER,
                **(ADMIN_RIGHTS if status == "administrator" else {}),
            },
        },
    }


def telegram_of(rt: Runtime) -> TelegramChannel:
    return next(c for c in rt.channels if isinstance(c, TelegramChannel))


async def test_the_bot_tracks_the_groups_it_is_added_to(resident: Resident, rt: Runtime) -> None:
    assert await resident.post(membership("member")) == 200
    [group] = await rt.groups.all("telegram")
    assert group.address == str(GROUP_ID) and group.title == "Vecinos de Santa Julia"
    assert group.active and group.territory is None
    assert await resident.post(membership("left")) == 200
    assert not (await rt.groups.get("telegram", str(GROUP_ID))).active  # type: ignore[union-attr]


async def test_an_invitation_opens_the_survey_privately_with_the_territory(
    resident: Resident, rt: Runtime, double: TelegramDouble
) -> None:
    assert await resident.post(membership("administrator")) == 200
    with pytest.raises(StaffError, match="not registered"):
        await invite(telegram_of(rt), rt.groups, rt.flows, str(GROUP_ID), "priorities", "es")
    with pytest.raises(StaffError, match="territory"):
        await register_group(rt.groups, str(GROUP_ID), "Santa Julia!", "es")
    with pytest.raises(StaffError, match="no territory 'santa-julia' in the catalogue"):
        await register_group(rt.groups, str(GROUP_ID), "santa-julia", "fr", {"centro"})
    await register_group(rt.groups, str(GROUP_ID), "santa-julia", "fr")
    url = await invite(telegram_of(rt), rt.groups, rt.flows, str(GROUP_ID), "priorities", "es")
    assert url == "https://t.me/consulta_bot?start=prioridades_santa-julia"
    posted = double.last_to(GROUP_ID)
    assert "Les priorités de votre quartier" in posted["text"]
    assert posted["reply_markup"]["inline_keyboard"][0][0] == {"text": "Répondre", "url": url}
    # A neighbour follows the link: the survey starts in a private chat, territory recorded.
    await resident.say("/start prioridades_santa-julia")
    await resident.press(0)
    [sub] = await rt.store.submissions()
    assert sub["territory"] == "santa-julia"


async def test_a_native_poll_stores_each_vote_as_an_answer(
    resident: Resident, rt: Runtime, double: TelegramDouble
) -> None:
    await resident.post(membership("member"))
    await register_group(rt.groups, str(GROUP_ID), "santa-julia", None)
    channel = telegram_of(rt)
    with pytest.raises(StaffError, match="not a choice question"):
        await post_poll(
            channel, rt.groups, rt.flows, str(GROUP_ID), "priorities", "urgent_problem", "es"
        )
    poll_id = await post_poll(
        channel, rt.groups, rt.flows, str(GROUP_ID), "priorities", "pillar", "es"
    )
    [sent] = double.called("sendPoll")
    assert sent["is_anonymous"] in (False, "False", "false")
    assert [o["text"] if isinstance(o, dict) else o for o in sent["options"]][2] == (
        "Seguridad y paz ciudadana"
    )

    def vote(options: list[int], update_id: int) -> dict[str, Any]:
        answer = {
            "poll_id": poll_id,
            "user": USER,
            "option_ids": options,
            "option_persistent_ids": [f"opt{i}" for i in options],
        }
        return {"update_id": update_id, "poll_answer": answer}

    assert await resident.post(vote([2], 9001)) == 200
    assert await resident.post(vote([2], 9001)) == 200  # redelivered: once
    [sub] = await rt.store.submissions()
    assert sub["answers"] == {"pillar": "security"} and sub["territory"] == "santa-julia"
    assert sub["flow"] == "priorities" and sub["status"] == "complete"
    assert await resident.post(vote([], 9002)) == 200  # the vote is retracted
    [sub] = await rt.store.submissions()
    assert sub["answers"] == {"pillar": None}
    assert double.called("sendMessage") == []  # a vote is never run through a flow
    await rt.sweep()
    assert double.called("sendMessage") == []


async def test_groups_are_paced_to_twenty_messages_a_minute(double: TelegramDouble) -> None:
    channel = TelegramChannel(TelegramConfig(TOKEN, SECRET, PUBLIC, api_base_url=double.url))
    try:
        started = time.monotonic()
        for _ in range(4):  # a burst of 3, then one every 3 s
            await channel.post_invitation(
                str(GROUP_ID), "¡Participa!", "Responder", "https://t.me/x"
            )
        assert time.monotonic() - started >= 2.5
    finally:
        await channel.close()


# --- ids that are not integers: refused with 400, never answered ------------------------


def _with_chat_id(update: dict[str, Any], value: Any) -> dict[str, Any]:
    chat = {**PRIVATE, "id": value}
    message = {**update["message"], "chat": chat}
    return {**update, "message": message}


@pytest.mark.parametrize(
    "bad_id", ["abc", "5550001", 5550001.0, 1.5, 2**80, True, None, [CHAT], {"id": CHAT}]
)
async def test_a_chat_id_that_is_not_an_integer_gets_400(
    resident: Resident, rt: Runtime, double: TelegramDouble, bad_id: Any
) -> None:
    assert await resident.post(_with_chat_id(resident.message(text="hola"), bad_id)) == 400
    assert await rt.store.find_contact("telegram", str(bad_id)) is None
    assert double.called("sendMessage") == []


async def test_a_user_id_that_is_not_an_integer_gets_400(
    resident: Resident, double: TelegramDouble
) -> None:
    update = resident.message(text="hola")
    update["message"]["from"] = {**USER, "id": "abc"}
    assert await resident.post(update) == 400
    assert double.called("sendMessage") == []


async def test_a_button_press_or_membership_change_with_a_bad_chat_id_gets_400(
    resident: Resident, rt: Runtime, double: TelegramDouble
) -> None:
    press = {
        "update_id": next(resident.ids),
        "callback_query": {
            "id": "cb1",
            "from": USER,
            "chat_instance": "ci",
            "data": "consent:1",
            "message": {"message_id": 1, "date": 1, "chat": {**PRIVATE, "id": "abc"}},
        },
    }
    assert await resident.post(press) == 400
    blocked = membership("kicked")
    blocked["my_chat_member"]["chat"] = {**PRIVATE, "id": 1.5}
    assert await resident.post(blocked) == 400
    assert double.calls == [] and await rt.groups.all("telegram") == []


@pytest.mark.parametrize(
    "message",
    [
        {"text": 123},
        {"text": ["hola"]},
        {"caption": {"a": 1}},
        {"location": {"latitude": "north", "longitude": 1}},
        {"location": {"latitude": float("nan"), "longitude": 1}},
        {"photo": "a picture"},
        {"photo": [{"file_id": "f", "file_unique_id": "u", "width": "1", "height": 1}]},
        {"date": 10**30, "text": "hola"},
        {"text": "\ud800"},  # a lone surrogate no store can encode
    ],
)
async def test_fields_of_the_wrong_type_get_400(
    resident: Resident, double: TelegramDouble, message: dict[str, Any]
) -> None:
    update = resident.message(**message)
    raw = json.dumps(update, allow_nan=True)
    response = await resident.client.post(
        "/webhooks/telegram",
        data=raw,
        headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert double.called("sendMessage") == []


async def test_nul_characters_are_dropped_not_a_server_error(
    resident: Resident, rt: Runtime, double: TelegramDouble
) -> None:
    assert await resident.post(resident.message(text="ho\0la")) == 200
    assert double.texts_to(CHAT)  # answered
    contact = await rt.store.find_contact("telegram", str(CHAT))
    assert contact is not None


async def test_long_polling_skips_an_update_with_a_bad_chat_id(
    settings: Settings, double: TelegramDouble, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = await Runtime.create(
        settings.with_(telegram=telegram_settings(double, polling=True)),
        migrate=settings.redis_url is None,
    )
    good = {"message_id": 2, "date": int(time.time()), "chat": PRIVATE, "from": USER}
    double.updates.extend(
        [
            {"update_id": 1, "message": {**good, "chat": {**PRIVATE, "id": "abc"}, "text": "a"}},
            {"update_id": 2, "message": {**good, "text": "hola"}},
        ]
    )
    stop = asyncio.Event()
    sending = asyncio.create_task(runtime.outbox.run(stop))
    try:
        with caplog.at_level(logging.WARNING):
            await runtime.start_channels()
            for _ in range(100):
                if double.called("sendMessage"):
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await sending
        await runtime.close()
    assert [int(m["chat_id"]) for m in double.called("sendMessage")] == [CHAT]
    [skipped] = [r for r in caplog.records if "skipped a Telegram update" in r.getMessage()]
    assert "abc" not in skipped.getMessage() and str(CHAT) not in skipped.getMessage()


# --- photos: capped, images only -------------------------------------------------------


def _photo_channel(double: TelegramDouble) -> TelegramChannel:
    return TelegramChannel(TelegramConfig(TOKEN, SECRET, PUBLIC, api_base_url=double.url))


async def test_a_photo_telegram_says_is_too_large_is_not_downloaded(
    double: TelegramDouble,
) -> None:
    double.file_size = MAX_BYTES + 1
    channel = _photo_channel(double)
    try:
        with pytest.raises(MediaRefused, match="byte limit"):
            await channel.fetch_media(Attachment("tg-file:big", "image/jpeg"))
    finally:
        await channel.close()
    assert double.called("getFile") and double.called("download") == []


async def test_a_photo_larger_than_telegram_said_is_refused(double: TelegramDouble) -> None:
    double.file_body, double.file_size = PNG + b"\0" * MAX_BYTES, 1000
    channel = _photo_channel(double)
    try:
        with pytest.raises(MediaRefused, match="byte limit"):
            await channel.fetch_media(Attachment("tg-file:big", "image/jpeg"))
    finally:
        await channel.close()


async def test_a_file_that_is_not_an_image_is_refused(double: TelegramDouble) -> None:
    double.file_body = b"MZ\x90\x00 an executable"
    channel = _photo_channel(double)
    try:
        with pytest.raises(MediaRefused, match="not an image"):
            await channel.fetch_media(Attachment("tg-file:x", "image/jpeg"))
        double.file_body = PNG
        assert await channel.fetch_media(Attachment("tg-file:x", "image/jpeg")) == PNG
    finally:
        await channel.close()


async def test_a_text_of_only_spaces_is_no_crash(resident: Resident) -> None:
    """Found by the fuzzing: "/start" was looked for in the first word of a text with none."""
    assert await resident.post(resident.message(text="   ")) == 200
