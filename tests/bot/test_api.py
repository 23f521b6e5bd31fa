"""The staff API: tokens and roles, summaries with small cells suppressed, pages, exports, and
data-rights requests for admins — every response checked against the API's OpenAPI
description (`bot/openapi.yaml`)."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from aiohttp.test_utils import TestClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from consulta.adapters.message import Inbound
from consulta.bot import api as api_module
from consulta.bot.api import choice_labels, openapi
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.flows.model import load_flow
from consulta.storage.staff import Staff

KINDS = Path(__file__).resolve().parents[1] / "fixtures" / "flows" / "kinds.yaml"

# --- every response against the description --------------------------------------------------

SPEC = openapi()
BASE = SPEC["servers"][0]["url"]
REGISTRY = Registry().with_resource(
    "urn:consulta:openapi", Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339, with its offset: what a script in any language reads back unambiguously."""
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value)
    return True


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


PATHS = [(_pattern(BASE + path), path) for path in SPEC["paths"]]


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _deref(pointer: str) -> tuple[str, dict[str, Any]]:
    """The node at `pointer`, following `$ref`s, and where it is."""
    resolver = REGISTRY.resolver("urn:consulta:openapi")
    node = resolver.lookup(f"#/{pointer}").contents
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#/")
        node = resolver.lookup(node["$ref"]).contents
    return pointer, node


def _valid(body: Any, pointer: str) -> None:
    schema = {"$ref": f"urn:consulta:openapi#/{pointer}"}
    jsonschema.Draft202012Validator(schema, registry=REGISTRY, format_checker=FORMATS).validate(
        body
    )


async def conforms(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    """A client middleware: every response of the API is one the description documents — its
    status, its content type, its required headers, and a JSON body valid against its schema."""
    response = await handler(request)
    body = await response.read()
    path = request.url.path
    if not path.startswith(BASE + "/"):
        return response
    media = response.content_type
    found = [t for p, t in PATHS if p.fullmatch(path)]
    if not found:  # no such route (export.pdf…): a JSON error all the same
        assert response.status in (404, 405), (path, response.status)
        _valid(json.loads(body), "components/schemas/Error")
        return response
    method = request.method.lower()
    operation = SPEC["paths"][found[0]].get(method)
    if operation is None:
        assert response.status == 405, (request.method, path, response.status)
        _valid(json.loads(body), "components/schemas/Error")
        return response
    status = str(response.status)
    assert status in operation["responses"], f"{request.method} {path}: {status} undocumented"
    where, documented = _deref(_pointer("paths", found[0], method, "responses", status))
    for name, header in documented.get("headers", {}).items():
        assert not header.get("required") or name in response.headers, (path, status, name)
    assert media in documented.get("content", {}), f"{request.method} {path} {status}: {media}"
    if media.endswith("json"):
        _valid(json.loads(body), f"{where}/content/{_pointer(media)}/schema")
    return response


async def resident(rt: Runtime, n: int, pillar: str, gender: str = "1") -> None:
    address = f"+52177100000{n:02d}"
    await rt.inbox.handle(Inbound("whatsapp", address, start="prioridades_centro", language="es"))
    for text in ("1", "2", gender, "Centro", "1", pillar):
        await rt.inbox.handle(Inbound("whatsapp", address, text=text))


@pytest.fixture
async def api(runtime: Runtime, aiohttp_client: Any) -> tuple[TestClient, dict[str, str]]:
    for n in range(6):  # six residents pick social wellbeing, one picks security
        await resident(runtime, n, "1")
    await resident(runtime, 6, "3", gender="2")
    staff = Staff(runtime.store)
    tokens = {
        "analyst": await staff.add("Ana Analista", "analyst"),
        "admin": await staff.add("Adela Admin", "admin"),
    }
    return await aiohttp_client(build_app(runtime), middlewares=(conforms,)), tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_no_token_no_data(api: tuple[TestClient, dict[str, str]], runtime: Runtime) -> None:
    client, tokens = api
    response = await client.get("/api/v1/flows")
    assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get("/api/v1/flows", headers=bearer("made-up"))).status == 401
    await Staff(runtime.store).revoke("Ana Analista")
    assert (await client.get("/api/v1/flows", headers=bearer(tokens["analyst"]))).status == 401


