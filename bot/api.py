"""The staff API (`/api/v1`), a sub-application behind bearer tokens: flows, submissions,
summaries, exports, and — for admins — residents' data-rights requests and exports with their
contact details. `openapi.yaml` next to this file describes it; it is served, public, at
`/api/v1/openapi.json`."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from aiohttp import web
from aiohttp.typedefs import Handler

from consulta.bot import broadcast_api, report_api
from consulta.bot.export import FORMATS, PREVIEW_CHANNELS, Export, write_export
from consulta.bot.runtime import Runtime
from consulta.bot.web import (
    RUNTIME,
    error,
    public,
    query_text,
    query_whole,
    require_admin,
    staff_app,
)
from consulta.flows.i18n import LANGUAGES
from consulta.flows.model import Flow
from consulta.storage.data_rights import DataRights
from consulta.storage.exports import stream_submissions
from consulta.storage.reporting import summary

__all__ = ["PREFIX", "build_api", "choice_labels", "choice_questions", "openapi"]

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_PAGE = 500
MAX_OFFSET = 2**31 - 1  # past any flow's submissions, and inside every database's integers
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "geojson": "application/geo+json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@cache
def openapi() -> dict[str, Any]:
    """The API's OpenAPI description (package data, read once)."""
    text = (files("consulta.bot") / "openapi.yaml").read_text(encoding="utf-8")
    spec: dict[str, Any] = yaml.safe_load(text)
    return spec


def _runtime(request: web.Request) -> Runtime:
    return request.config_dict[RUNTIME]


def _flow(request: web.Request) -> Flow:
    flow = _runtime(request).flows.get(request.match_info["flow"])
    if flow is None:
        raise error(web.HTTPNotFound, "no such flow")
    return flow


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "0")
    if value not in ("0", "1"):
        raise error(web.HTTPBadRequest, f"{name} must be 0 or 1")
    return value == "1"


