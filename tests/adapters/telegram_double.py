"""A test double of the Telegram Bot API on 127.0.0.1: answers like Telegram, records every call
with its decoded fields, fails on demand, serves file downloads, and queues updates for
getUpdates."""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.adapters.loopback import LoopbackDouble
from tests.adapters.twilio_double import PNG

BOT = {
    "id": 777000,
    "is_bot": True,
    "first_name": "Consulta",
    "username": "consulta_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass
class Call:
    method: str
    fields: dict[str, Any]


@dataclass
class TelegramDouble(LoopbackDouble):
    token: str
    calls: list[Call] = field(default_factory=list)
    failures: deque[tuple[int, str, int | None]] = field(default_factory=deque)
    updates: deque[dict[str, Any]] = field(default_factory=deque)
    _ids: Any = field(default_factory=lambda: itertools.count(100))
    file_body: bytes = PNG  # what a file download serves
    file_size: int | None = None  # what getFile says of its size (default: the body's)

    def fail_next(self, status: int, description: str, retry_after: int | None = None) -> None:
        self.failures.append((status, description, retry_after))

    def called(self, method: str) -> list[dict[str, Any]]:
        return [c.fields for c in self.calls if c.method == method]

    def texts_to(self, chat_id: int) -> list[str]:
        return [f["text"] for f in self.called("sendMessage") if int(f["chat_id"]) == chat_id]

    def last_to(self, chat_id: int) -> dict[str, Any]:
        return [f for f in self.called("sendMessage") if int(f["chat_id"]) == chat_id][-1]

    @staticmethod
    def _decode(raw: dict[str, Any]) -> dict[str, Any]:
        fields = {}
        for key, value in raw.items():
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            fields[key] = value
        return fields

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        if request.content_type == "application/json":
            raw = await request.json()
        else:
            raw = dict(await request.post())
        fields = self._decode(raw)
        if method == "getUpdates":
            return await self._get_updates(fields)
        self.calls.append(Call(method, fields))
        if method == "sendMessage" and self.failures:
            status, description, retry_after = self.failures.popleft()
            body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
            if retry_after is not None:
                body["parameters"] = {"retry_after": retry_after}
            return web.json_response(body, status=status)
        result = self._result(method, fields)
        if method == "sendPoll":
            fields["_poll_id"] = result["poll"]["id"]
        return web.json_response({"ok": True, "result": result})

    def _result(self, method: str, fields: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT
        if method in ("sendMessage", "sendPoll", "editMessageReplyMarkup"):
            return self._message(method, fields)
        if method == "getFile":
            return {
                "file_id": fields["file_id"],
                "file_unique_id": "u1",
                "file_size": len(self.file_body) if self.file_size is None else self.file_size,
                "file_path": f"photos/{fields['file_id']}.jpg",
            }
        return True  # answerCallbackQuery, setWebhook, setMyCommands, deleteWebhook…

    def _message(self, method: str, fields: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(fields["chat_id"])
        if chat_id > 0:
            chat = {"id": chat_id, "type": "private", "first_name": "Vecina"}
        else:
            chat = {"id": chat_id, "type": "supergroup", "title": "Vecinos"}
        message: dict[str, Any] = {
            "message_id": int(fields.get("message_id") or next(self._ids)),
            "date": int(time.time()),
            "from": BOT,
            "chat": chat,
        }
        if "text" in fields:
            message["text"] = fields["text"]
        if method == "sendPoll":
            options = [o["text"] if isinstance(o, dict) else o for o in fields["options"]]
            message["poll"] = {
                "id": f"poll{next(self._ids)}",
                "question": fields["question"],
                "options": [
                    {"text": o, "voter_count": 0, "persistent_id": f"opt{i}"}
                    for i, o in enumerate(options)
                ],
                "total_voter_count": 0,
                "is_closed": False,
                "is_anonymous": str(fields.get("is_anonymous")).lower() == "true",
                "type": "regular",
                "allows_revoting": True,
                "members_only": False,
                "allows_multiple_answers": str(fields.get("allows_multiple_answers")).lower()
                == "true",
            }
        return message

    async def _get_updates(self, fields: dict[str, Any]) -> web.Response:
        offset = int(fields.get("offset") or 0)
        while self.updates and self.updates[0]["update_id"] < offset:
            self.updates.popleft()
        ready = [u for u in self.updates if u["update_id"] >= offset]
        return web.json_response({"ok": True, "result": ready})

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=404)
        self.calls.append(Call("download", {"path": request.match_info["path"]}))
        return web.Response(body=self.file_body, content_type="image/png")

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
