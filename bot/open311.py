"""Open311 GeoReport v2 under `/open311/v2`: the report categories as services, reports as
service requests (the folio is the `service_request_id`), and new reports posted with a staff
token as the `api_key` — in JSON and XML, as wiki.open311.org/GeoReport_v2 says.

Nothing personal leaves here: no phone number, chat id or name, neither the resident's nor the
staff member's — only what a report says of the problem (category, place, description, photo
URL) and its status.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from consulta.bot.runtime import Runtime
from consulta.bot.web import RUNTIME, STAFF
from consulta.flows.engine import new_folio
from consulta.flows.model import Flow, State
from consulta.storage.errors import is_unavailable
from consulta.storage.open311 import FOLIO_TRIES, NewReport, Open311Store
from consulta.storage.reports import (
    CATEGORY,
    CLOSED,
    Change,
    Report,
    Reports,
    UnknownReport,
    normal_folio,
)
from consulta.storage.staff import Staff

__all__ = ["CHANNEL", "PREFIX", "SPECIFICATION", "build_open311"]

log = logging.getLogger(__name__)

PREFIX = "/open311/v2"
CHANNEL = "open311"  # the channel of reports entered through Open311
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
REPORT_FLOW = "report"
LOCATION, DESCRIPTION, PHOTO = "location", "description", "photo"  # the report flow's states
WINDOW = timedelta(days=90)  # the spec's default span when no dates are given
MOST = 1000  # the spec's most requests in one answer
MAX_FOLIO = 16  # as the column keeps it
MOST_IDS = 100  # service_request_id values in one GET
MAX_DESCRIPTION = 4000  # the spec's limit, when the flow sets none
MAX_TEXT = 300  # a typed place, as the location question keeps it
MAX_URL = 2000
JSON_TYPE = "application/json"
XML_TYPE = "application/xml"
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
CHANGESET = web.AppKey("open311_changeset", str)


# --- answering in either format -------------------------------------------------------------


def _format(request: web.Request) -> str:
    """json or xml: the route's `format`, else the path's ending (for a route not found)."""
    found = request.match_info.get("format")
    if found in ("json", "xml"):
        return found
    return "xml" if request.path.endswith(".xml") else "json"


def _xml_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _xml_fields(parent: ET.Element, fields: Mapping[str, Any]) -> None:
    """One child element per field, in order; a list becomes its items, each named by the
    field without its plural `s` (formats → format)."""
    for name, value in fields.items():
        child = ET.SubElement(parent, name)
        if isinstance(value, list):
            for item in value:
                inner = ET.SubElement(child, name.removesuffix("s"))
                if isinstance(item, Mapping):
                    _xml_fields(inner, item)
                else:
                    inner.text = _xml_value(item)
        elif isinstance(value, Mapping):
            _xml_fields(child, value)
        else:
            child.text = _xml_value(value)


def _xml(root: str, item: str | None, body: Any) -> str:
    """`body` (a list of objects under `item`, or one object) as an XML document."""
    top = ET.Element(root)
    if item is None:
        _xml_fields(top, body)
    else:
        for entry in body:
            _xml_fields(ET.SubElement(top, item), entry)
    return XML_DECLARATION + ET.tostring(top, encoding="unicode")


def _answer(
    request: web.Request, body: Any, root: str, item: str | None, status: int = 200
) -> web.Response:
    if _format(request) == "xml":
        return web.Response(
            text=_xml(root, item, body), status=status, content_type=XML_TYPE, charset="utf-8"
        )
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type=JSON_TYPE,
        charset="utf-8",
    )


class Refused(Exception):
    """A request the spec answers with an error: its HTTP status and description."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


def _errors(request: web.Request, status: int, description: str) -> web.Response:
    body = [{"code": status, "description": description}]
    return _answer(request, body, "errors", "error", status)


