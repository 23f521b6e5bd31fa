"""The territories catalogue on SQLite and PostgreSQL: GeoJSON and CSV imports that update in
place or refuse whole, pins located in (nested, holed, multi-part) polygons, typed places
matched forgivingly but never to an unrelated or an ambiguous name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from consulta.bot.runtime import Runtime
from consulta.storage.models import Territory
from consulta.storage.territories import (
    Feature,
    Imported,
    Territories,
    TerritoryError,
    place_key,
    read_csv,
    read_geojson,
)


def square(west: float, south: float, size: float) -> list[list[float]]:
    """A closed ring, counter-clockwise, longitude first as GeoJSON has it."""
    east, north = west + size, south + size
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def feature(code: Any, name: str, geometry: dict[str, Any], parent: str | None = None) -> Any:
    properties = {"code": code, "name": name}
    if parent is not None:
        properties["parent"] = parent
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def collection(*features: Any) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


# Around Mexico City: a municipality with a colonia inside it, a colonia of two parts (the first
# with a hole, an enclave of no one's), and one more colonia.
CUAUHTEMOC = polygon(square(-99.20, 19.40, 0.10))
CENTRO = polygon(square(-99.14, 19.43, 0.01))
SANTA_JULIA = {
    "type": "MultiPolygon",
    "coordinates": [
        [square(-99.00, 19.40, 0.02), square(-98.995, 19.405, 0.01)],
        [square(-98.97, 19.40, 0.01)],
    ],
}
DOCTORES = polygon(square(-99.15, 19.41, 0.01))
CITY = collection(
    feature("cuauhtemoc", "Cuauhtémoc", CUAUHTEMOC),
    feature("centro", "Centro", CENTRO, parent="cuauhtemoc"),
    feature("doctores", "Doctores", DOCTORES, parent="cuauhtemoc"),
    feature("santa-julia", "Santa Julia", SANTA_JULIA),
)
NAMES_CSV = (
    "code,name,parent\n"
    "san-angel,San Ángel,alvaro-obregon\n"
    "vicente-guerrero,Unidad Habitacional Vicente Guerrero,iztapalapa\n"
    "iztapalapa,Iztapalapa,\n"
)


@pytest.fixture
async def territories(runtime: Runtime) -> Territories:
    return Territories(runtime.store.engine)


@pytest.fixture
async def city(territories: Territories) -> Territories:
    assert await territories.import_features(read_geojson(CITY)) == Imported(added=4, updated=0)
    assert await territories.import_features(read_csv(NAMES_CSV)) == Imported(added=3, updated=0)
    return territories


async def ids(territories: Territories) -> dict[str, int]:
    async with territories.engine.connect() as conn:
        rows = await conn.execute(select(Territory.code, Territory.id))
        return {code: id_ for code, id_ in rows}


async def test_geojson_import_keeps_code_name_parent_and_outline(territories: Territories) -> None:
    await territories.import_features(read_geojson(CITY))

    centro = await territories.get("centro")
    assert centro is not None
    assert (centro.name, centro.parent, centro.geometry) == ("Centro", "cuauhtemoc", CENTRO)
    assert centro.updated_at.tzinfo is not None
    assert [t.code for t in await territories.all()] == [
        "centro",
        "cuauhtemoc",
        "doctores",
        "santa-julia",
    ]
    assert await territories.codes() == {"centro", "cuauhtemoc", "doctores", "santa-julia"}
    assert await territories.get("nowhere") is None


async def test_csv_import_gives_names_without_outlines(city: Territories) -> None:
    vg = await city.get("vicente-guerrero")
    assert vg is not None
    assert (vg.name, vg.parent, vg.geometry) == (
        "Unidad Habitacional Vicente Guerrero",
        "iztapalapa",
        None,
    )
    iztapalapa = await city.get("iztapalapa")
    assert iztapalapa is not None and iztapalapa.parent is None
    assert len(await city.all()) == 7


async def test_reimport_updates_in_place(city: Territories) -> None:
    before = await ids(city)
    assert await city.locate(19.435, -99.135) == "centro"
    moved = polygon(square(-99.30, 19.50, 0.01))  # no longer inside Cuauhtémoc

    again = collection(
        feature("centro", "Centro Histórico", moved, parent="cuauhtemoc"),
        feature("roma", "Roma Norte", polygon(square(-99.17, 19.41, 0.01))),
    )
    assert await city.import_features(read_geojson(again)) == Imported(added=1, updated=1)

    after = await ids(city)
    assert after["centro"] == before["centro"] and len(after) == len(before) + 1
    centro = await city.get("centro")
    assert centro is not None and (centro.name, centro.geometry) == ("Centro Histórico", moved)
    # The index follows at once: the old place is Cuauhtémoc's again, the new one Centro's.
    assert await city.locate(19.435, -99.135) == "cuauhtemoc"
    assert await city.locate(19.505, -99.295) == "centro"
    assert await city.match("centro historico") == "centro"


async def test_a_csv_reimport_keeps_the_outline(city: Territories) -> None:
    result = await city.import_features(read_csv("code,name\ncentro,Centro (CDMX)\n"))
    assert result == Imported(added=0, updated=1)
    centro = await city.get("centro")
    assert centro is not None
    assert (centro.name, centro.parent, centro.geometry) == ("Centro (CDMX)", None, CENTRO)
    assert await city.locate(19.435, -99.135) == "centro"


async def test_another_process_import_is_seen(runtime: Runtime) -> None:
    server = Territories(runtime.store.engine, recheck=0)
    cli = Territories(runtime.store.engine)
    assert await server.locate(19.435, -99.135) is None
    await cli.import_features(read_geojson(CITY))
    assert await server.locate(19.435, -99.135) == "centro"


BOWTIE = polygon([[-99.1, 19.4], [-99.0, 19.5], [-99.0, 19.4], [-99.1, 19.5], [-99.1, 19.4]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{not json", "not JSON", id="not-json"),
        pytest.param('{"type": "Feature"}', "expected a GeoJSON FeatureCollection", id="not-fc"),
        pytest.param(
            collection(feature("a", "A", CENTRO), feature("", "Sin código", DOCTORES)),
            "features[1]: no code",
            id="no-code",
        ),
        pytest.param(
            collection(feature("a", "A", CENTRO), feature("b", "", DOCTORES)),
            "features[1] (code 'b'): no name",
            id="no-name",
        ),
        pytest.param(
            collection(feature("a", "A", CENTRO), feature("bowtie", "Moño", BOWTIE)),
            "features[1] (code 'bowtie'): invalid geometry: Self-intersection",
            id="invalid-geometry",
        ),
        pytest.param(
            collection(feature("p", "P", {"type": "Point", "coordinates": [-99.1, 19.4]})),
            "features[0] (code 'p'): the geometry is a Point, not a Polygon or MultiPolygon",
            id="a-point",
        ),
        pytest.param(
            collection(feature("s", "S", polygon(square(19.40, -99.20, 0.1)))),
            "features[0] (code 's'): coordinates out of range: GeoJSON gives longitude first",
            id="lat-lon-swapped",
        ),
        pytest.param(
            collection(feature("x", "X", {"type": "Polygon", "coordinates": [[[1, 2]]]})),
            "features[0] (code 'x'): the geometry cannot be read",
            id="unreadable",
        ),
        pytest.param(
            collection(feature("a", "A", CENTRO), feature("a", "A again", DOCTORES)),
            "features[1]: code 'a' again (as in features[0])",
            id="duplicate-code",
        ),
        pytest.param(
            collection(feature("c d", "Spaced", CENTRO)),
            "features[0] (code 'c d'): a code is at most 64 characters, with no spaces",
            id="space-in-code",
        ),
    ],
)
async def test_bad_geojson_is_refused_and_nothing_is_written(
    city: Territories, text: str, message: str
) -> None:
    before = await city.all()
    with pytest.raises(TerritoryError) as refused:
        await city.import_features(read_geojson(text))
    assert message in str(refused.value)
    assert await city.all() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("name,parent\nCentro,\n", "line 1: expected a header", id="no-code-column"),
        pytest.param("code,name\nok,Ok\n,Sin código\n", "line 3: no code", id="no-code"),
        pytest.param("code,name,parent\nok,Ok,ok\n", "line 2 (code 'ok'): ", id="own-parent"),
    ],
)
async def test_bad_csv_is_refused_and_nothing_is_written(
    city: Territories, text: str, message: str
) -> None:
    before = await city.all()
    with pytest.raises(TerritoryError) as refused:
        await city.import_features(read_csv(text))
    assert message in str(refused.value)
    assert await city.all() == before


async def test_features_given_directly_are_named_by_index(territories: Territories) -> None:
    with pytest.raises(TerritoryError, match=r"features\[1\] \(code 'b'\): no name"):
        await territories.import_features([Feature("a", "A"), Feature("b", "")])
    assert await territories.all() == []


@pytest.mark.parametrize(
    ("lat", "lon", "code"),
    [
        pytest.param(19.435, -99.135, "centro", id="a-colonia-inside-its-municipality"),
        pytest.param(19.45, -99.18, "cuauhtemoc", id="the-municipality-outside-its-colonias"),
        pytest.param(19.415, -99.145, "doctores", id="another-colonia"),
        pytest.param(19.402, -98.998, "santa-julia", id="first-part-of-a-multipolygon"),
        pytest.param(19.405, -98.965, "santa-julia", id="second-part-of-a-multipolygon"),
        pytest.param(19.41, -98.99, None, id="in-the-hole-of-a-multipolygon"),
        pytest.param(20.70, -103.35, None, id="far-away"),
        pytest.param(19.44, -99.135, "centro", id="on-a-border"),
    ],
)
async def test_locate(city: Territories, lat: float, lon: float, code: str | None) -> None:
    assert await city.locate(lat, lon) == code


async def test_locate_in_an_empty_catalogue(territories: Territories) -> None:
    assert await territories.locate(19.435, -99.135) is None
    assert await territories.match("Centro") is None


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        pytest.param("Centro", "centro", id="as-named"),
        pytest.param("CENTRO", "centro", id="upper-case"),
        pytest.param("colonia Centro", "centro", id="colonia"),
        pytest.param("col. centro", "centro", id="col."),
        pytest.param("Barrio Centro!", "centro", id="barrio-and-punctuation"),
        pytest.param("Santa Julia", "santa-julia", id="two-words"),
        pytest.param("sta julia", "santa-julia", id="sta"),
        pytest.param("  santa   julía ", "santa-julia", id="spaces-and-accent"),
        pytest.param("Santa Jula", "santa-julia", id="a-letter-missing"),
        pytest.param("snata julia", "santa-julia", id="two-letters-swapped"),
        pytest.param("Fracc. Santa Julia", "santa-julia", id="fracc."),
        pytest.param("Doctores", "doctores", id="doctores"),
        pytest.param("doctorez", "doctores", id="a-typo"),
        pytest.param("cuauhtemoc", "cuauhtemoc", id="without-the-accent"),
        pytest.param("san angel", "san-angel", id="csv-imported"),
        pytest.param("Vicente Guerrero", "vicente-guerrero", id="without-unidad-habitacional"),
        pytest.param("U.H. Vicente Guerrero", "vicente-guerrero", id="u.h."),
        pytest.param("santa-julia", "santa-julia", id="the-code"),
        pytest.param("Polanco", None, id="unrelated"),
        pytest.param("Santa Fe", None, id="unrelated-but-sharing-a-word"),
        pytest.param("Centros Comerciales", None, id="longer-unrelated"),
        pytest.param("Cetro", "centro", id="a-letter-missing-in-a-short-name"),
        pytest.param("", None, id="empty"),
        pytest.param("¿?", None, id="punctuation-only"),
    ],
)
async def test_match(city: Territories, typed: str, code: str | None) -> None:
    assert await city.match(typed) == code


async def test_match_refuses_two_equally_close_names(city: Territories) -> None:
    await city.import_features(
        read_csv(
            "code,name,parent\n"
            "santa-ana,Santa Ana,tlahuac\n"
            "santa-ina,Santa Ina,tlahuac\n"
            "centro-coyoacan,Centro,coyoacan\n"
            "roma,Roma,cuauhtemoc\n"
        )
    )
    assert await city.match("roma") == "roma"
    assert await city.match("Rama") is None  # a short name: one letter makes another name
    assert await city.match("Santa Ana") == "santa-ana"  # an exact name wins over a close one
    assert await city.match("Santa Una") is None  # one letter from each
    assert await city.match("colonia Centro") is None  # Cuauhtémoc's or Coyoacán's
    assert await city.match("Santa Julia") == "santa-julia"


def test_place_key() -> None:
    assert place_key("Col. Ampliación Santa Julia") == "ampliacion santa julia"
    assert place_key("Colonia") == "colonia"  # a name that is only a kind stays itself
    assert place_key("Unidad Habitacional") == "unidad habitacional"
    assert place_key("Gral. Anaya") == "general anaya"
