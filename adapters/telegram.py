"""Telegram: Bot API updates in (webhook or long polling), python-telegram-bot's `Bot` out.

Private chats run surveys; in groups the bot stays quiet. A chat id is the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

# python-telegram-bot 22 reports time periods as timedelta once this is set (its documented
# opt-in); without it every RetryAfter warns that ints are deprecated.
os.environ.setdefault("PTB_TIMEDELTA", "1")

from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.error import (
    BadRequest,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from consulta.adapters.delivery import LocalPacing, Pacing, split_text
from consulta.adapters.media import MAX_BYTES, MediaRefused, check_size, require_image
from consulta.adapters.message import (
    Attachment,
    Hooks,
    Inbound,
    Outbound,
    Place,
    SendError,
    Sent,
)

__all__ = [
    "CHANNEL",
    "PATH",
    "BadUpdate",
    "TelegramChannel",
    "TelegramConfig",
    "channels_from_settings",
    "check_update",
    "parse_update",
    "read_update",
]

log = logging.getLogger(__name__)

CHANNEL = "telegram"
PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TELEGRAM_API = "https://api.telegram.org"
TEXT_LIMIT = 4096
CALLBACK_DATA_LIMIT = 64  # bytes
FILE_PREFIX = "tg-file:"
# Updates we act on; the rest are acknowledged and ignored.
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member", "poll_answer"]
# Telegram's limits: about 1 message/s in a private chat (short bursts allowed), 20 a minute in
# a group, 30/s overall.
CHAT_RATE, CHAT_BURST, GROUP_RATE, GLOBAL_RATE = 1.0, 3.0, 20 / 60, 30.0
COMMANDS = ("help", "back", "restart", "stop", "language")
# Telegram's ids "have at most 52 significant bits": anything wider is not from Telegram.
MAX_ID = 2**53
# What Telegram's own limits keep short, and our columns hold (names, group titles).
MAX_NAME, MAX_TITLE = 128, 255
# A body that is not an update; json.loads and de_json raise these on junk of every shape.
NOT_AN_UPDATE = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    OSError,
    RecursionError,
)


@dataclass(frozen=True)
class TelegramConfig:
    token: str
    secret: str
    public_url: str
    api_base_url: str = TELEGRAM_API
    polling: bool = False
    chat_rate: float = CHAT_RATE  # messages per second in one private chat

    @classmethod
    def from_settings(cls, section: Any, public_url: str) -> TelegramConfig | None:
        """The configuration of the settings' `telegram` section (`consulta.bot.config`, which
        has validated it); None when no bot token is set."""
        if section.bot_token is None:
            return None
        secret = section.webhook_secret
        return cls(
            token=section.bot_token.get_secret_value(),
            secret=secret.get_secret_value() if secret is not None else "",
            public_url=public_url.rstrip("/"),
            api_base_url=section.api_base_url.rstrip("/"),
            polling=section.polling,
            chat_rate=section.chat_rate,
        )


class BadUpdate(ValueError):
    """An update Telegram would never send (a chat id that is not an integer, text that is not
    text…): the webhook answers 400, long polling skips it. The message names no id."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise BadUpdate(what)


def _text(value: Any, what: str, limit: int | None = None) -> None:
    """`value` is None or a string (of at most `limit` characters)."""
    _need(value is None or isinstance(value, str), f"{what} is not text")
    _need(value is None or limit is None or len(value) <= limit, f"{what} is too long")


def _chat(chat: Any, what: str) -> None:
    _need(chat is not None, f"{what} is missing")
    _need(_is_int(chat.id) and abs(chat.id) < MAX_ID, f"the id of {what} is not an integer")
    _text(chat.type, f"the type of {what}")
    _text(chat.title, f"the title of {what}", MAX_TITLE)


def _user(user: Any, what: str) -> None:
    if user is None:
        return
    _need(_is_int(user.id) and abs(user.id) < MAX_ID, f"the id of {what} is not an integer")
    _text(user.first_name, f"the name of {what}", MAX_NAME)
    _text(user.language_code, f"the language of {what}")