def _date(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise error(web.HTTPBadRequest, f"{name} must be a date (YYYY-MM-DD)") from None
    return _utc(value)


def _utc(value: datetime) -> datetime:
    """SQLite hands back times without their offset; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _lang(request: web.Request) -> str:
    lang = request.query.get("lang", _runtime(request).settings.default_language)
    if lang not in LANGUAGES:
        raise error(web.HTTPBadRequest, "lang must be es, en or fr")
    return lang


def _contact_details(request: web.Request) -> str | None:
    """With `contacts=1`, the admin asking for residents' details (403 for an analyst);
    without, None: any staff token reads pseudonymous data."""
    if not _flag(request, "contacts"):
        return None
    return require_admin(request).name


def _log_contact_details(what: str, flow: Flow, admin: str) -> None:
    log.warning("%s of flow %s WITH CONTACT DETAILS by %s (staff API)", what, flow.id, admin)


def _export(request: web.Request, flow: Flow, *, contacts: bool = False) -> Export:
    status = request.query.get("status", "complete")
    if status not in ("complete", "partial", "all"):
        raise error(web.HTTPBadRequest, "status must be complete, partial or all")
    return Export(
        flow,
        language=_lang(request),
        codes=_flag(request, "codes"),
        since=_date(request, "since"),
        until=_date(request, "until"),
        territory=query_text(request, "territory"),
        status=status,
        contacts=contacts,
    )


@public
async def description(request: web.Request) -> web.Response:
    return web.json_response(openapi())


async def flows(request: web.Request) -> web.Response:
    return web.json_response(
        [
            {
                "id": f.id,
                "version": f.version,
                "title": dict(f.title),
                "collects": f.collects,
                "questions": [s.question_key for s in f.states.values() if s.kind.waits],
            }
            for f in sorted(_runtime(request).flows.values(), key=lambda f: f.id)
        ]
    )


def choice_questions(flow: Flow) -> list[str]:
    return [s.question_key for s in flow.states.values() if s.kind.summarised]


def choice_labels(flow: Flow, lang: str) -> dict[str, dict[str, str]]:
    """Each choice question's answer keys, as stored and counted, with their labels in `lang`."""
    labels: dict[str, dict[str, str]] = {}
    for state in flow.states.values():
        if named := state.kind.labels(state, lang):
            labels.setdefault(state.question_key, {}).update(named)
    return labels


async def flow_summary(request: web.Request) -> web.Response:
    flow = _flow(request)
    lang = _lang(request)
    figures = await summary(_runtime(request).store, flow.id, choice_questions(flow))
    # Labels next to the counts, not instead of them: the keys stay stable for scripts, and the
    # counts (with their "<5") are left exactly as summary() suppressed them.
    named = choice_labels(flow, lang)
    shown = [*figures["answers"], *figures["breakdowns"]]
    figures["language"] = lang
    figures["labels"] = {q: named[q] for q in shown if q in named}
    return web.json_response(figures)


async def submissions(request: web.Request) -> web.Response:
    admin = _contact_details(request)
    flow = _flow(request)
    export = _export(request, flow, contacts=admin is not None)
    limit = min(query_whole(request, "limit", 100, 1, MAX_OFFSET), MAX_PAGE)  # at most a page
    offset = query_whole(request, "offset", 0, 0, MAX_OFFSET)
    if admin is not None:
        _log_contact_details("submissions page", flow, admin)
    page: list[dict[str, Any]] = []
    async for row in stream_submissions(
        _runtime(request).store,
        flow.id,
        since=export.since,
        until=export.until,
        territory=export.territory,
        status=export.status,
        channels_excluded=PREVIEW_CHANNELS,
        contacts=export.contacts,
        offset=offset,
        limit=limit,
    ):
        details = {"address": row.address, "name": row.name} if export.contacts else {}
        page.append(
            {
                "submission": row.id,
                "contact": row.contact,
                **details,
                "status": row.status,
                "channel": row.channel,
                "language": row.language,
                "territory": row.territory,
                "folio": row.folio,
                "started_at": _utc(row.started_at).isoformat(),
                "answers": {q: v for q, (v, _, _) in row.answers.items()},
            }
        )
    following = offset + limit if len(page) == limit else None
    return web.json_response({"submissions": page, "next_offset": following}, dumps=_dumps)


async def export_file(request: web.Request) -> web.StreamResponse:
    admin = _contact_details(request)
    flow = _flow(request)
    fmt = request.match_info["format"]
    if fmt not in FORMATS:
        raise error(web.HTTPNotFound, "format must be csv, xlsx, jsonl or geojson")
    export = _export(request, flow, contacts=admin is not None)
    if admin is not None:
        _log_contact_details(f"{fmt} export", flow, admin)
    response = web.StreamResponse(
        headers={
            "Content-Type": CONTENT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="{flow.id}.{fmt}"',
        }
    )
    # Spooled: memory up to 8 MB, then a temporary file; the export itself streams from SQL.
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        await write_export(_runtime(request).store, export, fmt, spool)
        spool.seek(0)
        await response.prepare(request)
        while chunk := spool.read(64 * 1024):
            await response.write(chunk)
    await response.write_eof()
    return response


async def contact(request: web.Request) -> web.Response:
    require_admin(request)
    address = request.match_info["address"]
    if "\x00" in address:
        raise error(web.HTTPBadRequest, "address must not contain a NUL character")
    rights = DataRights(_runtime(request).store)
    found = await rights.contacts(address, query_text(request, "channel"))
    if not found:
        raise error(web.HTTPNotFound, "nothing is held about this address")
    if request.method == "DELETE":
        answers = _flag(request, "answers")
        for c in found:
            await _runtime(request).forget(c, answers=answers)
        return web.json_response({"forgotten": len(found)})
    return web.json_response([await rights.describe(c) for c in found], dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _query_parameters() -> dict[tuple[str, str], frozenset[str]]:
    """Each operation's query parameters, from the description: (METHOD, path) → names."""
    spec = openapi()
    shared = spec["components"]["parameters"]
    known: dict[tuple[str, str], frozenset[str]] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = set()
            for parameter in operation.get("parameters", []):
                if "$ref" in parameter:
                    parameter = shared[parameter["$ref"].rsplit("/", 1)[1]]
                if parameter["in"] == "query":
                    names.add(parameter["name"])
            known[(method.upper(), path)] = frozenset(names)
    return known


@web.middleware
async def known_parameters(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A query parameter the operation does not take is a 400 naming it — a typo such as
    `?territroy=` must not quietly return everything."""
    route = request.match_info.route.resource
    path = route.canonical.removeprefix(PREFIX) if route is not None else ""
    if "{format}" in path:
        path = path.replace("{format}", request.match_info.get("format", ""))
    allowed = _QUERY.get((request.method, path))
    if allowed is not None:
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            takes = ", ".join(sorted(allowed)) or "none"
            raise error(
                web.HTTPBadRequest, f"unknown parameter {unknown[0]!r} (this one takes: {takes})"
            )
    return await handler(request)


_QUERY = _query_parameters()


def build_api(runtime: Runtime) -> web.Application:
    """The `/api/v1` sub-application: JSON errors, then a staff token for every route but its
    description."""
    api = staff_app(runtime)
    api.middlewares.append(known_parameters)
    api.router.add_get("/openapi.json", description)
    api.router.add_get("/flows", flows)
    api.router.add_get("/flows/{flow}/summary", flow_summary)
    api.router.add_get("/flows/{flow}/submissions", submissions)
    api.router.add_get("/flows/{flow}/export.{format}", export_file)
    api.router.add_get("/contacts/{address}", contact)
    api.router.add_delete("/contacts/{address}", contact)
    broadcast_api.add_routes(api)
    report_api.add_routes(api)
    return api