async def test_a_summary_suppresses_small_cells(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    response = await client.get(
        "/api/v1/flows/priorities/summary", headers=bearer(tokens["analyst"])
    )
    figures = await response.json()
    assert figures["started"] == 7 and figures["completed"] == 0
    assert figures["answers"]["pillar"] == {"social_wellbeing": 6, "security": "<5"}
    assert figures["breakdowns"]["gender"] == {"woman": 6, "man": "<5"}
    assert figures["breakdowns"]["territory"] == {"centro": 7}
    assert figures["breakdowns"]["channel"] == {"whatsapp": 7}


async def test_submissions_come_in_pages(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    url = "/api/v1/flows/priorities/submissions?status=all&limit=4"
    first = await (await client.get(url, headers=bearer(tokens["analyst"]))).json()
    assert len(first["submissions"]) == 4 and first["next_offset"] == 4
    rest = await (await client.get(f"{url}&offset=4", headers=bearer(tokens["analyst"]))).json()
    assert len(rest["submissions"]) == 3 and rest["next_offset"] is None
    assert all(s["contact"].startswith("c") for s in first["submissions"] + rest["submissions"])
    bad = await client.get(
        "/api/v1/flows/priorities/submissions?limit=many", headers=bearer(tokens["analyst"])
    )
    assert bad.status == 400
    missing = await client.get("/api/v1/flows/nope/submissions", headers=bearer(tokens["analyst"]))
    assert missing.status == 404


async def test_exports_stream_like_the_command(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    response = await client.get(
        "/api/v1/flows/priorities/export.csv?status=all", headers=bearer(tokens["analyst"])
    )
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/csv")
    body = (await response.read()).decode("utf-8-sig")
    assert len(list(csv.DictReader(io.StringIO(body)))) == 7 and "+52177" not in body
    assert (
        await client.get("/api/v1/flows/priorities/export.pdf", headers=bearer(tokens["analyst"]))
    ).status == 404


async def test_only_admins_handle_data_rights(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    url = "/api/v1/contacts/+5217710000003"
    assert (await client.get(url, headers=bearer(tokens["analyst"]))).status == 403
    [held] = await (await client.get(url, headers=bearer(tokens["admin"]))).json()
    assert held["profile"]["neighbourhood"] == "Centro"
    forgotten = await client.delete(url, headers=bearer(tokens["admin"]))
    assert (await forgotten.json()) == {"forgotten": 1}
    assert (await client.get(url, headers=bearer(tokens["admin"]))).status == 404


async def test_a_summary_names_the_answers_in_a_language(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = api
    url = "/api/v1/flows/priorities/summary"
    spanish = await (await client.get(url, headers=bearer(tokens["analyst"]))).json()
    assert spanish["language"] == "es"  # the configured default
    assert spanish["answers"]["pillar"] == {"social_wellbeing": 6, "security": "<5"}  # untouched
    assert spanish["labels"]["pillar"]["social_wellbeing"] == "Bienestar social"
    assert spanish["labels"]["gender"]["woman"] == "Mujer"
    assert "satisfaction" not in spanish["labels"]  # a number on a scale is its own label
    english = await (await client.get(f"{url}?lang=en", headers=bearer(tokens["analyst"]))).json()
    assert english["labels"]["pillar"]["security"] == "Security and peace"
    assert english["answers"] == spanish["answers"]
    assert (await client.get(f"{url}?lang=de", headers=bearer(tokens["analyst"]))).status == 400


async def test_only_admins_export_contact_details_and_it_is_logged(
    api: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, tokens = api
    export = "/api/v1/flows/priorities/export.csv?status=all&contacts=1"
    page = "/api/v1/flows/priorities/submissions?status=all&contacts=1"
    assert (await client.get(export, headers=bearer(tokens["analyst"]))).status == 403
    assert (await client.get(page, headers=bearer(tokens["analyst"]))).status == 403
    assert not [r for r in caplog.records if "CONTACT DETAILS" in r.getMessage()]
    response = await client.get(export, headers=bearer(tokens["admin"]))
    assert response.status == 200
    body = (await response.read()).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert list(rows[0])[:4] == ["submission", "contact", "address", "name"]
    assert rows[0]["address"] == "'+5217710000000"  # still no cell a spreadsheet would run
    pages = await (await client.get(page, headers=bearer(tokens["admin"]))).json()
    assert {s["address"] for s in pages["submissions"]} == {
        f"+52177100000{n:02d}" for n in range(7)
    }
    logged = [r.getMessage() for r in caplog.records if "CONTACT DETAILS" in r.getMessage()]
    assert len(logged) == 2 and all("Adela Admin" in line for line in logged)
    assert all(r.levelname == "WARNING" for r in caplog.records if "CONTACT" in r.getMessage())
    assert "+52177" not in caplog.text  # the log names who asked, never a resident


def test_yes_no_answers_are_named_as_the_summary_counts_them() -> None:
    labels = choice_labels(load_flow(KINDS), "fr")
    assert labels["agree"] == {"True": "Oui", "False": "Non"}  # summary() counts str(True)
    assert "score" not in labels


async def test_the_description_is_served_to_anyone(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = api
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    assert await response.json() == SPEC


def test_every_route_is_described(runtime: Runtime) -> None:
    served = set()
    for route in api_module.build_api(runtime).router.routes():
        if route.method != "HEAD" and route.resource is not None:
            for fmt in api_module.FORMATS:  # one description per format: its content type
                served.add(
                    (route.method.lower(), route.resource.canonical.replace("{format}", fmt))
                )
    documented = {(m, p) for p, ops in SPEC["paths"].items() for m in ops}
    assert served == documented


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=many",
        "offset=-1",
        "offset=99999999999",
        "status=done",
        "since=yesterday",
        "until=2026-13-01",
        "contacts=yes",
        "lang=de",
        "territory=centro%00",
    ],
)
async def test_what_the_api_cannot_use_gets_a_400_with_a_reason(
    api: tuple[TestClient, dict[str, str]], query: str
) -> None:
    client, tokens = api
    response = await client.get(
        f"/api/v1/flows/priorities/submissions?{query}", headers=bearer(tokens["admin"])
    )
    assert response.status == 400
    assert query.split("=")[0] in (await response.json())["error"]


async def test_unknown_routes_and_methods_get_json_errors(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = api
    missing = await client.get("/api/v1/nothing/here", headers=bearer(tokens["analyst"]))
    assert missing.status == 404 and await missing.json() == {"error": "not found"}
    wrong = await client.post("/api/v1/flows", headers=bearer(tokens["analyst"]))
    assert wrong.status == 405 and await wrong.json() == {"error": "method not allowed"}
    assert "GET" in wrong.headers["Allow"]


async def test_a_bug_is_a_json_500_logged_once(
    api: tuple[TestClient, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, tokens = api

    async def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(api_module, "summary", broken)
    response = await client.get(
        "/api/v1/flows/priorities/summary", headers=bearer(tokens["analyst"])
    )
    assert response.status == 500
    assert await response.json() == {"error": "internal error"}
    [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info and "/api/v1/flows/{flow}/summary" in logged.getMessage()


async def test_a_database_that_is_away_gets_a_503_with_retry_after(
    api: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, tokens = api

    async def away(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("away")

    monkeypatch.setattr(Staff, "authenticate", away)
    response = await client.get("/api/v1/flows", headers=bearer(tokens["analyst"]))
    assert response.status == 503 and response.headers["Retry-After"] == "5"
    assert await response.json() == {"error": "temporarily unavailable"}


async def test_a_revoked_admin_is_refused_and_refusals_are_counted_by_route(
    api: tuple[TestClient, dict[str, str]], runtime: Runtime
) -> None:
    client, tokens = api
    await Staff(runtime.store).revoke("Adela Admin")
    url = "/api/v1/contacts/+5217710000003"
    assert (await client.delete(url, headers=bearer(tokens["admin"]))).status == 401
    text = (await (await client.get("/metrics")).read()).decode()
    assert 'consulta_rejected_requests_total{route="/api/v1/contacts/{address}"} 1.0' in text
    assert "+52177" not in text  # a route, never a resident's address


async def test_admins_run_broadcasts_and_analysts_follow_them(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = api
    admin, analyst = bearer(tokens["admin"]), bearer(tokens["analyst"])
    body = {"texts": {"es": "Asamblea el sábado"}, "audience": {"channels": ["whatsapp"]}}
    dry = await client.post("/api/v1/broadcasts", json={**body, "dry_run": True}, headers=admin)
    plan = await dry.json()
    assert dry.status == 200 and plan["recipients"] == 7
    assert plan["counts"] == [{"channel": "whatsapp", "language": "es", "recipients": 7}]
    assert await (await client.get("/api/v1/broadcasts", headers=analyst)).json() == []

    refused = await client.post("/api/v1/broadcasts", json=body, headers=analyst)
    assert refused.status == 403
    later = {**body, "at": "2099-01-01T10:00:00"}
    created = await client.post("/api/v1/broadcasts", json=later, headers=admin)
    info = await created.json()
    assert created.status == 201 and info["status"] == "scheduled" and info["recipients"] == 7
    assert info["created_by"] == "Adela Admin"
    shown = await (await client.get(f"/api/v1/broadcasts/{info['id']}", headers=analyst)).json()
    assert shown["funnel"] == {"sent": 0, "delivered": 0, "read": 0, "answered": 0}

    url = f"/api/v1/broadcasts/{info['id']}"
    assert (await client.post(f"{url}/pause", headers=analyst)).status == 403
    assert (await (await client.post(f"{url}/pause", headers=admin)).json())["status"] == "paused"
    twice = await client.post(f"{url}/pause", headers=admin)
    assert twice.status == 409 and "paused" in (await twice.json())["error"]
    assert (await client.post(f"{url}/resume", headers=admin)).status == 200
    assert (await client.post(f"{url}/resume", headers=admin)).status == 409
    assert (await client.post(f"{url}/cancel", headers=admin)).status == 200
    assert (await client.get("/api/v1/broadcasts/999", headers=analyst)).status == 404
    assert (await client.get("/api/v1/broadcasts/x", headers=analyst)).status == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"flow": "nope"}, "no flow"),
        ({"texts": {"es": "x"}, "template": "unconfigured"}, "template"),
        ({"texts": {"es": "x"}, "at": "2020-01-01T00:00:00Z"}, "past"),
        ({"texts": {"de": "Hallo"}}, "texts"),
        ({"texts": {"es": "x"}, "audience": {"where": {"colour": ["red"]}}}, "colour"),
        ({"texts": {"es": "x"}, "audience": {"channels": ["fax"]}}, "channels"),
        ({"texts": {"es": "x"}, "surprise": 1}, "surprise"),
        ({}, "either"),
    ],
)
async def test_a_broadcast_the_api_cannot_send_is_a_400_with_a_reason(
    api: tuple[TestClient, dict[str, str]], body: dict[str, Any], reason: str
) -> None:
    client, tokens = api
    response = await client.post("/api/v1/broadcasts", json=body, headers=bearer(tokens["admin"]))
    assert response.status == 400
    assert reason in (await response.json())["error"]
    listed = await client.get("/api/v1/broadcasts", headers=bearer(tokens["admin"]))
    assert await listed.json() == []
    garbage = await client.post(
        "/api/v1/broadcasts", data=b"{not json", headers=bearer(tokens["admin"])
    )
    assert garbage.status == 400


async def test_a_parameter_an_operation_does_not_take_is_named_in_a_400(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = api
    typo = await client.get(
        "/api/v1/flows/priorities/submissions?territroy=centro", headers=bearer(tokens["analyst"])
    )
    assert typo.status == 400
    assert "territroy" in (await typo.json())["error"]
    fine = await client.get(
        "/api/v1/flows/priorities/export.csv?territory=centro", headers=bearer(tokens["analyst"])
    )
    assert fine.status == 200