@web.middleware
async def open311_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as the spec's list of errors, in the format asked for: a refusal with its
    status, an unknown route 404, a wrong method 405, a dependency away 503, a bug 500 (logged
    here, its traceback never in the body)."""
    try:
        return await handler(request)
    except Refused as exc:
        return _errors(request, exc.status, exc.description)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _errors(request, exc.status, exc.reason.lower())
        for header in ("Allow", "Retry-After"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except Exception as exc:
        if is_unavailable(exc):
            response = _errors(request, 503, "temporarily unavailable")
            response.headers["Retry-After"] = "5"
            return response
        log.exception("%s %s failed", request.method, request.match_info.route.resource)
        return _errors(request, 500, "internal error")


# --- services: the report flow's categories -------------------------------------------------


def _runtime(request: web.Request) -> Runtime:
    return request.config_dict[RUNTIME]


def _flow(runtime: Runtime) -> Flow | None:
    return runtime.flows.get(REPORT_FLOW)


def _category(flow: Flow | None) -> State | None:
    """The report flow's category question (a single choice), if it has one."""
    if flow is None:
        return None
    return next(
        (
            s
            for s in flow.states.values()
            if s.question_key == CATEGORY and s.kind.name == "single_choice"
        ),
        None,
    )


def _services(runtime: Runtime) -> list[dict[str, Any]]:
    flow, lang = _flow(runtime), runtime.settings.default_language
    category = _category(flow)
    if flow is None or category is None:
        return []
    group = flow.title.get_text(lang)
    services = []
    for choice in category.choices:
        name = choice.label.get_text(lang)
        others = [v for k, v in choice.label.items() if k != lang and v and v != name]
        services.append(
            {
                "service_code": choice.key,
                "service_name": name,
                "description": name,
                "metadata": False,
                "type": "realtime",
                "keywords": ", ".join([choice.key, *others]),
                "group": group,
            }
        )
    return services


def _service_name(runtime: Runtime, code: str | None) -> str | None:
    category = _category(_flow(runtime))
    choice = category.choice(code) if category is not None and code else None
    return choice.label.get_text(runtime.settings.default_language) if choice else None