def _coordinate(value: Any, limit: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= limit
    )


def _message(message: Any, what: str) -> None:
    _chat(message.chat, f"the chat of {what}")
    _user(getattr(message, "from_user", None), f"the sender of {what}")
    _need(_is_int(message.message_id), f"the id of {what} is not an integer")
    for field in ("text", "caption"):
        _text(getattr(message, field, None), f"the {field} of {what}")
    location = getattr(message, "location", None)
    if location is not None:
        _need(
            _coordinate(location.latitude, 90) and _coordinate(location.longitude, 180),
            f"the location of {what} is not a place",
        )
    venue = getattr(message, "venue", None)
    if venue is not None:
        _text(venue.title, f"the venue of {what}")
    for size in getattr(message, "photo", None) or ():
        _need(
            isinstance(size.file_id, str)
            and _is_int(size.width)
            and _is_int(size.height)
            and (size.file_size is None or _is_int(size.file_size)),
            f"a photo of {what} is not a photo",
        )
    for kind in ("voice", "audio", "video", "video_note", "sticker", "document"):
        found = getattr(message, kind, None)
        if found is not None:
            _need(isinstance(found.file_id, str), f"the {kind} of {what} has no file id")
            _text(getattr(found, "mime_type", None), f"the {kind} type of {what}")


def check_update(update: Update) -> None:
    """Raise `BadUpdate` unless every id and field Consulta reads has the type the Bot API
    documents. python-telegram-bot's `de_json` checks none: `"chat": {"id": "abc"}` parses.

    Raises:
        BadUpdate: naming the field, never its value.
    """
    try:
        _check_update(update)
    except NOT_AN_UPDATE as exc:  # a sub-object of another shape altogether
        if isinstance(exc, BadUpdate):
            raise
        raise BadUpdate("not a Telegram update") from None


def _check_update(update: Update) -> None:
    _need(_is_int(update.update_id), "update_id is not an integer")
    if update.message is not None:
        _message(update.message, "the message")
    query = update.callback_query
    if query is not None:
        _user(query.from_user, "the button press")
        _need(query.from_user is not None, "the button press has no sender")
        _text(query.id, "the id of the button press")
        _text(query.data, "the data of the button press")
        if query.message is not None:
            _chat(query.message.chat, "the chat of the button press")
            _need(_is_int(query.message.message_id), "the pressed message id is not an integer")
    member = update.my_chat_member
    if member is not None:
        _chat(member.chat, "the membership change")
        _user(member.from_user, "the membership change")
        _text(member.new_chat_member.status, "the membership status")
    vote = update.poll_answer
    if vote is not None:
        _text(vote.poll_id, "the poll id")
        _user(vote.user, "the vote")
        _need(
            isinstance(vote.option_ids, tuple | list) and all(_is_int(i) for i in vote.option_ids),
            "the options of the vote are not integers",
        )


