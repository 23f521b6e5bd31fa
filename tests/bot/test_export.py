"""Exports as the planning team opens them: CSV in Excel, XLSX, JSON lines, GeoJSON in QGIS."""

from __future__ import annotations

import csv
import io
import json

import pytest
from openpyxl import load_workbook

from consulta.adapters.message import Inbound, Place
from consulta.bot.export import Export, Progress, neutralise, write_export
from consulta.bot.runtime import Runtime
from consulta.storage.exports import count_submissions

ANA, BRUNO = "+5217711111111", "+5217722222222"
FORMULA = '=HYPERLINK("http://example.com","clic")'


NAMES = {ANA: "Ana Pérez"}  # the name WhatsApp shows with each of her messages


async def say(rt: Runtime, address: str, *texts: str, channel: str = "whatsapp") -> None:
    for text in texts:
        await rt.inbox.handle(Inbound(channel, address, text=text, name=NAMES.get(address)))


@pytest.fixture
async def data(runtime: Runtime) -> Runtime:
    rt = runtime
    await rt.inbox.handle(
        Inbound("whatsapp", ANA, start="prioridades_centro", language="es", name="Ana Pérez")
    )
    await say(rt, ANA, "1", "2", "1", "Santa Julia", "1", "2", "1,3", FORMULA, "4")
    await rt.inbox.handle(Inbound("whatsapp", ANA, place=Place(20.1011, -98.7591, "Plaza Juárez")))
    await rt.inbox.handle(Inbound("whatsapp", BRUNO, start="priorities", language="fr"))
    await say(rt, BRUNO, "1", "3")  # stops half-way
    await rt.inbox.handle(Inbound("simulator", "staffpreview1", start="priorities", language="es"))
    await say(rt, "staffpreview1", "1", channel="simulator")  # a staff preview, half-way
    return rt


async def export(rt: Runtime, fmt: str, *, long: bool = False, **options: object) -> bytes:
    out = io.BytesIO()
    await write_export(rt.store, Export(rt.flows["priorities"], **options), fmt, out, long=long)  # type: ignore[arg-type]
    return out.getvalue()


def rows(body: bytes) -> list[dict[str, str]]:
    assert body.startswith("\ufeff".encode())  # Excel reads the accents right
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


async def test_csv_one_row_per_submission_with_labels_and_accents(data: Runtime) -> None:
    body = await export(data, "csv")
    [ana] = rows(body)
    assert ana["contact"].startswith("c") and ana["territory"] == "centro"
    assert ana["services_detail"] == "Agua potable; Recolección de basura"
    assert ana["pillar"] == "Servicios públicos y desarrollo sostenible"
    assert ana["consent"] == "Sí" and ana["satisfaction"] == "4"
    assert ana["problem_location"] == "20.1011, -98.7591 (Plaza Juárez)"
    assert ana["urgent_problem"] == "'" + FORMULA  # never runs as a formula
    assert b"5217711111111" not in body and b"5217722222222" not in body
    assert b"Ana P" not in body and "address" not in ana and "name" not in ana


async def test_csv_filters_codes_and_languages(data: Runtime) -> None:
    assert len(rows(await export(data, "csv", status="all"))) == 2  # the preview is left out
    assert len(rows(await export(data, "csv", status="all", include_previews=True))) == 3
    assert [r["status"] for r in rows(await export(data, "csv", status="partial"))] == ["partial"]
    assert rows(await export(data, "csv", territory="norte")) == []
    [coded] = rows(await export(data, "csv", codes=True))
    assert coded["services_detail"] == "water; waste" and coded["consent"] == "yes"
    [english] = rows(await export(data, "csv", language="en"))
    assert english["pillar"] == "Public services and sustainable development"


async def test_csv_long_has_one_row_per_answer(data: Runtime) -> None:
    long = rows(await export(data, "csv", long=True))
    assert len(long) == 10 and {r["question"] for r in long} >= {"consent", "pillar"}
    [services] = [r for r in long if r["question"] == "services_detail"]
    assert services["code"] == '["water", "waste"]' and services["answer"].startswith("Agua")


