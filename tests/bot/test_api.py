"""The staff API: tokens and roles, summaries with small cells suppressed, pages, exports, and
data-rights requests for admins."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from consulta.adapters.message import Inbound
from consulta.bot.api import choice_labels
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.flows.model import load_flow
from consulta.storage.staff import Staff

KINDS = Path(__file__).resolve().parents[1] / "fixtures" / "flows" / "kinds.yaml"


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
    return await aiohttp_client(build_app(runtime)), tokens


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
