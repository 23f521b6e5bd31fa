"""`/api/v1/reports` and `/api/v1/liaisons`: any staff token lists reports and reads one with
every change; admins change a report's status and register, list and remove liaisons."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from consulta.bot.report_news import tell_reporter
from consulta.bot.web import RUNTIME, error, query_text, query_whole, require_admin, rfc3339
from consulta.storage.liaisons import LiaisonError, LiaisonIn, LiaisonInfo, Liaisons
from consulta.storage.reports import (
    MAX_NOTE,
    STATUSES,
    Change,
    Report,
    ReportError,
    Reports,
    UnknownReport,
)

__all__ = ["add_routes"]

MAX_BODY = 1024 * 1024
MAX_PAGE = 500
MAX_OFFSET = 2**31 - 1
M = TypeVar("M", bound=BaseModel)
MAX_LIAISONS = 1000  # one request's worth; a larger file goes through `consulta liaisons import`


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # No database column takes a NUL character.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value


class StatusIn(_Strict):
    status: Literal["in_review", "in_progress", "resolved", "rejected", "duplicate"]
    note: str | None = Field(default=None, max_length=MAX_NOTE)
    duplicate_of: str | None = Field(default=None, max_length=16)


class LiaisonBody(_Strict):
    address: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    territory: str = Field(min_length=1, max_length=64)
    language: Literal["es", "en", "fr"] | None = None
    channel: Literal["whatsapp", "sms", "telegram"] | None = None

    def given(self) -> LiaisonIn:
        return LiaisonIn(self.address, self.name, self.territory, self.language, self.channel)


class LiaisonsBody(_Strict):
    liaisons: list[LiaisonBody] = Field(min_length=1, max_length=MAX_LIAISONS)


def _report(report: Report) -> dict[str, Any]:
    return {
        "folio": report.folio,
        "flow": report.flow_id,
        "status": report.status,
        "category": report.category,
        "territory": report.territory,
        "channel": report.channel,
        "language": report.language,
        "liaison": report.liaison,
        "contact": report.contact,
        "received_at": rfc3339(report.received_at),
        "changed_at": rfc3339(report.changed_at),
    }


def _change(change: Change) -> dict[str, Any]:
    return {
        "status": change.status,
        "note": change.note,
        "duplicate_of": change.duplicate_of,
        "by": change.by,
        "at": rfc3339(change.at),
    }


def _liaison(liaison: LiaisonInfo) -> dict[str, Any]:
    return {
        "address": liaison.address,
        "channel": liaison.channel,
        "name": liaison.name,
        "territory": liaison.territory,
        "language": liaison.language,
        "added_at": rfc3339(liaison.added_at),
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _reports(request: web.Request) -> Reports:
    runtime = request.config_dict[RUNTIME]
    return Reports(runtime.store.engine, runtime.settings.default_language)


def _since(request: web.Request) -> datetime | None:
    raw = query_text(request, "since")
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise error(web.HTTPBadRequest, "since must be a date, YYYY-MM-DD") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=request.config_dict[RUNTIME].settings.timezone)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # a day at the very edge of the calendar
        return value.replace(tzinfo=UTC)


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise error(web.HTTPBadRequest, f"the body is over {MAX_BODY} bytes")
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise error(web.HTTPBadRequest, "the body is not JSON") from None


def _valid(model: type[M], value: Any) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise error(web.HTTPBadRequest, f"{where}: {first['msg']}") from None


async def list_reports(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise error(web.HTTPBadRequest, f"status must be one of {', '.join(STATUSES)}")
    limit = query_whole(request, "limit", 100, 1, MAX_PAGE)
    offset = query_whole(request, "offset", 0, 0, MAX_OFFSET)
    found = await _reports(request).all(
        status=status,
        territory=query_text(request, "territory"),
        category=query_text(request, "category"),
        since=_since(request),
        limit=limit,
        offset=offset,
    )
    following = offset + limit if len(found) == limit else None
    return web.json_response(
        {"reports": [_report(r) for r in found], "next_offset": following}, dumps=_dumps
    )


async def _shown(request: web.Request, folio: str) -> web.Response:
    try:
        detail = await _reports(request).get(folio)
    except UnknownReport:
        raise error(web.HTTPNotFound, "no such report") from None
    return web.json_response(
        {
            **_report(detail.report),
            "answers": detail.answers,
            "changes": [_change(c) for c in detail.changes],
        },
        dumps=_dumps,
    )


def _folio(request: web.Request) -> str:
    folio = request.match_info["folio"]
    if "\x00" in folio or len(folio) > 32:
        raise error(web.HTTPNotFound, "no such report")
    return folio


async def show_report(request: web.Request) -> web.Response:
    return await _shown(request, _folio(request))


async def change_report(request: web.Request) -> web.Response:
    admin = require_admin(request)
    folio = _folio(request)
    body = _valid(StatusIn, await _json(request))
    try:
        notice = await _reports(request).set_status(
            folio, body.status, note=body.note, duplicate_of=body.duplicate_of, by=admin.name
        )
    except UnknownReport:
        raise error(web.HTTPNotFound, "no such report") from None
    except ReportError as exc:  # not allowed from the report's status, or a wrong original
        raise error(web.HTTPConflict, str(exc)) from None
    await tell_reporter(request.config_dict[RUNTIME].inbox, notice)
    return await _shown(request, notice.folio)


async def list_liaisons(request: web.Request) -> web.Response:
    require_admin(request)  # their phone numbers and names
    found = await Liaisons(request.config_dict[RUNTIME].store.engine).all(
        query_text(request, "territory")
    )
    return web.json_response({"liaisons": [_liaison(x) for x in found]}, dumps=_dumps)


async def add_liaisons(request: web.Request) -> web.Response:
    """One liaison (201 added, 200 updated), or `{"liaisons": [...]}`: all of them or none."""
    require_admin(request)
    liaisons = Liaisons(request.config_dict[RUNTIME].store.engine)
    value = await _json(request)
    try:
        if isinstance(value, dict) and "liaisons" in value:
            body = _valid(LiaisonsBody, value)
            added, updated = await liaisons.add_many([x.given() for x in body.liaisons])
            return web.json_response({"added": added, "updated": updated})
        liaison, created = await liaisons.add(_valid(LiaisonBody, value).given())
    except LiaisonError as exc:
        raise error(web.HTTPBadRequest, str(exc)) from None
    return web.json_response(_liaison(liaison), status=201 if created else 200, dumps=_dumps)


async def remove_liaison(request: web.Request) -> web.Response:
    require_admin(request)
    address = request.match_info["address"]
    liaisons = Liaisons(request.config_dict[RUNTIME].store.engine)
    if "\x00" in address or not await liaisons.remove(address):
        raise error(web.HTTPNotFound, "no liaison with this address")
    return web.json_response({"removed": 1})


def add_routes(api: web.Application) -> None:
    api.router.add_get("/reports", list_reports)
    api.router.add_get("/reports/{folio}", show_report)
    api.router.add_post("/reports/{folio}/status", change_report)
    api.router.add_get("/liaisons", list_liaisons)
    api.router.add_post("/liaisons", add_liaisons)
    api.router.add_delete("/liaisons/{address}", remove_liaison)
