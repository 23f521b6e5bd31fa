"""`/api/v1/broadcasts`: admins create, pause, resume and cancel broadcasts; analysts read them,
with their progress and delivery funnel (what the dashboard's Broadcasts view shows)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from consulta.bot import broadcasts as bc
from consulta.bot.web import RUNTIME, error, require_admin, rfc3339
from consulta.storage.broadcasts import Audience, BroadcastError, BroadcastInfo

__all__ = ["add_routes"]

MAX_BODY = 64 * 1024
Lang = Literal["es", "en", "fr"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # No database column takes a NUL character.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        if isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value):
            raise ValueError("must not contain a NUL character")
        return value


class AudienceIn(_Strict):
    channels: list[Literal["whatsapp", "sms", "telegram"]] = []
    territories: list[str] = Field(default=[], max_length=200)
    languages: list[Lang] = []
    where: dict[str, list[str]] = {}
    answered: list[str] = Field(default=[], max_length=50)
    not_answered: list[str] = Field(default=[], max_length=50)
    groups: bool = False

    def audience(self) -> Audience:
        return Audience(
            channels=tuple(self.channels),
            territories=tuple(self.territories),
            languages=tuple(self.languages),
            where=tuple((k, v) for k, values in self.where.items() for v in values),
            answered=tuple(self.answered),
            not_answered=tuple(self.not_answered),
            groups=self.groups,
        )


class BroadcastIn(_Strict):
    flow: str | None = Field(default=None, max_length=64)
    texts: dict[Lang, str] = {}
    audience: AudienceIn = AudienceIn()
    template: str | None = Field(default=None, max_length=64)
    at: datetime | None = None
    dry_run: bool = False

    @field_validator("texts")
    @classmethod
    def _texts(cls, value: dict[str, str]) -> dict[str, str]:
        for text in value.values():
            if "\x00" in text:
                raise ValueError("must not contain a NUL character")
            if len(text) > 4096:
                raise ValueError("a text is at most 4096 characters")
        return value


def _described(info: BroadcastInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "kind": info.kind,
        "flow": info.flow_id,
        "texts": dict(info.texts),
        "audience": info.audience.to_dict(),
        "template": info.template,
        "status": info.status,
        "send_at": rfc3339(info.send_at),
        "created_by": info.created_by,
        "created_at": rfc3339(info.created_at),
        "started_at": rfc3339(info.started_at),
        "finished_at": rfc3339(info.finished_at),
        "recipients": info.recipients,
    }


async def _with_progress(request: web.Request, info: BroadcastInfo) -> dict[str, Any]:
    runtime = request.config_dict[RUNTIME]
    progress = await runtime.broadcasts.progress(info.id, datetime.now(UTC))
    channels = set(info.audience.channels) or {"whatsapp", "sms", "telegram"}
    eta = bc.eta_seconds(progress, runtime.settings, channels) if info.status == "sending" else 0
    return {
        **_described(info),
        "states": dict(progress.by_state),
        "failed": dict(progress.failed_by_reason),
        "skipped": dict(progress.skipped_by_reason),
        "funnel": bc.funnel(progress, survey=info.kind == "flow"),
        "eta_seconds": round(eta),
    }


def _id(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        value = 0
    if not 1 <= value <= 2**31 - 1:
        raise error(web.HTTPNotFound, "no such broadcast")
    return value


async def _get(request: web.Request) -> BroadcastInfo:
    try:
        return await request.config_dict[RUNTIME].broadcasts.get(_id(request))
    except BroadcastError:
        raise error(web.HTTPNotFound, "no such broadcast") from None


async def list_broadcasts(request: web.Request) -> web.Response:
    infos = await request.config_dict[RUNTIME].broadcasts.all()
    return web.json_response([await _with_progress(request, i) for i in infos], dumps=_dumps)


async def show_broadcast(request: web.Request) -> web.Response:
    return web.json_response(await _with_progress(request, await _get(request)), dumps=_dumps)


async def create_broadcast(request: web.Request) -> web.Response:
    admin = require_admin(request)
    runtime = request.config_dict[RUNTIME]
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise error(web.HTTPBadRequest, f"the body is over {MAX_BODY} bytes")
    try:
        body = BroadcastIn.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise error(web.HTTPBadRequest, f"{where}: {first['msg']}") from None
    options: dict[str, Any] = {
        "flow_id": body.flow,
        "texts": dict(body.texts),
        "template": body.template,
        "send_at": body.at.astimezone(UTC) if body.at and body.at.tzinfo else body.at,
    }
    if options["send_at"] is not None and options["send_at"].tzinfo is None:
        options["send_at"] = options["send_at"].replace(tzinfo=runtime.settings.timezone)
    try:
        audience = body.audience.audience()
        if body.dry_run:
            plan = await bc.plan(
                runtime.broadcasts, runtime.settings, runtime.engine, audience, **options
            )
            counts = [
                {"channel": c, "language": lang, "recipients": n}
                for (c, lang), n in sorted(plan.counts.items())
            ]
            return web.json_response(
                {"recipients": plan.total, "counts": counts, "seconds": round(plan.seconds)}
            )
        info = await bc.create(
            runtime.broadcasts,
            runtime.settings,
            runtime.engine,
            audience,
            created_by=admin.name,
            **options,
        )
    except BroadcastError as exc:
        raise error(web.HTTPBadRequest, str(exc)) from None
    return web.json_response(_described(info), status=201, dumps=_dumps)


async def change_broadcast(request: web.Request) -> web.Response:
    require_admin(request)
    info = await _get(request)
    action = request.path.rsplit("/", 1)[1]  # pause | resume | cancel
    change = getattr(request.config_dict[RUNTIME].broadcasts, action)
    try:
        info = await change(info.id)
    except BroadcastError as exc:
        raise error(web.HTTPConflict, str(exc)) from None
    return web.json_response(_described(info), dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def add_routes(api: web.Application) -> None:
    api.router.add_get("/broadcasts", list_broadcasts)
    api.router.add_post("/broadcasts", create_broadcast)
    api.router.add_get("/broadcasts/{id}", show_broadcast)
    for action in ("pause", "resume", "cancel"):
        api.router.add_post(f"/broadcasts/{{id}}/{action}", change_broadcast)
