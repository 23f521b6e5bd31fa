"""Benchmark: 10,000 location pins assigned to territories among 5,000 polygons, through
`Territories.locate` (a shapely STRtree), and a sample checked against a brute-force answer.

    python -m benchmarks.territories [--polygons 5000] [--pins 10000] [--check 500]

The polygons are a grid of hexagons around Mexico City's centre (about 400 m across, as
colonias are), one in ten with a hole; the pins fall at random over the grid and a margin
around it, so some fall in no territory. The catalogue is imported into a SQLite database of
its own; the time is that of `locate` alone, after the index is built (its build is shown
apart).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from shapely.geometry import Point, shape

from consulta.storage.db import connect, migrate_async
from consulta.storage.territories import Feature, Territories

CENTRE = (19.4326, -99.1332)  # Zócalo: lat, lon
RADIUS = 0.002  # degrees, centre to corner


def hexagon(lat: float, lon: float, radius: float) -> list[list[float]]:
    ring = [
        [lon + radius * math.cos(math.pi / 3 * k), lat + radius * math.sin(math.pi / 3 * k)]
        for k in range(6)
    ]
    return [*ring, ring[0]]


def grid(count: int) -> list[Feature]:
    """`count` hexagons tiling a rectangle around the centre, flat side up."""
    columns = math.ceil(math.sqrt(count * 2))
    step_x, step_y = 1.5 * RADIUS, math.sqrt(3) * RADIUS
    lat0 = CENTRE[0] - step_y * count / columns / 2
    lon0 = CENTRE[1] - step_x * columns / 2
    features = []
    for i in range(count):
        row, column = divmod(i, columns)
        lat = lat0 + row * step_y + (step_y / 2 if column % 2 else 0)
        lon = lon0 + column * step_x
        rings = [hexagon(lat, lon, RADIUS)]
        if i % 10 == 0:  # a park or a unit of no colonia inside it
            rings.append(hexagon(lat, lon, RADIUS / 3)[::-1])
        features.append(
            Feature(
                code=f"t{i:05d}",
                name=f"Colonia {i}",
                parent="cdmx",
                geometry={"type": "Polygon", "coordinates": rings},
            )
        )
    return features


def brute_force(features: list[Feature], lat: float, lon: float) -> set[str]:
    """Every territory the pin is in or on the border of: what `locate` may answer."""
    point = Point(lon, lat)
    return {f.code for f in features if shape(f.geometry).intersects(point)}


async def main(polygons: int, pins: int, check: int) -> None:
    features = grid(polygons)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'territories.db'}"
        await migrate_async(url)
        engine = connect(url)
        try:
            territories = Territories(engine, recheck=math.inf)
            started = time.perf_counter()
            await territories.import_features(features)
            print(f"imported {polygons} polygons in {time.perf_counter() - started:.2f} s")

            lons = [x for f in features for x, _ in _exterior(f)]
            lats = [y for f in features for _, y in _exterior(f)]
            margin = 5 * RADIUS
            rng = random.Random(12)
            points = [
                (
                    rng.uniform(min(lats) - margin, max(lats) + margin),
                    rng.uniform(min(lons) - margin, max(lons) + margin),
                )
                for _ in range(pins)
            ]

            started = time.perf_counter()
            await territories.locate(*points[0])  # builds the index
            print(f"index built in {time.perf_counter() - started:.3f} s")
            started = time.perf_counter()
            found = [await territories.locate(lat, lon) for lat, lon in points]
            elapsed = time.perf_counter() - started
        finally:
            await engine.dispose()

    located = sum(code is not None for code in found)
    print(
        f"located {pins} pins among {polygons} polygons in {elapsed * 1000:.0f} ms: "
        f"{pins / elapsed:,.0f} pins/s ({located} in a territory, {pins - located} in none)"
    )
    wrong = 0
    for i in rng.sample(range(pins), min(check, pins)):
        expected = brute_force(features, *points[i])
        if (found[i] is None and expected) or (found[i] is not None and found[i] not in expected):
            wrong += 1
            print(f"  pin {points[i]}: locate says {found[i]}, brute force {sorted(expected)}")
    print(f"checked {min(check, pins)} pins against brute force: {wrong} wrong")
    if wrong:
        raise SystemExit(1)


def _exterior(f: Feature) -> Any:
    assert f.geometry is not None
    return f.geometry["coordinates"][0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polygons", type=int, default=5000)
    parser.add_argument("--pins", type=int, default=10000)
    parser.add_argument("--check", type=int, default=500, help="pins checked by brute force")
    options = parser.parse_args()
    asyncio.run(main(options.polygons, options.pins, options.check))
