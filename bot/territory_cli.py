"""`consulta territories …`: staff import the catalogue of colonias and municipalities, and list
it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consulta.bot.config import Settings
    from consulta.storage.territories import Feature

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    territories = commands.add_parser("territories", help="the catalogue of territories")
    actions = territories.add_subparsers(
        dest="territories_command", required=True, metavar="ACTION"
    )
    load = actions.add_parser(
        "import",
        help="add or update territories from a file (all or nothing)",
        description=(
            "A GeoJSON FeatureCollection of Polygon/MultiPolygon features with the properties "
            "code, name and optionally parent; or a CSV with the header code,name,parent. A "
            "territory already there (by code) is updated; a CSV keeps the outline it had."
        ),
    )
    load.add_argument("file", type=Path, help="a .geojson/.json or a .csv file")
    load.add_argument(
        "--format", choices=("geojson", "csv"), help="the file's format (default: by its name)"
    )
    actions.add_parser("list", help="code, name and parent of every territory")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.bot.cli import Refusal, open_runtime
    from consulta.storage.territories import Territories, TerritoryError

    features = _read(args.file, args.format) if args.territories_command == "import" else []
    async with open_runtime(settings, migrate=False) as runtime:
        territories = Territories(runtime.store.engine)
        if args.territories_command == "import":
            try:
                imported = await territories.import_features(features)
            except TerritoryError as exc:
                raise Refusal(f"{args.file}: {exc}; nothing was imported") from None
            print(
                f"{imported.added + imported.updated} territories: "
                f"{imported.added} added, {imported.updated} updated"
            )
        else:
            for info in await territories.all():
                print(f"{info.code}\t{info.name}\t{info.parent or ''}")
    return 0


def _read(path: Path, fmt: str | None) -> list[Feature]:
    from consulta.bot.cli import Refusal
    from consulta.storage.territories import TerritoryError, read_csv, read_geojson

    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "geojson")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM: what spreadsheets save CSV with
    except (OSError, UnicodeDecodeError) as exc:
        raise Refusal(f"cannot read {path}: {exc}") from None
    try:
        return read_csv(text) if fmt == "csv" else read_geojson(text)
    except TerritoryError as exc:
        raise Refusal(f"{path}: {exc}; nothing was imported") from None
