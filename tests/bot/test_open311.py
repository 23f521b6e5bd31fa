"""Open311 GeoReport v2 (`/open311/v2`) on SQLite and PostgreSQL: discovery, the report
categories as services, reports as service requests in JSON and XML, posting one with a staff
token, the spec's errors — and no phone number or name in any answer."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from consulta.adapters.message import Inbound
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app
from consulta.storage.reports import Reports
from consulta.storage.staff import Staff
from consulta.storage.territories import Feature

BASE = "/open311/v2"
PHONE = "+5217700000001"
STAFF_NAME = "Ana Analista"
CATEGORIES = [
    "water_leak",
    "no_water",
    "streetlight",
    "pothole",
    "garbage",
    "insecurity",
    "flooding",
    "other",
]
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[-99.2, 19.4], [-99.1, 19.4], [-99.1, 19.5], [-99.2, 19.5], [-99.2, 19.4]]],
}
REQUEST_FIELDS = [
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
]


@pytest.fixture
async def open311(runtime: Runtime, aiohttp_client: Any) -> tuple[TestClient, str]:
    token = await Staff(runtime.store).add(STAFF_NAME, "analyst")
    await runtime.territories.import_features(
        [Feature("centro", "Centro", geometry=SQUARE), Feature("santa_julia", "Santa Julia")]
    )
    return await aiohttp_client(build_app(runtime)), token


async def _json(client: TestClient, path: str, status: int = 200, **kw: Any) -> Any:
    response = await client.get(f"{BASE}/{path}", **kw)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json" and response.charset == "utf-8"
    return await response.json()


async def _xml(client: TestClient, path: str, status: int = 200) -> ET.Element:
    response = await client.get(f"{BASE}/{path}")
    assert response.status == status, await response.text()
    assert response.content_type == "application/xml" and response.charset == "utf-8"
    text = await response.text()
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(text)


async def _post(client: TestClient, path: str, status: int = 200, **data: str) -> Any:
    response = await client.post(f"{BASE}/{path}", data=data)
    assert response.status == status, await response.text()
    return await response.text()


async def _chat_report(runtime: Runtime) -> None:
    """A resident's streetlight report, made through the chat."""
    await runtime.inbox.handle(Inbound("whatsapp", PHONE, start="reporte", language="es"))
    for text in ("sí", "3", "Calle Hidalgo 12", "Lámpara fundida", "saltar"):
        await runtime.inbox.handle(Inbound("whatsapp", PHONE, text=text, name="Rosa Pérez"))


async def test_discovery_and_services(open311: tuple[TestClient, str], runtime: Runtime) -> None:
    client, _ = open311
    found = await _json(client, "discovery.json")
    assert set(found) == {"changeset", "contact", "key_service", "endpoints"}
    [endpoint] = found["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"].endswith("/open311/v2") and endpoint["type"] == "production"
    assert endpoint["formats"] == ["text/xml", "application/json"]
    datetime.fromisoformat(found["changeset"])
    root = await _xml(client, "discovery.xml")
    assert root.tag == "discovery"
    assert [f.text for f in root.findall("endpoints/endpoint/formats/format")] == [
        "text/xml",
        "application/json",
    ]

    services = await _json(client, "services.json")
    assert [s["service_code"] for s in services] == CATEGORIES
    leak = services[0]
    assert leak == {
        "service_code": "water_leak",
        "service_name": "Fuga de agua",  # DEFAULT_LANGUAGE es
        "description": "Fuga de agua",
        "metadata": False,
        "type": "realtime",
        "keywords": "water_leak, Water leak, Fuite d'eau",
        "group": "Reporte vecinal",
    }
    root = await _xml(client, "services.xml")
    assert root.tag == "services" and len(root.findall("service")) == len(CATEGORIES)
    first = root.find("service")
    assert first is not None
    assert [c.tag for c in first] == list(leak)
    assert first.findtext("service_name") == "Fuga de agua"
    assert first.findtext("metadata") == "false"

    assert await _json(client, "services/pothole.json") == {
        "service_code": "pothole",
        "attributes": [],
    }
    definition = await _xml(client, "services/pothole.xml")
    assert definition.tag == "service_definition"
    assert definition.findtext("service_code") == "pothole"
    assert definition.find("attributes") is not None
    missing = await _json(client, "services/nothing.json", 404)
    assert missing[0]["code"] == 404 and missing[0]["description"]


