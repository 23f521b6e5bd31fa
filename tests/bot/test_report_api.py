"""`/api/v1/reports` and `/api/v1/liaisons` on SQLite and PostgreSQL: any staff token reads
reports, admins change them and keep the liaisons — every response checked against the
description (`bot/openapi.yaml`), as tests/bot/test_api.py checks the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.storage.staff import Staff
from tests.bot.test_api import BASE, bearer, conforms
from tests.storage.test_reports import inserted, made


@pytest.fixture
async def api(runtime: Runtime, aiohttp_client: Any) -> tuple[TestClient, dict[str, str]]:
    accounts = Staff(runtime.store)
    tokens = {
        "analyst": await accounts.add("Ana Analista", "analyst"),
        "admin": await accounts.add("Adela Admin", "admin"),
    }
    return await aiohttp_client(build_app(runtime), middlewares=(conforms,)), tokens


async def test_staff_read_reports_and_admins_change_them(
    api: tuple[TestClient, dict[str, str]], runtime: Runtime
) -> None:
    client, tokens = api
    analyst, admin = bearer(tokens["analyst"]), bearer(tokens["admin"])
    folio = await made(runtime, "+5215512345678", "water_leak")
    await inserted(runtime, "AAAA2222", territory="centro", days_ago=3)

    assert (await client.get(f"{BASE}/reports")).status == 401
    page = await (await client.get(f"{BASE}/reports", headers=analyst)).json()
    assert [r["folio"] for r in page["reports"]] == [folio, "AAAA2222"]
    assert page["next_offset"] is None and page["reports"][0]["category"] == "water_leak"
    assert "address" not in page["reports"][0]
    first = await (await client.get(f"{BASE}/reports?limit=1", headers=analyst)).json()
    assert [r["folio"] for r in first["reports"]] == [folio] and first["next_offset"] == 1

    url = f"{BASE}/reports/{folio}/status"
    change = {"status": "in_progress", "note": "Cuadrilla asignada"}
    forbidden = await client.post(url, json=change, headers=analyst)
    assert forbidden.status == 403
    changed = await client.post(url, json=change, headers=admin)
    assert changed.status == 200
    shown = await changed.json()
    assert shown["status"] == "in_progress" and shown["answers"]["category"] == "water_leak"
    assert [(c["status"], c["by"], c["note"]) for c in shown["changes"]] == [
        ("in_progress", "Adela Admin", "Cuadrilla asignada")
    ]
    duplicate = {"status": "duplicate", "duplicate_of": folio.lower()}
    marked = await client.post(f"{BASE}/reports/aaaa2222/status", json=duplicate, headers=admin)
    assert (await marked.json())["changes"][0]["duplicate_of"] == folio

    read = await (await client.get(f"{BASE}/reports/{folio}", headers=analyst)).json()
    assert read == shown
    filtered = {
        "status=in_progress": [folio],
        "status=duplicate&territory=centro": ["AAAA2222"],
        "category=water_leak": [folio],
        "category=nothing": [],
        "since=2999-01-01": [],
        "since=2000-01-01": [folio, "AAAA2222"],
    }
    for query, expected in filtered.items():
        found = await (await client.get(f"{BASE}/reports?{query}", headers=analyst)).json()
        assert [r["folio"] for r in found["reports"]] == expected, query

    for query in ("status=open", "limit=0", "since=yesterday", "offset=-1"):
        wrong = await client.get(f"{BASE}/reports?{query}", headers=analyst)
        assert wrong.status == 400, query
    assert (await client.get(f"{BASE}/reports/ZZZZ9999", headers=analyst)).status == 404
    missing = await client.post(
        f"{BASE}/reports/ZZZZ9999/status", json={"status": "resolved"}, headers=admin
    )
    assert missing.status == 404
    refusals = {
        json.dumps({"status": "rejected"}): 409,  # AAAA2222 is a duplicate: closed
        json.dumps({"status": "in_review"}): 409,  # reopening needs a note
        json.dumps({"status": "received"}): 400,
        json.dumps({"status": "in_review", "colour": "red"}): 400,
        "not json": 400,
    }
    for body, status in refusals.items():
        response = await client.post(
            f"{BASE}/reports/AAAA2222/status",
            data=body,
            headers={**admin, "Content-Type": "application/json"},
        )
        assert response.status == status, body
        assert (await response.json())["error"]
    still = await (await client.get(f"{BASE}/reports/AAAA2222", headers=analyst)).json()
    assert len(still["changes"]) == 1


async def test_admins_keep_the_liaisons(
    api: tuple[TestClient, dict[str, str]], runtime: Runtime
) -> None:
    client, tokens = api
    analyst, admin = bearer(tokens["analyst"]), bearer(tokens["admin"])
    one = {"address": "55 1111 2222", "name": "Rosa", "territory": "centro", "language": "es"}
    assert (await client.post(f"{BASE}/liaisons", json=one, headers=analyst)).status == 403
    assert (await client.get(f"{BASE}/liaisons", headers=analyst)).status == 403
    added = await client.post(f"{BASE}/liaisons", json=one, headers=admin)
    assert added.status == 201
    assert (await added.json())["address"] == "+525511112222"
    again = await client.post(f"{BASE}/liaisons", json={**one, "name": "Rosa P."}, headers=admin)
    assert again.status == 200 and (await again.json())["name"] == "Rosa P."

    many = {
        "liaisons": [
            {"address": "+523312345678", "name": "Lupe", "territory": "sur"},
            {"address": "987654321", "name": "Marc", "territory": "sur", "channel": "telegram"},
            {"address": "+5215511112222", "name": "Rosa", "territory": "sur"},
        ]
    }
    counted = await client.post(f"{BASE}/liaisons", json=many, headers=admin)
    assert await counted.json() == {"added": 2, "updated": 1}
    bad = {"liaisons": [*many["liaisons"], {"address": "+52", "name": "X", "territory": "sur"}]}
    refused = await client.post(f"{BASE}/liaisons", json=bad, headers=admin)
    assert refused.status == 400 and "row 4" in (await refused.json())["error"]
    for wrong in ({**one, "language": "pt"}, {**one, "address": "abc"}, {"liaisons": []}):
        assert (await client.post(f"{BASE}/liaisons", json=wrong, headers=admin)).status == 400

    listed = await (await client.get(f"{BASE}/liaisons?territory=sur", headers=admin)).json()
    assert [x["name"] for x in listed["liaisons"]] == ["Lupe", "Marc", "Rosa"]
    assert (await client.delete(f"{BASE}/liaisons/987654321", headers=analyst)).status == 403
    removed = await client.delete(f"{BASE}/liaisons/%2B525511112222", headers=admin)
    assert await removed.json() == {"removed": 1}
    gone = await client.delete(f"{BASE}/liaisons/+525511112222", headers=admin)
    assert gone.status == 404
    everyone = await (await client.get(f"{BASE}/liaisons", headers=admin)).json()
    assert [x["address"] for x in everyone["liaisons"]] == ["+523312345678", "987654321"]