async def test_xlsx_submissions_and_a_sheet_describing_every_column(data: Runtime) -> None:
    book = load_workbook(io.BytesIO(await export(data, "xlsx")), read_only=True)
    assert book.sheetnames == ["submissions", "columns"]
    header, ana = list(book["submissions"].iter_rows(values_only=True))
    record = dict(zip(header, ana, strict=True))
    assert record["urgent_problem"] == "'" + FORMULA and record["satisfaction"] == 4
    described = {r[0]: r for r in book["columns"].iter_rows(values_only=True)}
    pillar = described["pillar"]
    assert pillar[1] == "single_choice"
    assert "security = Sécurité et paix" in pillar[7]  # choices, in French too
    book.close()


async def test_json_lines_keep_codes(data: Runtime) -> None:
    lines = (await export(data, "jsonl", status="all")).decode().splitlines()
    first = json.loads(lines[0])
    assert first["answers"]["services_detail"] == ["water", "waste"]
    assert first["answers"]["problem_location"]["latitude"] == 20.1011
    assert len(lines) == 2 and "+52" not in "".join(lines)


async def test_geojson_points_for_located_answers(data: Runtime) -> None:
    layer = json.loads(await export(data, "geojson"))
    assert layer["type"] == "FeatureCollection"
    [feature] = layer["features"]
    assert feature["geometry"] == {"type": "Point", "coordinates": [-98.7591, 20.1011]}
    assert feature["properties"]["question"] == "problem_location"
    assert feature["properties"]["label"] == "Plaza Juárez"


@pytest.mark.parametrize("dangerous", ["=1+1", "+52 771", "-2", "@SUM(A1)", "\tx", "\rx"])
def test_formula_starts_are_neutralised(dangerous: str) -> None:
    assert neutralise(dangerous) == "'" + dangerous
    assert neutralise(-2) == -2 and neutralise("Calle 5") == "Calle 5"


async def test_contact_details_follow_the_contact_in_every_format(data: Runtime) -> None:
    [ana] = rows(await export(data, "csv", contacts=True))
    assert list(ana)[:5] == ["submission", "contact", "address", "name", "flow"]
    assert ana["address"] == "'" + ANA and ana["name"] == "Ana Pérez"  # "+52…" runs in Excel
    long = rows(await export(data, "csv", long=True, contacts=True))
    assert list(long[0])[:4] == ["submission", "contact", "address", "name"]
    assert {r["address"] for r in long} == {"'" + ANA}
    book = load_workbook(io.BytesIO(await export(data, "xlsx", contacts=True)), read_only=True)
    header, row = list(book["submissions"].iter_rows(values_only=True))
    assert header[1:4] == ("contact", "address", "name") and row[2:4] == ("'" + ANA, "Ana Pérez")
    described = {r[0]: r[1] for r in book["columns"].iter_rows(values_only=True)}
    assert described["address"] == described["name"] == "contact details"
    book.close()
    lines = (await export(data, "jsonl", status="all", contacts=True)).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert list(records[0])[:4] == ["submission", "contact", "address", "name"]
    assert {r["address"] for r in records} == {ANA, BRUNO}  # JSON is no spreadsheet: as it is
    [feature] = json.loads(await export(data, "geojson", contacts=True))["features"]
    assert feature["properties"]["address"] == ANA
    assert feature["properties"]["name"] == "Ana Pérez"


async def test_the_count_matches_the_export_for_every_filter(data: Runtime) -> None:
    flow = data.flows["priorities"]
    for options in (
        {},
        {"status": "all"},
        {"status": "all", "include_previews": True},
        {"status": "partial"},
        {"territory": "norte"},
    ):
        chosen = Export(flow, **options)  # type: ignore[arg-type]
        exported = [row async for row in chosen.rows(data.store)]
        assert await chosen.count(data.store) == len(exported), options
    assert await count_submissions(data.store, "priorities", status="all") == 3  # with preview
    assert await count_submissions(data.store, "priorities", territory="centro") == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_is_a_bar_with_the_total_in_a_terminal_only(data: Runtime) -> None:
    terminal = Terminal()
    flow = data.flows["priorities"]
    out = io.BytesIO()
    written = await write_export(
        data.store, Export(flow, status="all"), "csv", out, progress=Progress(terminal)
    )
    assert written == 2
    shown = terminal.getvalue()
    assert "0/2" in shown and "2/2" in shown and "100%" in shown
    assert "100%" not in out.getvalue().decode("utf-8-sig")
    quiet = io.StringIO()  # not a terminal: a redirected stderr stays empty
    await write_export(data.store, Export(flow), "csv", io.BytesIO(), progress=Progress(quiet))
    assert quiet.getvalue() == ""