def _clean(data: Any) -> Any:
    """The JSON without NUL characters (no database column takes them); `BadUpdate` for a lone
    surrogate, which no store can encode and no real update holds."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            raise BadUpdate("the update holds text that is not Unicode") from None
        return data.replace("\x00", "")
    if isinstance(data, list):
        return [_clean(v) for v in data]
    if isinstance(data, dict):
        return {_clean(k): _clean(v) for k, v in data.items()}
    return data


def read_update(body: bytes, bot: Bot | None) -> Update:
    """A webhook body → a checked `Update`. Raises `BadUpdate`."""
    try:
        data = _clean(json.loads(body))
        if not isinstance(data, dict):
            raise BadUpdate("the body is not a JSON object")
        update = Update.de_json(data, bot)
    except NOT_AN_UPDATE as exc:
        if isinstance(exc, BadUpdate):
            raise
        raise BadUpdate("not a Telegram update") from None
    if update is None:
        raise BadUpdate("not a Telegram update")
    check_update(update)
    return update


def _media(message: Message) -> tuple[Attachment, ...]:
    """Photos as images to keep; other media typed so the engine can ask for text instead."""
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return (Attachment(FILE_PREFIX + largest.file_id, "image/jpeg"),)
    for kind, default in (
        ("voice", "audio/ogg"),
        ("audio", "audio/mpeg"),
        ("video", "video/mp4"),
        ("video_note", "video/mp4"),
        ("sticker", "image/webp+sticker"),
        ("document", "application/octet-stream"),
    ):
        found = getattr(message, kind, None)
        if found is not None:
            content_type = getattr(found, "mime_type", None) or default
            if kind == "sticker":  # a sticker is a picture, but never an answer
                content_type = "application/x-sticker"
            return (Attachment(FILE_PREFIX + found.file_id, content_type),)
    return ()


def parse_update(update: Update) -> Inbound | None:
    """An update from a private chat → an `Inbound`; None for what we don't act on."""
    provider_id = str(update.update_id)
    query = update.callback_query
    if query is not None:
        chat = query.message.chat if query.message else None
        if chat is None or chat.type != "private" or not query.data:
            return None
        user = query.from_user
        return Inbound(
            CHANNEL,
            str(chat.id),
            provider_id,
            payload=query.data,
            language_hint=_lang(user.language_code),
            name=user.first_name,
        )
    message = update.message
    if message is None or message.chat.type != "private":
        return None  # edits, channel posts, member changes, groups: not for a survey
    sender = message.from_user
    who = Inbound(
        CHANNEL,
        str(message.chat.id),
        provider_id,
        language_hint=_lang(sender.language_code) if sender else None,
        name=sender.first_name if sender else None,
    )
    text = message.text or message.caption
    parts = (text or "").split(maxsplit=1)  # nothing at all for a text of only spaces
    if parts and parts[0].split("@")[0] == "/start":
        return replace(who, start=parts[1].strip() if len(parts) > 1 else "")
    place = None
    if message.location is not None:
        place = Place(
            message.location.latitude,
            message.location.longitude,
            message.venue.title if message.venue else None,
        )
    attachments = _media(message)
    if not (text or place or attachments):
        return None  # a contact card, a dice…: nothing a survey can use
    return replace(who, text=text, place=place, attachments=attachments)


def _lang(code: str | None) -> str | None:
    return code[:2].lower() if code else None


def _retry_after(error: RetryAfter) -> float:
    value = error.retry_after
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def _quiet_library_logs() -> None:
    """httpx logs every request at INFO with its URL, which holds the bot token; the Bot logs
    each call's parameters (chat ids, residents' words) at DEBUG. Neither belongs in our logs,
    whatever level the process runs at."""
    for name, level in (("httpx", logging.WARNING), ("telegram.Bot", logging.INFO)):
        logger = logging.getLogger(name)
        if logger.level < level:  # NOTSET, or set lower: raised; set higher: kept
            logger.setLevel(level)


