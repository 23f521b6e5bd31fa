"""The territories catalogue: colonias and municipalities imported from GeoJSON or CSV, the
territory a location pin falls in (through a spatial index), and the one a typed place names."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import shapely
from rapidfuzz import process
from rapidfuzz.distance import OSA
from shapely.geometry import Point, shape
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from consulta.storage.models import Territory, utcnow

__all__ = [
    "Feature",
    "Imported",
    "Territories",
    "TerritoryError",
    "TerritoryInfo",
    "place_key",
    "read_csv",
    "read_geojson",
]

MAX_CODE = 64
MAX_NAME = 255
GEOMETRIES = ("Polygon", "MultiPolygon")
RECHECK = 10.0  # seconds a process trusts its index before asking whether another changed it

# Words a resident puts before a place's name that are not part of it ("col. Centro").
# "Ampliación" and "Pueblo" are not here: "Ampliación Santa Julia" is another colonia.
_KINDS = (
    ("unidad", "habitacional"),
    ("unidad", "hab"),
    ("u", "habitacional"),
    ("u", "hab"),
    ("u", "h"),
    ("uh",),
    ("conjunto", "habitacional"),
    ("fraccionamiento",),
    ("fracc",),
    ("frac",),
    ("colonia",),
    ("col",),
    ("barrio",),
)
_ABBREVIATIONS = {
    "sta": "santa",
    "sto": "santo",
    "sn": "san",
    "gral": "general",
    "ampl": "ampliacion",
    "prol": "prolongacion",
    "cd": "ciudad",
}
_NOT_WORD = re.compile(r"[\W_]+")


class TerritoryError(ValueError):
    """An import was refused: the message says what and where, and nothing was written."""


@dataclass(frozen=True)
class Feature:
    """One territory to import. `where` ("features[3]", "line 4") names it in messages."""

    code: str
    name: str
    parent: str | None = None
    geometry: dict[str, Any] | None = None  # GeoJSON Polygon | MultiPolygon, lon/lat
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class TerritoryInfo:
    code: str
    name: str
    parent: str | None
    geometry: dict[str, Any] | None
    updated_at: datetime


@dataclass(frozen=True)
class Imported:
    added: int
    updated: int


def read_geojson(text: str) -> list[Feature]:
    """The features of a GeoJSON FeatureCollection, each with properties `code`, `name` and
    optionally `parent` (checked by `Territories.import_features`).

    Raises:
        TerritoryError: not JSON, not a FeatureCollection, or a feature that is not an object.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TerritoryError(
            f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise TerritoryError("expected a GeoJSON FeatureCollection")
    items = data.get("features")
    if not isinstance(items, list):
        raise TerritoryError("the FeatureCollection has no list of features")
    features = []
    for index, item in enumerate(items):
        where = f"features[{index}]"
        if not isinstance(item, dict) or item.get("type") != "Feature":
            raise TerritoryError(f"{where}: not a GeoJSON Feature")
        properties = item.get("properties") or {}
        if not isinstance(properties, dict):
            raise TerritoryError(f"{where}: its properties are not an object")
        geometry = item.get("geometry")
        if not isinstance(geometry, dict):
            raise TerritoryError(f"{where}{_code(properties.get('code'))}: no geometry")
        features.append(
            Feature(
                code=_text(properties.get("code")),
                name=_text(properties.get("name")),
                parent=_text(properties.get("parent")) or None,
                geometry=geometry,
                where=where,
            )
        )
    return features


def read_csv(text: str) -> list[Feature]:
    """The rows of a CSV with a header `code,name,parent` (parent may be empty or missing).

    Raises:
        TerritoryError: no such header.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [(name or "").strip().lower() for name in reader.fieldnames or ()]
    if "code" not in header or "name" not in header:
        raise TerritoryError("line 1: expected a header with the columns code,name[,parent]")
    reader.fieldnames = header
    features = []
    for row in reader:
        features.append(
            Feature(
                code=_text(row.get("code")),
                name=_text(row.get("name")),
                parent=_text(row.get("parent")) or None,
                where=f"line {reader.line_num}",
            )
        )
    return features


def place_key(text: str) -> str:
    """A place as typed or as named, reduced to what tells places apart: no accents, case,
    punctuation, common abbreviations ("sta") or leading kind ("colonia", "col.", "barrio")."""
    decomposed = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    words = [_ABBREVIATIONS.get(w, w) for w in _NOT_WORD.sub(" ", folded).split()]
    for kind in _KINDS:
        if tuple(words[: len(kind)]) == kind and len(words) > len(kind):
            words = words[len(kind) :]
            break
    return " ".join(words)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()  # a numeric code (9007) as text


def _code(code: Any) -> str:
    return f" (code {code!r})" if code not in (None, "") else ""


def _edits_allowed(length: int) -> int:
    """Typos forgiven in a typed place of this length: none in a short one, where one letter
    makes another name ("Roma", "Rosa")."""
    return 0 if length < 5 else 1 if length < 9 else 2


def _checked(feature: Feature, where: str) -> Feature:
    label = f"{where}{_code(feature.code)}"
    if not feature.code:
        raise TerritoryError(f"{where}: no code")
    if len(feature.code) > MAX_CODE or any(c.isspace() for c in feature.code):
        raise TerritoryError(f"{label}: a code is at most {MAX_CODE} characters, with no spaces")
    if not feature.name:
        raise TerritoryError(f"{label}: no name")
    if len(feature.name) > MAX_NAME:
        raise TerritoryError(f"{label}: a name is at most {MAX_NAME} characters")
    if feature.parent is not None:
        if feature.parent == feature.code:
            raise TerritoryError(f"{label}: a territory cannot be its own parent")
        if len(feature.parent) > MAX_CODE:
            raise TerritoryError(f"{label}: a parent code is at most {MAX_CODE} characters")
    if feature.geometry is not None:
        _check_geometry(feature.geometry, label)
    return feature


def _check_geometry(geometry: dict[str, Any], label: str) -> None:
    kind = geometry.get("type")
    if kind not in GEOMETRIES:
        raise TerritoryError(f"{label}: the geometry is a {kind}, not a Polygon or MultiPolygon")
    try:
        geom = shape(geometry)
    except Exception as exc:  # shapely raises several kinds on malformed coordinates
        raise TerritoryError(f"{label}: the geometry cannot be read ({exc})") from None
    if geom.is_empty:
        raise TerritoryError(f"{label}: the geometry is empty")
    west, south, east, north = geom.bounds
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise TerritoryError(
            f"{label}: coordinates out of range: GeoJSON gives longitude first, then latitude"
        )
    if not geom.is_valid:
        raise TerritoryError(
            f"{label}: invalid geometry: {shapely.is_valid_reason(geom)} "
            "(fix it, e.g. with QGIS's Fix geometries, and import again)"
        )


@dataclass(frozen=True)
class _Catalogue:
    """One process's picture of the catalogue: a spatial index and the names to match."""

    version: tuple[Any, ...]
    tree: shapely.STRtree | None
    located: list[str]  # the code of each geometry in the tree, in its order
    areas: list[float]
    by_key: dict[str, frozenset[str]]  # place_key of a name or a code → codes
    keys: list[str]
    codes: frozenset[str]

    @classmethod
    def build(cls, version: tuple[Any, ...], rows: Sequence[Any]) -> _Catalogue:
        located, geometries, by_key = [], [], dict[str, set[str]]()
        codes = frozenset(code for code, _name, _geometry in rows)
        for code, name, geometry in rows:
            if geometry is not None:
                located.append(code)
                geometries.append(shape(geometry))
            for key in {place_key(name), place_key(code)} - {""}:
                by_key.setdefault(key, set()).add(code)
        shapely.prepare(geometries)
        return cls(
            version=version,
            tree=shapely.STRtree(geometries) if geometries else None,
            located=located,
            areas=[g.area for g in geometries],
            by_key={key: frozenset(codes) for key, codes in by_key.items()},
            keys=list(by_key),
            codes=codes,
        )


class Territories:
    """The catalogue of territories, on one engine. `locate` and `match` work on an index built
    from the table once, and built again when the catalogue changes (in this process at once,
    in another within `recheck` seconds)."""

    def __init__(self, engine: AsyncEngine, *, recheck: float = RECHECK) -> None:
        self.engine = engine
        self.recheck = recheck
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._catalogue: _Catalogue | None = None
        self._checked = -math.inf
        self._lock = asyncio.Lock()

    async def import_features(self, features: Iterable[Feature]) -> Imported:
        """Add the territories not in the catalogue and update those that are (by code), all
        or nothing. A feature without geometry (from a CSV) keeps the geometry it had.

        Raises:
            TerritoryError: a feature cannot be imported (its `where`, or its index, and code
                say which, and why); nothing was written.
        """
        checked: dict[str, Feature] = {}
        for index, feature in enumerate(features):
            where = feature.where or f"features[{index}]"
            _checked(feature, where)
            if feature.code in checked:
                first = checked[feature.code].where or "an earlier one"
                raise TerritoryError(f"{where}: code {feature.code!r} again (as in {first})")
            checked[feature.code] = Feature(
                feature.code, feature.name, feature.parent, feature.geometry, where
            )
        now = utcnow()
        rows = [
            {"code": f.code, "name": f.name, "parent": f.parent, "updated_at": now}
            for f in checked.values()
            if f.geometry is None
        ]
        shaped = [
            {
                "code": f.code,
                "name": f.name,
                "parent": f.parent,
                "geometry": f.geometry,
                "updated_at": now,
            }
            for f in checked.values()
            if f.geometry is not None
        ]
        async with self.engine.begin() as conn:
            known = set((await conn.execute(select(Territory.code))).scalars())
            for params, columns in ((rows, ()), (shaped, ("geometry",))):
                if not params:
                    continue
                stmt = self._insert(Territory)
                changed = ("name", "parent", "updated_at", *columns)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["code"],
                    set_={column: stmt.excluded[column] for column in changed},
                )
                await conn.execute(stmt, params)
        self._checked = -math.inf  # look again at the next locate or match
        added = len(checked.keys() - known)
        return Imported(added=added, updated=len(checked) - added)

    async def all(self) -> list[TerritoryInfo]:
        """Every territory, by code."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(*_COLUMNS).order_by(Territory.code))
            return [_info(*row) for row in rows]

    async def get(self, code: str) -> TerritoryInfo | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(*_COLUMNS).where(Territory.code == code))
            ).one_or_none()
        return _info(*row) if row else None

    async def codes(self) -> set[str]:
        """Every code in the catalogue (the ones deep links and groups may name)."""
        async with self.engine.connect() as conn:
            return set((await conn.execute(select(Territory.code))).scalars())

    async def known(self) -> frozenset[str]:
        """The codes as this process's picture of the catalogue has them (at most `recheck`
        seconds old): what the hot path checks a link's territory against."""
        return (await self._current()).codes

    async def locate(self, lat: float, lon: float) -> str | None:
        """The code of the territory a pin falls in (on a border: either one), or None. Where
        territories overlap (a colonia inside its municipality) the smallest one."""
        catalogue = await self._current()
        if catalogue.tree is None:
            return None
        hits = catalogue.tree.query(Point(lon, lat), predicate="intersects")
        if len(hits) == 0:
            return None
        best = min(hits, key=lambda i: (catalogue.areas[i], catalogue.located[i]))
        return catalogue.located[best]

    async def match(self, text: str) -> str | None:
        """The code of the territory a typed place names ("col. centro", "sta julia", with a
        small typo or two in a long name), or None when none is close enough or two are
        equally close (two colonias "Centro" in different municipalities)."""
        key = place_key(text)
        if not key:
            return None
        catalogue = await self._current()
        codes = catalogue.by_key.get(key)
        if codes is None:
            allowed = _edits_allowed(len(key))
            if not allowed:
                return None
            found = process.extract(
                key, catalogue.keys, scorer=OSA.distance, score_cutoff=allowed, limit=None
            )
            if not found:
                return None
            nearest = min(distance for _, distance, _ in found)
            codes = frozenset().union(
                *(catalogue.by_key[name] for name, distance, _ in found if distance == nearest)
            )
        return next(iter(codes)) if len(codes) == 1 else None

    async def _current(self) -> _Catalogue:
        if self._catalogue is not None and time.monotonic() - self._checked < self.recheck:
            return self._catalogue
        async with self._lock:
            if self._catalogue is not None and time.monotonic() - self._checked < self.recheck:
                return self._catalogue
            checked = time.monotonic()
            async with self.engine.connect() as conn:
                version = tuple(
                    (await conn.execute(select(func.count(), func.max(Territory.updated_at)))).one()
                )
                if self._catalogue is None or self._catalogue.version != version:
                    rows = (
                        await conn.execute(
                            select(Territory.code, Territory.name, Territory.geometry)
                        )
                    ).all()
                    # Thousands of polygons: built off the event loop.
                    self._catalogue = await asyncio.to_thread(_Catalogue.build, version, rows)
            self._checked = checked
            return self._catalogue


def _info(
    code: str, name: str, parent: str | None, geometry: Any, updated_at: datetime
) -> TerritoryInfo:
    # Read back naive from SQLite, where it is stored as UTC.
    aware = updated_at.replace(tzinfo=UTC) if updated_at.tzinfo is None else updated_at
    return TerritoryInfo(code, name, parent, geometry, aware.astimezone(UTC))


_COLUMNS = (
    Territory.code,
    Territory.name,
    Territory.parent,
    Territory.geometry,
    Territory.updated_at,
)
