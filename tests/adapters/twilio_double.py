"""A test double of Twilio's REST API on 127.0.0.1: records every message request, answers
like Twilio does, fails on demand, and serves media behind basic auth and a redirect."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from benchmarks.stack import twilio_page
from tests.adapters.loopback import LoopbackDouble

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@dataclass
class Failure:
    status: int
    code: int
    message: str


@dataclass
class TwilioDouble(LoopbackDouble):
    account_sid: str
    auth_token: str
    messages: list[dict[str, str]] = field(default_factory=list)
    media_requests: list[str | None] = field(default_factory=list)
    failures: deque[Failure] = field(default_factory=deque)
    contents: dict[str, dict[str, Any]] = field(default_factory=dict)  # ContentSid → request
    contents_down: bool = False
    created: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)  # sid, time
    storage: str = ""  # where media redirects: another host's base URL; "" for this one

    def fail_next(self, status: int, code: int, message: str = "error", times: int = 1) -> None:
        self.failures.extend(Failure(status, code, message) for _ in range(times))

    def bodies_to(self, to: str) -> list[str]:
        """What the resident saw: the body, or the text of the content sent."""
        return [self.text_of(m) for m in self.messages if m["To"] == to]

    def text_of(self, message: dict[str, str]) -> str:
        if "Body" in message:
            return message["Body"]
        created = self.contents.get(message["ContentSid"])
        if created is not None:
            return next(iter(created["types"].values()))["body"]
        return json.loads(message.get("ContentVariables", "{}")).get("1", "")  # a template

    def buttons_of(self, message: dict[str, str]) -> tuple[str, list[str]]:
        """(content type, button titles) of a message sent with buttons."""
        types = self.contents[message["ContentSid"]]["types"]
        kind = next(k for k in types if k != "twilio/text")
        spec = types[kind]
        if kind == "twilio/quick-reply":
            return kind, [a["title"] for a in spec["actions"]]
        return kind, [i["item"] for i in spec["items"]]

    async def _create_content(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"code": 20003, "status": 401}, status=401)
        if self.contents_down:
            return web.json_response({"code": 20500, "message": "down", "status": 500}, status=500)
        if request.content_type != "application/json":
            return web.json_response(
                {"code": 20001, "message": "expected JSON", "status": 400}, status=400
            )
        body = await request.json()
        sid = "HX" + uuid.uuid4().hex
        self.contents[sid] = body
        return web.json_response({"sid": sid, "account_sid": self.account_sid, **body}, status=201)

    def _authorised(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _create_message(self, request: web.Request) -> web.Response:
        if request.match_info["sid"] != self.account_sid or not self._authorised(request):
            return web.json_response(
                {"code": 20003, "message": "Authenticate", "status": 401}, status=401
            )
        form = dict(await request.post())
        if self.failures:
            failure = self.failures.popleft()
            return web.json_response(
                {
                    "code": failure.code,
                    "message": failure.message,
                    "status": failure.status,
                    "more_info": f"https://www.twilio.com/docs/errors/{failure.code}",
                },
                status=failure.status,
            )
        self.messages.append({k: str(v) for k, v in form.items()})
        sid = "SM" + uuid.uuid4().hex
        self.created.append((sid, time.time(), self.messages[-1]))
        return web.json_response(self._resource(sid, form), status=201)

    async def _list_messages(self, request: web.Request) -> web.Response:
        """Messages newest first, filtered by To and From, one page (as Twilio lists them)."""
        if request.match_info["sid"] != self.account_sid or not self._authorised(request):
            return web.json_response({"code": 20003, "status": 401}, status=401)
        to, sender = request.query.get("To"), request.query.get("From")
        found = [
            {
                **self._resource(sid, form),
                "body": self.text_of(form),
                "date_created": format_datetime(datetime.fromtimestamp(at, UTC)),
            }
            for sid, at, form in reversed(self.created)
            if (to is None or form.get("To") == to)
            and (sender is None or form.get("From") == sender)
        ]
        limit = int(request.query.get("PageSize", "50"))
        return web.json_response(twilio_page(self.account_sid, "messages", found[:limit]))

    def _resource(self, sid: str, form: dict[str, Any]) -> dict[str, Any]:
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "status": "queued",
            "to": form.get("To"),
            "from": form.get("From"),
            "body": form.get("Body"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": None,
            "date_created": "Sun, 22 Nov 2026 12:00:00 +0000",
            "error_code": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }

    async def _media(self, request: web.Request) -> web.Response:
        self.media_requests.append(request.headers.get("Authorization"))
        if not self._authorised(request):
            return web.Response(status=401)
        # Like Twilio: the media URL redirects to short-lived storage that needs no auth.
        name = request.match_info["name"]
        raise web.HTTPTemporaryRedirect(f"{self.storage}/storage/{name}?Signature=s3cr3t")

    async def _storage(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    def media_url(self, name: str) -> str:
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages/MM1/Media/{name}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create_message)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages.json", self._list_messages)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages/{msg}/Media/{name}", self._media)
        app.router.add_get("/storage/{name}", self._storage)
        app.router.add_post("/v1/Content", self._create_content)


@dataclass
class StorageDouble(LoopbackDouble):
    """Short-lived media storage on another host (another port of 127.0.0.1): serves `body`
    to anyone, records the Authorization header of every request, and can redirect `hops`
    times more, or stream without a Content-Length."""

    body: bytes = PNG
    content_type: str = "image/png"
    hops: int = 0
    chunked: bool = False
    requests: list[str | None] = field(default_factory=list)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.headers.get("Authorization"))
        hop = int(request.query.get("hop", "0"))
        if hop < self.hops:
            raise web.HTTPFound(f"/storage/{request.match_info['name']}?hop={hop + 1}")
        if not self.chunked:
            return web.Response(body=self.body, content_type=self.content_type)
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for start in range(0, len(self.body), 1 << 20):
                await response.write(self.body[start : start + (1 << 20)])
        except (ConnectionError, RuntimeError):  # the client stopped reading: as it should
            return response
        await response.write_eof()
        return response

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/storage/{name}", self._file)
