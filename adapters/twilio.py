"""WhatsApp and SMS through Twilio: signed form-encoded webhooks in, the Messages REST API out.

Both channels share one webhook (`POST /webhooks/twilio`): a `From` of `whatsapp:+52…` is
WhatsApp, a bare number is SMS. Addresses are kept without the `whatsapp:` prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.rest.api.v2010 import account as _messages_api  # noqa: F401 - see below
from twilio.rest.content.v1.content import ContentList
from yarl import URL

from consulta.adapters.delivery import LocalPacing, Pacing, split_text
from consulta.adapters.media import CHUNK, MediaRefused, check_size, read_capped, require_image
from consulta.adapters.message import Attachment, Hooks, Inbound, Outbound, Place, SendError, Sent

__all__ = [
    "SMS",
    "WHATSAPP",
    "TwilioChannel",
    "TwilioConfig",
    "channels_from_settings",
    "parse_message",
]

log = logging.getLogger(__name__)

WHATSAPP, SMS = "whatsapp", "sms"
TWILIO_API = "https://api.twilio.com"
INBOUND_PATH = "/webhooks/twilio"
STATUS_PATH = "/webhooks/twilio/status"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
FORM = "application/x-www-form-urlencoded"
SMS_LIMIT = 1600  # characters Twilio accepts in one SMS body (it splits into segments itself)
MAX_MEDIA = 10  # WhatsApp and MMS carry at most 10 media per message
OPTED_OUT = 21610  # "Attempt to send to unsubscribed recipient"
PERMANENT_ERRORS = frozenset({21211, 21408, 21610, 21614, 63003, 63016, 63024})
WINDOW = 24 * 60 * 60  # WhatsApp's customer-service window, in seconds
CLOCK_SKEW = 5.0  # seconds Twilio's clock may differ from ours, when looking for a send
# `_messages_api` is imported with this module: the twilio library imports it lazily, on the
# first send, which made each process's first message ~50 ms late (and a broadcast's first
# second crowded at the provider: python -m benchmarks.broadcasts --case cap).
# WhatsApp's limits for interactive messages (Twilio Content API quick-reply and list-picker).
MAX_QUICK_REPLIES, QUICK_REPLY_TITLE = 3, 20
MAX_LIST_ITEMS, LIST_ITEM_TITLE, LIST_ITEM_DESCRIPTION = 10, 24, 72
MAX_BODY = 1024
MAX_SID = 64  # Twilio's SIDs are 34 characters; the message log holds up to 64
MAX_NAME = 128  # a WhatsApp profile name, as the contact keeps it
STATUSES = frozenset(
    {
        "accepted",
        "scheduled",
        "canceled",
        "queued",
        "sending",
        "sent",
        "failed",
        "delivered",
        "undelivered",
        "receiving",
        "received",
        "read",
        "partially_delivered",
    }
)
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_MEDIA_REDIRECTS = 3  # Twilio's media URL → its storage: one hop; a few allow for a CDN


@dataclass(frozen=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    public_url: str
    whatsapp_from: str | None = None
    sms_from: str | None = None
    messaging_service_sid: str | None = None
    api_base_url: str = TWILIO_API
    whatsapp_rate: float = 10.0  # messages per second per sender
    sms_rate: float = 1.0
    # Approved WhatsApp templates for messages outside the 24-hour window:
    # {"reminder": {"es": "HX…", "en": "HX…", "fr": "HX…"}}; {{1}} receives the text.
    templates: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, section: Any, public_url: str) -> TwilioConfig | None:
        """The configuration of the settings' `twilio` section (`consulta.bot.config`, which
        has validated it); None when the account is not set."""
        if not (section.account_sid and section.auth_token):
            return None
        return cls(
            account_sid=section.account_sid,
            auth_token=section.auth_token.get_secret_value(),
            public_url=public_url.rstrip("/"),
            whatsapp_from=section.whatsapp_from,
            sms_from=section.sms_from,
            messaging_service_sid=section.messaging_service_sid,
            api_base_url=section.api_base_url.rstrip("/"),
            whatsapp_rate=section.whatsapp_rate,
            sms_rate=section.sms_rate,
            templates=section.templates,
        )


# --- inbound ------------------------------------------------------------------------------


class BadWebhook(ValueError):
    """A request Twilio would never send; answered with a 400."""


def _float(params: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(params[name])
    except (KeyError, ValueError):
        return None
    return value if value == value and abs(value) <= 180 else None  # no NaN, no nonsense


def parse_message(params: Mapping[str, str]) -> Inbound:
    """Twilio's inbound message parameters → an `Inbound`. Raises `BadWebhook`."""
    sender, sid = params.get("From", ""), params.get("MessageSid") or params.get("SmsSid")
    if not sender or not sid:
        raise BadWebhook("From and MessageSid are required")
    if len(sid) > MAX_SID:
        raise BadWebhook("MessageSid is not a Twilio id")
    channel = WHATSAPP if sender.startswith("whatsapp:") else SMS
    address = sender.removeprefix("whatsapp:")
    if not 3 <= len(address) <= 32:
        raise BadWebhook("From is not an address")

    place = None
    lat, lon = _float(params, "Latitude"), _float(params, "Longitude")
    if lat is not None and lon is not None and abs(lat) <= 90:
        place = Place(lat, lon, params.get("Label") or params.get("Address") or None)

    try:
        count = min(int(params.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        raise BadWebhook("NumMedia must be a number") from None
    attachments = tuple(
        Attachment(params[f"MediaUrl{i}"], params.get(f"MediaContentType{i}") or "")
        for i in range(count)
        if params.get(f"MediaUrl{i}")
    )
    # A quick-reply press carries our payload; without one, its title reads like typed text.
    payload = params.get("ButtonPayload") or params.get("ListId") or None
    text = params.get("Body") or (None if payload else params.get("ButtonText")) or None
    extra = {"wa_id": params["WaId"]} if params.get("WaId") else {}
    return Inbound(
        channel=channel,
        address=address,
        provider_id=sid,
        text=text,
        payload=payload,
        place=place,
        attachments=attachments,
        name=params.get("ProfileName", "")[:MAX_NAME] or None,
        extra=extra,
    )


# --- outbound -----------------------------------------------------------------------------


class _RebasedHttpClient(AsyncTwilioHttpClient):
    """Sends what the library addresses to api.twilio.com to another base URL.

    The library's base URL is fixed; this is how tests reach a double of the API on loopback,
    and how a deployment goes through a proxy.
    """

    def __init__(self, base_url: str) -> None:
        # The library logs responses (with phone numbers) at INFO: keep that out of our logs.
        quiet = logging.getLogger("consulta.twilio.http")
        quiet.setLevel(logging.WARNING)
        super().__init__(logger=quiet, timeout=15)
        self.base_url = base_url

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the library calls it so
        allow_redirects: bool = False,
    ) -> Response:
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith(".twilio.com"):  # api., content., …
            url = self.base_url + urlunsplit(("", "", parts.path, parts.query, ""))
        headers = dict(headers or {})
        as_json = headers.get("Content-Type") == "application/json"
        if auth is not None:  # the library's aiohttp.BasicAuth is deprecated in aiohttp 3.14
            headers["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        # The library's attribute, untyped there.
        session = cast(aiohttp.ClientSession | None, getattr(self, "session", None))
        if session is None:
            session = aiohttp.ClientSession()
            self.session = session
        async with session.request(
            method.upper(),
            url,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout or 15),
            allow_redirects=allow_redirects,
            json=data if as_json else None,
            data=None if as_json else data,
        ) as response:
            return Response(response.status, await response.text(), response.headers)


def _media_url(raw: str, api_base_url: str) -> URL:
    """`raw` when it is on the API base's scheme, host and port (no user info); else refused.
    Twilio's own api.twilio.com URLs go through the configured base, as the REST calls do."""
    base = URL(api_base_url)
    try:
        url = URL(raw)
        if url.origin() == URL(TWILIO_API).origin() and api_base_url != TWILIO_API:
            url = URL(api_base_url.rstrip("/") + url.raw_path_qs, encoded=True)
    except (ValueError, TypeError):
        raise MediaRefused("the media URL is not a URL") from None
    same = (url.scheme.lower(), (url.host or "").lower(), url.port) == (
        base.scheme.lower(),
        (base.host or "").lower(),
        base.port,
    )
    if not url.absolute or not same or url.user is not None or url.password is not None:
        raise MediaRefused(f"the media URL is not on Twilio's API host {base.host}")
    return url


def _redirect(url: URL, location: str | None, schemes: tuple[str, ...]) -> URL:
    if not location:
        raise MediaRefused("the media redirected without a Location")
    try:
        target = url.join(URL(location))
    except (ValueError, TypeError):
        raise MediaRefused("the media redirected to something that is not a URL") from None
    if target.scheme not in schemes or not target.host:
        raise MediaRefused(f"the media redirected to a {target.scheme or 'relative'} URL")
    return target


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class TwilioGateway:
    """What both Twilio channels share: credentials, the REST client, pacing, the webhooks."""

    def __init__(self, config: TwilioConfig, *, pacing: Pacing | None = None) -> None:
        self.config = config
        self.pacing: Pacing = (
            pacing if pacing is not None else LocalPacing()
        )  # one cap per sender number
        self.validator = RequestValidator(config.auth_token)
        self._http: _RebasedHttpClient | None = None
        self._client: Client | None = None
        self._media: aiohttp.ClientSession | None = None
        self._contents: dict[str, str] = {}  # content key → ContentSid (quick replies, lists)
        self._contents_lock = asyncio.Lock()

    @property
    def client(self) -> Client:
        if self._client is None:  # created inside the event loop, on first use
            self._http = _RebasedHttpClient(self.config.api_base_url)
            self._client = Client(
                self.config.account_sid, self.config.auth_token, http_client=self._http
            )
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http, self._client = None, None
        if self._media is not None:
            await self._media.close()
            self._media = None

    # webhooks ------------------------------------------------------------------------------

    async def _signed_params(self, request: web.Request) -> dict[str, str]:
        """The form parameters of a request Twilio signed, or an HTTP error."""
        if request.content_type != FORM:
            raise web.HTTPUnsupportedMediaType(text=f"expected {FORM}")
        body = await request.read()  # over the app's client_max_size: 413
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise web.HTTPBadRequest(text="the body is not UTF-8 form data") from None
        params = dict(pairs)
        signature = request.headers.get("X-Twilio-Signature", "")
        # Checked against the public URL: behind a TLS proxy the socket's URL differs.
        url = self.config.public_url + request.path_qs
        if not signature or not self.validator.validate(url, params, signature):
            raise web.HTTPForbidden(text="invalid or missing X-Twilio-Signature")
        # No database column takes a NUL character, and no resident types one.
        return {k.replace("\x00", ""): v.replace("\x00", "") for k, v in params.items()}

    def routes(self, hooks: Hooks) -> list[web.RouteDef]:
        async def inbound(request: web.Request) -> web.Response:
            params = await self._signed_params(request)
            try:
                message = parse_message(params)
            except BadWebhook as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
            await hooks.receive(message)  # durably recorded before Twilio hears back
            return web.Response(text=EMPTY_TWIML, content_type="text/xml")

        async def status(request: web.Request) -> web.Response:
            params = await self._signed_params(request)
            sid, state = params.get("MessageSid"), params.get("MessageStatus")
            if not sid or not state:
                raise web.HTTPBadRequest(text="MessageSid and MessageStatus are required")
            if len(sid) > MAX_SID or state not in STATUSES:
                raise web.HTTPBadRequest(text="not a Twilio message status")
            sender = params.get("From", "")
            channel = WHATSAPP if sender.startswith("whatsapp:") else SMS
            await hooks.delivery_status(channel, sid, state, params.get("ErrorCode") or None)
            return web.Response(status=204)

        return [web.post(INBOUND_PATH, inbound), web.post(STATUS_PATH, status)]

    # media ---------------------------------------------------------------------------------

    async def fetch_media(self, attachment: Attachment) -> bytes:
        """A resident's photo. Only a URL on the API's own host gets the account's credentials;
        Twilio answers it with a redirect to short-lived storage elsewhere, followed here by
        hand and without them. Raises `MediaRefused` (no URL in its message)."""
        url = _media_url(attachment.url, self.config.api_base_url)
        if self._media is None:
            self._media = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30),
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing carried from host to host
            )
        schemes = ("https",) if url.scheme == "https" else ("http", "https")
        auth = aiohttp.encode_basic_auth(self.config.account_sid, self.config.auth_token)
        headers: dict[str, str] = {"Authorization": auth}
        try:
            for _hop in range(MAX_MEDIA_REDIRECTS + 1):
                async with self._media.get(url, headers=headers, allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        url = _redirect(url, response.headers.get("Location"), schemes)
                        headers = {}  # the credentials are for Twilio's API host only
                        continue
                    if response.status != 200:
                        raise MediaRefused(f"the media answered HTTP {response.status}")
                    check_size(response.content_length)
                    data = await read_capped(response.content.iter_chunked(CHUNK))
                    require_image(data)
                    return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            # aiohttp's messages quote the URL, whose query is the storage's signed credential.
            raise MediaRefused(f"the media could not be downloaded: {type(exc).__name__}") from None
        raise MediaRefused(f"the media redirected more than {MAX_MEDIA_REDIRECTS} times")

    # WhatsApp buttons ------------------------------------------------------------------------

    async def buttons_content(self, message: Outbound) -> str | None:
        """The ContentSid of a quick-reply or list-picker carrying `message`'s buttons, created
        through the Content API on first use; None when plain numbered text must do."""
        buttons = message.buttons
        if not buttons or len(buttons) > MAX_LIST_ITEMS or len(message.text) > MAX_BODY:
            return None
        quick = len(buttons) <= MAX_QUICK_REPLIES and all(
            len(b.title) <= QUICK_REPLY_TITLE for b in buttons
        )
        if quick:
            kind = "twilio/quick-reply"
            spec: dict[str, Any] = {
                "body": message.text,
                "actions": [{"title": b.title, "id": b.payload} for b in buttons],
            }
        else:
            kind = "twilio/list-picker"
            spec = {
                "body": message.text,
                "button": message.button_label or "☰",
                "items": [
                    {
                        "item": _short(b.title, LIST_ITEM_TITLE),
                        "id": b.payload,
                        "description": _short(b.title, LIST_ITEM_DESCRIPTION),
                    }
                    for b in buttons
                ],
            }
        key = hashlib.sha256(json.dumps([kind, spec, message.language]).encode()).hexdigest()
        async with self._contents_lock:
            if key not in self._contents:
                request = ContentList.ContentCreateRequest(
                    {
                        "friendly_name": f"consulta_{key[:24]}",
                        "language": message.language or "es",
                        "variables": {},
                        "types": {kind: spec, "twilio/text": {"body": message.text}},
                    }
                )
                try:
                    content = await self.client.content.v1.contents.create_async(request)
                except (TwilioRestException, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("Content API refused buttons, sending numbered text: %s", exc)
                    return None
                self._contents[key] = str(content.sid)
            return self._contents[key]

    # sending -------------------------------------------------------------------------------

    async def create(self, sender: str, rate: float, *, bulk: bool = False, **fields: Any) -> str:
        # A burst of 1: the sender's cap holds in every second, as Twilio counts it.
        await self.pacing.wait(f"twilio:{sender}", rate, 1.0, bulk=bulk)
        try:
            message = await self.client.messages.create_async(
                status_callback=self.config.public_url + STATUS_PATH, **fields
            )
        except TwilioRestException as exc:
            raise _send_error(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(f"Twilio unreachable: {type(exc).__name__}") from exc
        return str(message.sid)


def _send_error(exc: TwilioRestException) -> SendError:
    code = str(exc.code) if exc.code else None
    if exc.code == OPTED_OUT:
        return SendError("the resident opted out (21610)", opted_out=True, code=code)
    if exc.status == 429 or exc.status >= 500:
        return SendError(f"Twilio answered {exc.status}", code=code)
    permanent = exc.code in PERMANENT_ERRORS or 400 <= exc.status < 500
    return SendError(f"Twilio refused the message ({exc.status})", permanent=permanent, code=code)


class TwilioChannel:
    """One Twilio channel (WhatsApp or SMS); the first one configured owns the webhooks."""

    def __init__(self, name: str, gateway: TwilioGateway, *, owns_routes: bool) -> None:
        self.name, self.gateway, self.owns_routes = name, gateway, owns_routes

    def routes(self, hooks: Hooks) -> list[web.RouteDef]:
        return self.gateway.routes(hooks) if self.owns_routes else []

    async def fetch_media(self, attachment: Attachment) -> bytes:
        return await self.gateway.fetch_media(attachment)

    async def start(self, hooks: Hooks) -> None:
        return None

    async def close(self) -> None:
        if self.owns_routes:
            await self.gateway.close()

    async def find_sent(self, message: Outbound, since: float) -> str | None:
        """The sid of `message` if this sender created it at or after `since` (POSIX time): a
        send whose answer was lost with the process that made it. None when Twilio has none."""
        config = self.gateway.config
        if self.name == WHATSAPP:
            filters = {"to": f"whatsapp:{message.address}", "from_": config.whatsapp_from}
        elif config.messaging_service_sid:  # any number of the pool may have sent it
            filters = {"to": message.address}
        else:
            filters = {"to": message.address, "from_": config.sms_from}
        try:
            found = await self.gateway.client.messages.list_async(limit=20, **filters)
        except TwilioRestException as exc:
            raise _send_error(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(f"Twilio unreachable: {type(exc).__name__}") from exc
        first_part = split_text(message.text, SMS_LIMIT)[0] if self.name == SMS else message.text
        for sent in found:  # newest first
            created = sent.date_created
            if created is not None and created.timestamp() < since - CLOCK_SKEW:
                break
            if first_part and first_part in (sent.body or ""):
                return str(sent.sid)
        return None

    async def send(self, message: Outbound) -> Sent:
        config = self.gateway.config
        if self.name == WHATSAPP:
            sender = config.whatsapp_from or ""
            content = self._outside_window(message)
            if content is None:
                buttons = await self.gateway.buttons_content(message)
                content = {"content_sid": buttons} if buttons else {"body": message.text}
            sid = await self.gateway.create(
                sender,
                config.whatsapp_rate,
                bulk=message.bulk,
                to=f"whatsapp:{message.address}",
                from_=sender,
                **content,
            )
            return Sent(sid)
        sender = config.messaging_service_sid or config.sms_from or ""
        origin = (
            {"messaging_service_sid": config.messaging_service_sid}
            if config.messaging_service_sid
            else {"from_": config.sms_from}
        )
        sid = ""
        for part in split_text(
            message.text, SMS_LIMIT
        ):  # numbered text; buttons don't exist in SMS
            sid = await self.gateway.create(
                sender,
                config.sms_rate,
                bulk=message.bulk,
                to=message.address,
                body=part,
                **origin,
            )
        return Sent(sid)

    def _outside_window(self, message: Outbound) -> dict[str, str] | None:
        """Template fields when WhatsApp's 24-hour window is closed; None when it is open."""
        last = message.last_inbound_at
        if last is not None and time.time() - last < WINDOW:
            return None
        sids = self.gateway.config.templates.get(message.template or "", {})
        content_sid = sids.get(message.language or "") or sids.get("es")
        if not content_sid:
            # Meta rejects free text outside the window (error 63016): don't spend the attempt.
            raise SendError(
                "outside WhatsApp's 24-hour window and no approved template "
                f"{message.template or '(none named)'!r} for {message.language or '?'}",
                permanent=True,
                code="window",
            )
        return {"content_sid": content_sid, "content_variables": json.dumps({"1": message.text})}


def channels_from_settings(settings: Any, pacing: Pacing | None = None) -> list[TwilioChannel]:
    """The configured Twilio channels: WhatsApp and/or SMS, paced by `pacing` (in this process
    alone when None)."""
    config = TwilioConfig.from_settings(settings.twilio, settings.public_url)
    if config is None:
        return []
    names = [WHATSAPP] if config.whatsapp_from else []
    if config.sms_from or config.messaging_service_sid:
        names.append(SMS)
    gateway = TwilioGateway(config, pacing=pacing)
    return [TwilioChannel(n, gateway, owns_routes=i == 0) for i, n in enumerate(names)]