async def test_posted_requests_become_reports_followed_like_any(
    open311: tuple[TestClient, str], runtime: Runtime
) -> None:
    client, token = open311
    posted = await _post(
        client,
        "requests.json",
        api_key=token,
        service_code="streetlight",
        lat="19.45",
        long="-99.15",
        description="Poste sin luz frente a la escuela",
        media_url="https://example.org/poste.jpg",
        email="vecina@example.org",
        first_name="Rosa",
        last_name="Pérez",
        phone="+5215599998888",
    )
    [created] = json.loads(posted)
    assert set(created) == {"service_request_id", "service_notice", "account_id"}
    folio = created["service_request_id"]
    assert len(folio) == 8

    detail = await Reports(runtime.store.engine).get(folio)
    assert detail.report.channel == "open311" and detail.report.territory == "centro"
    assert detail.report.category == "streetlight" and detail.report.status == "received"
    assert detail.answers == {
        "category": "streetlight",
        "location": {"latitude": 19.45, "longitude": -99.15},
        "description": "Poste sin luz frente a la escuela",
        "photo": {"media": "https://example.org/poste.jpg"},
    }

    xml_posted = ET.fromstring(
        await _post(
            client,
            "requests.xml",
            api_key=token,
            service_code="pothole",
            address_string="Santa Julia, calle 5",
            description="Bache grande",
        )
    )
    assert xml_posted.tag == "service_requests"
    other = xml_posted.findtext("request/service_request_id")
    assert other and other != folio
    placed = await Reports(runtime.store.engine).get(other)
    assert placed.answers["location"] == {"text": "Santa Julia, calle 5"}
    assert placed.report.territory is None  # "Santa Julia, calle 5" is no territory's name
    typed = await _post(
        client, "requests.json", api_key=token, service_code="garbage", address_string="Santa Julia"
    )
    named = json.loads(typed)[0]["service_request_id"]
    assert (await Reports(runtime.store.engine).get(named)).report.territory == "santa_julia"

    [shown] = await _json(client, f"requests/{folio}.json")
    assert list(shown) == REQUEST_FIELDS
    assert shown["status"] == "open" and shown["status_notes"] is None
    assert shown["service_code"] == "streetlight"
    assert shown["service_name"] == "Alumbrado descompuesto"
    assert (shown["lat"], shown["long"], shown["address"]) == (19.45, -99.15, None)
    assert shown["media_url"] == "https://example.org/poste.jpg"
    assert shown["description"] == "Poste sin luz frente a la escuela"
    requested = datetime.fromisoformat(shown["requested_datetime"])
    assert requested.utcoffset() is not None
    assert abs(requested - datetime.now(UTC)) < timedelta(minutes=5)
    assert shown["updated_datetime"] == shown["requested_datetime"]
    [typed_shown] = await _json(client, f"requests/{other.lower()}.json")
    assert typed_shown["address"] == "Santa Julia, calle 5" and typed_shown["lat"] is None
    assert typed_shown["media_url"] is None

    await Reports(runtime.store.engine).set_status(
        folio, "resolved", note="Lámpara cambiada", by="Ana"
    )
    [closed] = await _json(client, f"requests/{folio}.json")
    assert closed["status"] == "closed" and closed["status_notes"] == "Lámpara cambiada"
    assert closed["updated_datetime"] >= closed["requested_datetime"]
    root = await _xml(client, f"requests/{folio}.xml")
    assert root.tag == "service_requests"
    request = root.find("request")
    assert request is not None and [c.tag for c in request] == REQUEST_FIELDS
    assert request.findtext("status") == "closed"
    assert request.findtext("status_notes") == "Lámpara cambiada"
    assert request.findtext("lat") == "19.45" and request.findtext("address") == ""

    # The personal fields posted were never kept.
    everything = " ".join(
        [
            await (await client.get(f"{BASE}/requests.json")).text(),
            await (await client.get(f"{BASE}/requests.xml")).text(),
        ]
    )
    for personal in ("vecina@example.org", "Rosa", "Pérez", "5599998888", STAFF_NAME, "Ana"):
        assert personal not in everything