class TelegramChannel:
    name = CHANNEL

    def __init__(self, config: TelegramConfig, *, pacing: Pacing | None = None) -> None:
        self.config = config
        self.pacing: Pacing = pacing if pacing is not None else LocalPacing()
        _quiet_library_logs()
        self.bot = Bot(
            config.token,
            base_url=f"{config.api_base_url}/bot",
            base_file_url=f"{config.api_base_url}/file/bot",
        )
        self._ready = asyncio.Lock()
        self._initialized = False
        self._background: set[asyncio.Task[Any]] = set()
        self._polling: asyncio.Task[None] | None = None

    async def ensure_bot(self) -> Bot:
        async with self._ready:
            if not self._initialized:
                await self.bot.initialize()
                self._initialized = True
        return self.bot

    # inbound -------------------------------------------------------------------------------

    def routes(self, hooks: Hooks) -> list[web.RouteDef]:
        async def webhook(request: web.Request) -> web.Response:
            given = request.headers.get(SECRET_HEADER, "")
            if not self.config.secret or not hmac.compare_digest(
                given.encode(), self.config.secret.encode()
            ):
                raise web.HTTPForbidden(text=f"invalid or missing {SECRET_HEADER}")
            try:
                update = read_update(await request.read(), self.bot)
            except BadUpdate as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
            await self.accept(update, hooks)
            return web.Response(status=200)

        return [web.post(PATH, webhook)]

    async def accept(self, update: Update, hooks: Hooks) -> None:
        """Record what a resident said; note who blocked us; ignore the rest."""
        member = update.my_chat_member
        if member is not None:
            chat, status = member.chat, member.new_chat_member.status
            if chat.type == "private" and status == "kicked":
                await hooks.opt_out(CHANNEL, str(chat.id))
            elif chat.type in ("group", "supergroup"):
                active = status in ("member", "administrator", "creator", "restricted")
                await hooks.group_seen(CHANNEL, str(chat.id), chat.title, active)
            return
        vote = update.poll_answer
        if vote is not None:
            if vote.user is not None:  # a vote cast as a channel is nobody's to count
                await hooks.poll_vote(
                    CHANNEL,
                    vote.poll_id,
                    str(vote.user.id),
                    list(vote.option_ids),
                    str(update.update_id),
                    vote.user.first_name,
                )
            return
        inbound = parse_update(update)
        if inbound is None:
            return
        await hooks.receive(inbound)
        if update.callback_query is not None:
            self._soon(self._close_buttons(update.callback_query))

    def _soon(self, job: Any) -> None:
        task = asyncio.create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_buttons(self, query: CallbackQuery) -> None:
        """Stop the spinner, and take the keyboard off so a stale button can't answer again."""
        bot = await self.ensure_bot()
        try:
            await bot.answer_callback_query(query.id)
            if query.message is not None:
                await bot.edit_message_reply_markup(
                    chat_id=query.message.chat.id,
                    message_id=query.message.message_id,
                    reply_markup=None,
                )
        except TelegramError as exc:  # an old message, a double press: nothing to fix
            log.info("could not close a keyboard: %s", exc)

    async def fetch_media(self, attachment: Attachment) -> bytes:
        """A resident's photo, refused (`MediaRefused`) when Telegram says it is over the
        limit, when more arrives than that, or when its bytes are not an image."""
        bot = await self.ensure_bot()
        file = await bot.get_file(attachment.url.removeprefix(FILE_PREFIX))
        check_size(file.file_size)
        data = bytes(await file.download_as_bytearray())
        if len(data) > MAX_BYTES:  # file_size was missing, or wrong
            raise MediaRefused(f"the file is over the {MAX_BYTES} byte limit")
        require_image(data)
        return data

    # long polling, for staff without a public URL -----------------------------------------

    async def start(self, hooks: Hooks) -> None:
        if self.config.polling:
            self._polling = asyncio.create_task(self._poll(hooks))

    async def _poll(self, hooks: Hooks) -> None:
        """Fetch updates until cancelled. Telegram keeps an update until a later offset is
        asked for, so one that could not be taken (nothing could keep it) is asked for again,
        and no failure — Telegram's or ours — ends the loop."""
        offset: int | None = None
        ready = False
        pause = 1.0
        while True:
            try:
                if not ready:
                    bot = await self.ensure_bot()
                    await bot.delete_webhook()
                    ready = True
                updates = await bot.get_updates(
                    offset=offset, timeout=25, allowed_updates=ALLOWED_UPDATES
                )
            except RetryAfter as exc:
                await asyncio.sleep(_retry_after(exc))
                continue
            except TelegramError as exc:
                log.warning("polling Telegram failed, retrying: %s", type(exc).__name__)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
                continue
            pause = 1.0
            for update in updates:
                try:
                    check_update(update)
                except BadUpdate as exc:
                    log.warning("skipped a Telegram update: %s", exc)  # names no id
                else:
                    try:
                        await self.accept(update, hooks)
                    except Exception as exc:
                        log.warning("could not take a Telegram update (%s)", type(exc).__name__)
                        await asyncio.sleep(2)
                        break  # not past it: Telegram gives it again
                if _is_int(update.update_id):
                    offset = max(offset or 0, update.update_id + 1)

    async def close(self) -> None:
        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._polling
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._initialized:
            await self.bot.shutdown()
            self._initialized = False

    # posting to neighbourhood groups (staff actions) ----------------------------------------

    async def link(self, payload: str) -> str:
        """The t.me deep link that opens a private chat with the bot and sends /start payload."""
        bot = await self.ensure_bot()
        return f"https://t.me/{bot.username}?start={payload}"

    async def post_invitation(self, chat: str, text: str, button: str, url: str) -> str:
        bot = await self._paced(chat)
        markup = InlineKeyboardMarkup([[InlineKeyboardButton(button, url=url)]])
        sent = await bot.send_message(chat_id=chat, text=text, reply_markup=markup)
        return str(sent.message_id)

    async def post_poll(self, chat: str, question: str, options: list[str], multiple: bool) -> str:
        """A non-anonymous native poll, so each vote belongs to a resident. Returns its id."""
        bot = await self._paced(chat)
        sent = await bot.send_poll(
            chat_id=chat,
            question=question[:300],
            options=[o[:100] for o in options],
            is_anonymous=False,
            allows_multiple_answers=multiple,
        )
        assert sent.poll is not None
        return sent.poll.id

    # outbound ------------------------------------------------------------------------------

    async def _paced(self, chat: str, *, bulk: bool = False) -> Bot:
        bot = await self.ensure_bot()
        # The chat's own cap first: a long wait there should not hold a cell of the bot's.
        if chat.startswith("-"):  # group and channel chat ids are negative
            await self.pacing.wait(f"telegram:chat:{chat}", GROUP_RATE, CHAT_BURST, bulk=bulk)
        else:
            rate = self.config.chat_rate
            await self.pacing.wait(f"telegram:chat:{chat}", rate, max(CHAT_BURST, rate), bulk=bulk)
        await self.pacing.wait("telegram:all", GLOBAL_RATE, 1.0, bulk=bulk)  # 30 in any second
        return bot

    @staticmethod
    def _markup(message: Outbound) -> Any:
        if message.buttons:
            return InlineKeyboardMarkup(
                [
                    [InlineKeyboardButton(b.title, callback_data=b.payload)]
                    for b in message.buttons
                    if len(b.payload.encode()) <= CALLBACK_DATA_LIMIT
                ]
            )
        if message.expects == "location" and message.button_label:
            return ReplyKeyboardMarkup(
                [[KeyboardButton(message.button_label, request_location=True)]],
                one_time_keyboard=True,
                resize_keyboard=True,
            )
        return ReplyKeyboardRemove()

    async def send(self, message: Outbound) -> Sent:
        parts = split_text(message.text, TEXT_LIMIT)
        sent_id = ""
        for i, part in enumerate(parts):
            bot = await self._paced(message.address, bulk=message.bulk)
            markup = self._markup(message) if i == len(parts) - 1 else None
            try:
                sent = await bot.send_message(
                    chat_id=message.address, text=part, reply_markup=markup
                )
            except RetryAfter as exc:
                raise SendError("Telegram flood control", retry_after=_retry_after(exc)) from exc
            except Forbidden as exc:
                raise SendError(f"Telegram: {exc.message}", opted_out=True, code="403") from exc
            except BadRequest as exc:
                raise SendError(f"Telegram: {exc.message}", permanent=True, code="400") from exc
            except NetworkError as exc:
                raise SendError(f"Telegram unreachable: {exc.message}") from exc
            sent_id = str(sent.message_id)
        return Sent(sent_id)


def channels_from_settings(settings: Any, pacing: Pacing | None = None) -> list[TelegramChannel]:
    """The Telegram channel when a bot token is set, paced by `pacing` (in this process alone
    when None)."""
    config = TelegramConfig.from_settings(settings.telegram, settings.public_url)
    return [TelegramChannel(config, pacing=pacing)] if config else []
