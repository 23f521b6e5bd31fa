"""The staff API (`/api/v1`), behind bearer tokens: flows, submissions, summaries, exports,
and — for admins — residents' data-rights requests and exports with their contact details."""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from consulta.bot.export import FORMATS, PREVIEW_CHANNELS, Export, write_export
from consulta.bot.runtime import Runtime
from consulta.flows.i18n import LANGUAGES
from consulta.flows.model import Flow
from consulta.storage.data_rights import DataRights
from consulta.storage.exports import stream_submissions
from consulta.storage.reporting import summary
from consulta.storage.staff import Staff

__all__ = ["STAFF", "add_api", "authorised"]

log = logging.getLogger(__name__)

STAFF = web.AppKey("staff", Staff)
MAX_PAGE = 500
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "geojson": "application/geo+json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _error(status: type[web.HTTPException], reason: str, **headers: str) -> web.HTTPException:
    return status(
        text=f'{{"error": "{reason}"}}', content_type="application/json", headers=headers or None
    )


async def authorised(request: web.Request, role: str = "analyst") -> tuple[str, str]:
    """The staff member behind the request's bearer token; 401 or 403 otherwise."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    who = await request.app[STAFF].authenticate(token)
    if who is None:
        raise _error(
            web.HTTPUnauthorized,
            "a valid staff token is required",
            **{"WWW-Authenticate": "Bearer"},
        )
    if role == "admin" and who[1] != "admin":
        raise _error(web.HTTPForbidden, "this needs an admin token")
    return who


def _runtime(request: web.Request) -> Runtime:
    from consulta.bot.server import RUNTIME

    return request.app[RUNTIME]


def _flow(request: web.Request) -> Flow:
    flow = _runtime(request).flows.get(request.match_info["flow"])
    if flow is None:
        raise _error(web.HTTPNotFound, "no such flow")
    return flow


def _date(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise _error(web.HTTPBadRequest, f"{name} must be a date (YYYY-MM-DD)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _lang(request: web.Request) -> str:
    lang = request.query.get("lang", _runtime(request).settings.default_language)
    if lang not in LANGUAGES:
        raise _error(web.HTTPBadRequest, "lang must be es, en or fr")
    return lang


async def _reader(request: web.Request) -> str | None:
    """Authorise a request for submissions. With `contacts=1` it needs an admin token (403
    otherwise) and the admin's name is returned; without, any staff token will do."""
    if request.query.get("contacts") != "1":
        await authorised(request)
        return None
    name, _ = await authorised(request, "admin")
    return name


def _log_contact_details(what: str, flow: Flow, admin: str) -> None:
    log.warning("%s of flow %s WITH CONTACT DETAILS by %s (staff API)", what, flow.id, admin)


def _export(request: web.Request, flow: Flow, *, contacts: bool = False) -> Export:
    status = request.query.get("status", "complete")
    if status not in ("complete", "partial", "all"):
        raise _error(web.HTTPBadRequest, "status must be complete, partial or all")
    return Export(
        flow,
        language=_lang(request),
        codes=request.query.get("codes") == "1",
        since=_date(request, "since"),
        until=_date(request, "until"),
        territory=request.query.get("territory") or None,
        status=status,
        contacts=contacts,
    )


async def flows(request: web.Request) -> web.Response:
    await authorised(request)
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
    await authorised(request)
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
    admin = await _reader(request)
    flow = _flow(request)
    export = _export(request, flow, contacts=admin is not None)
    try:
        limit = min(int(request.query.get("limit", "100")), MAX_PAGE)
        offset = max(int(request.query.get("offset", "0")), 0)
    except ValueError:
        raise _error(web.HTTPBadRequest, "limit and offset must be whole numbers") from None
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
                "started_at": row.started_at.isoformat(),
                "answers": {q: v for q, (v, _, _) in row.answers.items()},
            }
        )
    following = offset + limit if len(page) == limit else None
    return web.json_response({"submissions": page, "next_offset": following})


async def export_file(request: web.Request) -> web.StreamResponse:
    admin = await _reader(request)
    flow = _flow(request)
    fmt = request.match_info["format"]
    if fmt not in FORMATS:
        raise _error(web.HTTPNotFound, "format must be csv, xlsx, jsonl or geojson")
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
    await authorised(request, "admin")
    rights = DataRights(_runtime(request).store)
    found = await rights.contacts(request.match_info["address"], request.query.get("channel"))
    if not found:
        raise _error(web.HTTPNotFound, "nothing is held about this address")
    if request.method == "DELETE":
        for c in found:
            await _runtime(request).forget(c, answers=request.query.get("answers") == "1")
        return web.json_response({"forgotten": len(found)})
    return web.json_response([await rights.describe(c) for c in found], dumps=_dumps)


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def add_api(app: web.Application, runtime: Runtime) -> None:
    app[STAFF] = Staff(runtime.store)
    app.router.add_get("/api/v1/flows", flows)
    app.router.add_get("/api/v1/flows/{flow}/summary", flow_summary)
    app.router.add_get("/api/v1/flows/{flow}/submissions", submissions)
    app.router.add_get("/api/v1/flows/{flow}/export.{format}", export_file)
    app.router.add_get("/api/v1/contacts/{address}", contact)
    app.router.add_delete("/api/v1/contacts/{address}", contact)
