"""A report flow's exports carry each report's folio, category, territory, status and liaison
flag (CSV after the folio, GeoJSON as properties); a survey's exports stay as they were."""

from __future__ import annotations

import csv
import io
import json

import pytest
from openpyxl import load_workbook

from consulta.adapters.message import Inbound, Place
from consulta.bot.export import Export, write_export
from consulta.bot.runtime import Runtime
from consulta.storage.liaisons import LiaisonIn, Liaisons
from consulta.storage.reports import Reports

LIAISON, RESIDENT = "+5217733333333", "+5217744444444"


async def report(rt: Runtime, address: str, *, pin: bool) -> None:
    """A report made through the shipped report flow: a streetlight, pinned or typed."""
    await rt.inbox.handle(Inbound("whatsapp", address, start="reporte", language="es"))
    for text in ("sí", "3"):
        await rt.inbox.handle(Inbound("whatsapp", address, text=text))
    where = (
        Inbound("whatsapp", address, place=Place(19.43, -99.13, "Calle Hidalgo 12"))
        if pin
        else Inbound("whatsapp", address, text="Calle Hidalgo 12")
    )
    await rt.inbox.handle(where)
    for text in ("Lámpara fundida", "saltar"):
        await rt.inbox.handle(Inbound("whatsapp", address, text=text))


async def export(rt: Runtime, flow: str, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    await write_export(rt.store, Export(rt.flows[flow], **options), fmt, out)  # type: ignore[arg-type]
    return out.getvalue()


def rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


@pytest.fixture
async def reports(runtime: Runtime) -> dict[str, str]:
    """Two reports, the liaison's pinned and moved to in_progress, the resident's typed:
    their folios by address."""
    await Liaisons(runtime.store.engine).add(LiaisonIn(LIAISON, "Lucía Promotora", "centro"))
    await report(runtime, LIAISON, pin=True)
    await report(runtime, RESIDENT, pin=False)
    folios = [row async for row in Export(runtime.flows["report"]).rows(runtime.store)]
    assert len(folios) == 2 and all(r.folio for r in folios)
    liaisons, resident = (r.folio for r in folios)  # oldest first
    assert liaisons is not None and resident is not None
    await Reports(runtime.store.engine, "es").set_status(
        liaisons, "in_progress", note="x", by="Ana"
    )
    return {LIAISON: liaisons, RESIDENT: resident}


async def test_csv_has_status_and_liaison_after_the_folio(
    runtime: Runtime, reports: dict[str, str]
) -> None:
    body = await export(runtime, "report", "csv")
    liaisons, resident = rows(body)
    header = list(liaisons)
    at = header.index("folio")
    assert header[at + 1 : at + 3] == ["report_status", "liaison"]
    assert header.count("status") == 1  # the submission's own, as in every export
    assert liaisons["folio"] == reports[LIAISON] and liaisons["status"] == "complete"
    assert liaisons["report_status"] == "in_progress" and liaisons["liaison"] == "True"
    assert resident["folio"] == reports[RESIDENT]
    assert resident["report_status"] == "received" and resident["liaison"] == "False"
    assert liaisons["category"] == "Alumbrado descompuesto"
    assert b"77333" not in body and b"77444" not in body and "Luc" not in body.decode()


async def test_geojson_features_carry_the_report(runtime: Runtime, reports: dict[str, str]) -> None:
    [feature] = json.loads(await export(runtime, "report", "geojson"))["features"]
    assert feature["geometry"] == {"type": "Point", "coordinates": [-99.13, 19.43]}
    properties = feature["properties"]
    assert properties["folio"] == reports[LIAISON]
    assert properties["category"] == "Alumbrado descompuesto"  # a label, as other choices
    assert "territory" in properties
    assert properties["report_status"] == "in_progress" and properties["liaison"] is True
    assert "address" not in properties and "name" not in properties
    english = json.loads(await export(runtime, "report", "geojson", language="en"))
    assert english["features"][0]["properties"]["category"] == "Broken street light"


async def test_json_lines_and_xlsx_carry_the_report(
    runtime: Runtime, reports: dict[str, str]
) -> None:
    lines = (await export(runtime, "report", "jsonl")).decode().splitlines()
    records = {r["folio"]: r for r in map(json.loads, lines)}
    assert records[reports[LIAISON]]["liaison"] is True
    assert records[reports[RESIDENT]]["liaison"] is False
    assert records[reports[RESIDENT]]["report_status"] == "received"
    book = load_workbook(io.BytesIO(await export(runtime, "report", "xlsx")), read_only=True)
    header, first, _ = list(book["submissions"].iter_rows(values_only=True))
    record = dict(zip(header, first, strict=True))
    assert record["report_status"] == "in_progress" and record["liaison"] is True
    described = {r[0]: r[1] for r in book["columns"].iter_rows(values_only=True)}
    assert described["report_status"] == described["liaison"] == "report"
    book.close()


async def test_an_unfinished_report_has_no_status_yet(runtime: Runtime) -> None:
    await runtime.inbox.handle(Inbound("whatsapp", RESIDENT, start="reporte", language="es"))
    await runtime.inbox.handle(Inbound("whatsapp", RESIDENT, text="sí"))
    [partial] = rows(await export(runtime, "report", "csv", status="all"))
    assert partial["status"] == "partial" and partial["report_status"] == ""
    assert partial["liaison"] == "False"


async def test_contacts_still_follow_the_contact(runtime: Runtime, reports: dict[str, str]) -> None:
    liaisons, _ = rows(await export(runtime, "report", "csv", contacts=True))
    assert list(liaisons)[:4] == ["submission", "contact", "address", "name"]
    assert liaisons["address"] == "'" + LIAISON and liaisons["liaison"] == "True"


async def test_a_survey_export_has_no_report_columns(runtime: Runtime) -> None:
    await runtime.inbox.handle(Inbound("whatsapp", RESIDENT, start="priorities", language="es"))
    await runtime.inbox.handle(Inbound("whatsapp", RESIDENT, text="1"))
    [survey] = rows(await export(runtime, "priorities", "csv", status="all"))
    assert "report_status" not in survey and "liaison" not in survey
    lines = (await export(runtime, "priorities", "jsonl", status="all")).decode().splitlines()
    assert not {"report_status", "liaison"} & set(json.loads(lines[0]))