async def discovery(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    base = runtime.settings.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    changeset = request.config_dict[CHANGESET]
    body = {
        "changeset": changeset,
        "contact": f"The planning team that runs Consulta at {base}",
        "key_service": "The api_key is a staff token: the planning team's admins issue them.",
        "endpoints": [
            {
                "specification": SPECIFICATION,
                "url": f"{base}{PREFIX}",
                "changeset": changeset,
                "type": "production",
                "formats": ["text/xml", JSON_TYPE],
            }
        ],
    }
    return _answer(request, body, "discovery", None)


async def services(request: web.Request) -> web.Response:
    return _answer(request, _services(_runtime(request)), "services", "service")


async def service_definition(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    if code not in {s["service_code"] for s in _services(_runtime(request))}:
        raise Refused(404, f"no service {code}")
    # Every category asks the same questions (place, description, photo), which the spec's
    # own fields carry: no attribute beyond them.
    body = {"service_code": code, "attributes": []}
    return _answer(request, body, "service_definition", None)


# --- service requests: reports --------------------------------------------------------------


def _iso(runtime: Runtime, moment: datetime | None) -> str | None:
    """ISO 8601 with the offset, in the server's time zone."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(runtime.settings.timezone).isoformat(timespec="seconds")


def _web_url(value: Any) -> str | None:
    """A photo's URL when the answer holds one (a photo Consulta keeps itself is not served)."""
    if isinstance(value, Mapping):
        value = value.get("media")
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _request(
    runtime: Runtime, report: Report, answers: Mapping[str, Any], changes: Sequence[Change]
) -> dict[str, Any]:
    """A report as a service request: what it says of the problem, never who reported it."""
    place = answers.get(LOCATION)
    place = place if isinstance(place, Mapping) else {}
    description = answers.get(DESCRIPTION)
    latest = changes[-1] if changes else None
    return {
        "service_request_id": report.folio,
        "status": "closed" if report.status in CLOSED else "open",
        "status_notes": latest.note if latest else None,
        "service_name": _service_name(runtime, report.category),
        "service_code": report.category,
        "description": description if isinstance(description, str) else None,
        "agency_responsible": None,
        "service_notice": None,
        "requested_datetime": _iso(runtime, report.received_at),
        "updated_datetime": _iso(runtime, report.changed_at or report.received_at),
        "expected_datetime": None,
        "address": place.get("text") if isinstance(place.get("text"), str) else None,
        "address_id": None,
        "zipcode": None,
        "lat": _number(place.get("latitude")),
        "long": _number(place.get("longitude")),
        "media_url": _web_url(answers.get(PHOTO)),
    }


def _folio(text: str) -> str | None:
    """A folio as a client may write it, or None for what cannot be one."""
    folio = normal_folio(text)
    return folio if folio.isascii() and folio.isalnum() and len(folio) <= MAX_FOLIO else None


def _reports(runtime: Runtime) -> Reports:
    return Reports(runtime.store.engine, runtime.settings.default_language)


async def _as_requests(runtime: Runtime, found: Sequence[Report]) -> list[dict[str, Any]]:
    folios = [r.folio for r in found]
    answers = await Open311Store(runtime.store.engine).answers(
        folios, (LOCATION, DESCRIPTION, PHOTO)
    )
    history = await _reports(runtime).history(folios)
    return [_request(runtime, r, answers[r.folio], history[r.folio]) for r in found]


def _query(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip()
    if "\x00" in value:
        raise Refused(400, f"{name} must not contain a NUL character")
    return value or None


def _date(request: web.Request, name: str) -> datetime | None:
    raw = _query(request, name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None:
            value = value.replace(tzinfo=_runtime(request).settings.timezone)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise Refused(400, f"{name} must be an ISO 8601 date and time") from None


async def list_requests(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    ids = _query(request, "service_request_id")
    if ids is not None:  # the spec: other parameters are then ignored
        folios = list(dict.fromkeys(f for f in map(_folio, ids.split(",")) if f))
        if len(folios) > MOST_IDS:
            raise Refused(400, f"at most {MOST_IDS} service_request_id values")
        found = []
        for folio in folios:
            try:
                found.append((await _reports(runtime).get(folio)).report)
            except UnknownReport:
                continue
        body = await _as_requests(runtime, found)
        return _answer(request, body, "service_requests", "request")

    code, status = _query(request, "service_code"), _query(request, "status")
    if status is not None and status not in ("open", "closed"):
        raise Refused(400, "status must be open or closed")
    if code is not None and code not in {s["service_code"] for s in _services(runtime)}:
        raise Refused(400, f"no service {code}")
    start, end = _date(request, "start_date"), _date(request, "end_date")
    if start is not None and end is not None and start > end:
        raise Refused(400, "start_date is after end_date")
    if start is None:
        start = (end or datetime.now(UTC)) - WINDOW
    found = [
        r
        for r in await _reports(runtime).all(category=code, since=start)
        if (end is None or r.received_at <= end)
        and (status is None or (r.status in CLOSED) == (status == "closed"))
    ][:MOST]
    body = await _as_requests(runtime, found)
    return _answer(request, body, "service_requests", "request")


async def show_request(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    folio = _folio(request.match_info["id"])
    try:
        if folio is None:
            raise UnknownReport("no folio")
        detail = await _reports(runtime).get(folio)
    except UnknownReport:
        raise Refused(404, "no such service request") from None
    body = [_request(runtime, detail.report, detail.answers, detail.changes)]
    return _answer(request, body, "service_requests", "request")


# --- posting a service request: a new report ------------------------------------------------


async def _fields(request: web.Request) -> dict[str, str]:
    """The request's parameters: form fields (the spec's), or a JSON object, over the query."""
    fields = {k: v for k, v in request.query.items()}
    if request.content_type == JSON_TYPE:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a JSON object")
        fields.update(
            {
                k: v if isinstance(v, str) else json.dumps(v)
                for k, v in body.items()
                if v is not None
            }
        )
    elif request.can_read_body:
        try:
            form = await request.post()
        except ValueError:
            raise Refused(400, "the body is not a form") from None
        fields.update({k: v for k, v in form.items() if isinstance(v, str)})
    for name, value in fields.items():
        if "\x00" in value:
            raise Refused(400, f"{name} must not contain a NUL character")
    return {k: v.strip() for k, v in fields.items()}


def _coordinate(fields: Mapping[str, str], name: str, bound: float) -> float | None:
    raw = fields.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or abs(value) > bound:
        raise Refused(400, f"{name} must be a number from {-bound:g} to {bound:g}")
    return value


def _state(flow: Flow, name: str) -> State | None:
    return flow.states.get(name)


async def post_request(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    fields = await _fields(request)
    staff = await request.config_dict[STAFF].authenticate(fields.get("api_key", ""))
    if staff is None:
        raise Refused(403, "api_key is not a valid staff token")
    flow = _flow(runtime)
    category = _category(flow)
    code = fields.get("service_code", "")
    if flow is None or category is None or category.choice(code) is None:
        raise Refused(400, f"no service {code}" if code else "service_code is required")

    lat, lon = _coordinate(fields, "lat", 90), _coordinate(fields, "long", 180)
    typed = fields.get("address_string") or None
    if (lat is None) != (lon is None):
        raise Refused(400, "lat and long go together")
    if lat is None and typed is None:
        raise Refused(400, "a location is required: lat and long, or address_string")
    if typed is not None and len(typed) > MAX_TEXT:
        raise Refused(400, f"address_string is at most {MAX_TEXT} characters")
    said = _state(flow, DESCRIPTION)
    most = (said.max_length if said else None) or MAX_DESCRIPTION
    description = fields.get("description") or None
    if description is not None and len(description) > most:
        raise Refused(400, f"description is at most {most} characters")
    media = fields.get("media_url") or None
    if media is not None and (len(media) > MAX_URL or _web_url(media) is None):
        raise Refused(400, "media_url must be an http or https URL")

    place: dict[str, Any]
    if lat is not None and lon is not None:
        place = {"latitude": lat, "longitude": lon}
        territory = await runtime.territories.locate(lat, lon)
    else:
        place = {"text": typed}
        territory = await runtime.territories.match(typed or "")

    answers: dict[str, tuple[str, Any]] = {category.question_key: (category.name, code)}
    given = {LOCATION: place, DESCRIPTION: description, PHOTO: {"media": media} if media else None}
    for name, value in given.items():
        if value is not None:
            state = _state(flow, name)
            answers[state.question_key if state else name] = (name, value)
    # One contact per staff member: the reports they entered, followed like any other. Its
    # address names them for staff only; no answer here shows it.
    address = f"{CHANNEL}:{staff[0]}"[:64]
    language = runtime.settings.default_language
    folio = await Open311Store(runtime.store.engine).create(
        NewReport(
            channel=CHANNEL,
            address=address,
            pid=runtime.store.pseudonym(CHANNEL, address),
            flow_id=flow.id,
            flow_version=flow.version,
            language=language,
            territory=territory,
            answers=answers,
        ),
        uuid.uuid4().hex,
        [new_folio() for _ in range(FOLIO_TRIES)],
    )
    log.info("open311: report %s entered by staff", folio)
    body = [{"service_request_id": folio, "service_notice": None, "account_id": None}]
    return _answer(request, body, "service_requests", "request")


# --- the application -------------------------------------------------------------------------


def build_open311(runtime: Runtime) -> web.Application:
    """The Open311 GeoReport v2 sub-application: reading is public, as the spec has it; posting
    needs a staff token as the `api_key`."""
    app = web.Application(middlewares=[open311_errors])
    app[RUNTIME] = runtime
    app[STAFF] = Staff(runtime.store)
    # Services change only when the flows do, which is at start-up.
    app[CHANGESET] = datetime.now(UTC).isoformat(timespec="seconds")
    fmt = "{format:(json|xml)}"
    app.router.add_get(f"/discovery.{fmt}", discovery)
    app.router.add_get(f"/services.{fmt}", services)
    app.router.add_get(f"/services/{{code}}.{fmt}", service_definition)
    app.router.add_get(f"/requests.{fmt}", list_requests)
    app.router.add_post(f"/requests.{fmt}", post_request)
    app.router.add_get(f"/requests/{{id}}.{fmt}", show_request)
    return app