async def test_filters(open311: tuple[TestClient, str], runtime: Runtime) -> None:
    client, token = open311
    folios = {}
    for code in ("pothole", "garbage", "pothole"):
        body = await _post(
            client, "requests.json", api_key=token, service_code=code, address_string="Centro"
        )
        folios.setdefault(code, []).append(json.loads(body)[0]["service_request_id"])
    first, second = folios["pothole"]
    await Reports(runtime.store.engine).set_status(second, "rejected", note="No procede")

    async def ids(query: str) -> set[str]:
        return {r["service_request_id"] for r in await _json(client, f"requests.json?{query}")}

    everyone = {first, second, *folios["garbage"]}
    assert await ids("") == everyone
    assert await ids("service_code=pothole") == {first, second}
    assert await ids("status=open") == {first, *folios["garbage"]}
    assert await ids("status=closed") == {second}
    assert await ids("service_code=pothole&status=open") == {first}
    now = datetime.now(UTC)
    before, after = (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()
    quoted = {"+": "%2B"}
    for old, new in quoted.items():
        before, after = before.replace(old, new), after.replace(old, new)
    assert await ids(f"start_date={before}&end_date={after}") == everyone
    assert await ids(f"start_date={after}") == set()
    assert await ids(f"end_date={before}") == set()
    assert await ids("start_date=2000-01-01T00:00:00Z&end_date=2000-02-01T00:00:00Z") == set()
    assert await ids(f"service_request_id={first},%23{second.lower()},ZZZZ9999,{'Z' * 99}") == {
        first,
        second,
    }
    root = await _xml(client, "requests.xml?status=closed")
    assert [r.findtext("service_request_id") for r in root.findall("request")] == [second]
    assert (await _xml(client, "requests.xml?service_code=flooding")).findall("request") == []


async def test_errors_follow_the_spec(open311: tuple[TestClient, str], runtime: Runtime) -> None:
    client, token = open311
    good = {"api_key": token, "service_code": "pothole", "lat": "19.45", "long": "-99.15"}
    refusals: list[tuple[dict[str, str], int]] = [
        ({**good, "api_key": "nope"}, 403),
        ({k: v for k, v in good.items() if k != "api_key"}, 403),
        ({**good, "service_code": "volcano"}, 400),
        ({k: v for k, v in good.items() if k != "service_code"}, 400),
        ({"api_key": token, "service_code": "pothole"}, 400),  # no location
        ({**good, "lat": "north"}, 400),
        ({**good, "lat": "95"}, 400),
        ({**good, "long": "nan"}, 400),
        ({"api_key": token, "service_code": "pothole", "lat": "19.4"}, 400),
        ({**good, "media_url": "file:///etc/passwd"}, 400),
        ({**good, "description": "x" * 501}, 400),
        ({**good, "description": "a\x00b"}, 400),
    ]
    for data, status in refusals:
        for fmt in ("json", "xml"):
            text = await _post(client, f"requests.{fmt}", status, **data)
            if fmt == "json":
                [error] = json.loads(text)
                assert error["code"] == status and error["description"], data
            else:
                root = ET.fromstring(text)
                assert root.tag == "errors"
                assert root.findtext("error/code") == str(status) and root.findtext(
                    "error/description"
                )
    for body in ("not json", "[1, 2]"):
        response = await client.post(
            f"{BASE}/requests.json", data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status == 400 and (await response.json())[0]["code"] == 400
    assert await _json(client, "requests.json") == []  # nothing was created

    # A JSON body is read like the spec's form.
    response = await client.post(
        f"{BASE}/requests.json", json={**good, "lat": 19.45, "description": None}
    )
    assert response.status == 200
    [made] = await response.json()
    [shown] = await _json(client, f"requests/{made['service_request_id']}.json")
    assert (shown["lat"], shown["long"], shown["service_code"]) == (19.45, -99.15, "pothole")
    assert shown["description"] is None

    for path, status in (
        ("requests/ZZZZ9999.json", 404),
        ("requests/A%00B.json", 404),
        (f"requests/{'Z' * 300}.json", 404),
        ("requests.json?start_date=yesterday", 400),
        ("requests.json?end_date=2026-13-45", 400),
        ("requests.json?start_date=2026-02-01&end_date=2026-01-01", 400),
        ("requests.json?status=pending", 400),
        ("requests.json?service_code=volcano", 400),
        ("nothing.json", 404),
    ):
        [error] = await _json(client, path, status)
        assert error["code"] == status and error["description"], path
    root = await _xml(client, "requests/ZZZZ9999.xml", 404)
    assert root.tag == "errors" and root.findtext("error/code") == "404"
    root = await _xml(client, "requests.xml?start_date=garbage", 400)
    assert root.findtext("error/code") == "400"
    wrong = await client.delete(f"{BASE}/requests.json")
    assert wrong.status == 405 and (await wrong.json())[0]["code"] == 405


async def test_no_phone_number_or_name_in_any_answer(
    open311: tuple[TestClient, str], runtime: Runtime
) -> None:
    client, _ = open311
    await _chat_report(runtime)
    [report] = await Reports(runtime.store.engine).all()
    assert report.category == "streetlight" and report.channel == "whatsapp"

    [shown] = await _json(client, f"requests/{report.folio}.json")
    assert shown["address"] == "Calle Hidalgo 12" and shown["description"] == "Lámpara fundida"
    assert shown["media_url"] is None and shown["status"] == "open"
    await Reports(runtime.store.engine).set_status(report.folio, "in_progress", note="En camino")
    paths = [
        "discovery",
        "services",
        "services/streetlight",
        "requests",
        f"requests/{report.folio}",
        f"requests?service_request_id={report.folio}",
        "requests?status=open&service_code=streetlight",
    ]
    contact = await runtime.store.find_contact("whatsapp", PHONE)
    assert contact is not None
    for path in paths:
        for fmt in ("json", "xml"):
            url = f"{BASE}/{path.replace('?', f'.{fmt}?', 1) if '?' in path else path + '.' + fmt}"
            response = await client.get(url)
            assert response.status == 200, url
            text = await response.text()
            for personal in (PHONE, PHONE.lstrip("+"), "7700000001", "Rosa", contact.pid):
                assert personal not in text, (url, personal)
            assert report.folio in text or "requests" not in path
