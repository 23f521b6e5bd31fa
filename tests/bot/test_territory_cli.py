"""`consulta territories import|list` on both backends: the command's own parser and `run`, on a
database a runtime migrated, as `consulta` runs them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from consulta.bot import territory_cli
from consulta.bot.cli import Refusal
from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.storage.territories import Territories
from tests.storage.test_territories import CENTRO, CITY, NAMES_CSV, collection, feature


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="consulta")
    commands = parser.add_subparsers(dest="command", required=True)
    territory_cli.add_parser(commands)
    return parser.parse_args(["territories", *argv])


async def consulta(settings: Settings, *argv: str) -> int:
    return await territory_cli.run(settings, parse(*argv))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "colonias.geojson").write_text(CITY, encoding="utf-8")
    (tmp_path / "names.csv").write_text("\ufeff" + NAMES_CSV, encoding="utf-8")  # as Excel saves
    return tmp_path


async def test_import_then_list(
    runtime: Runtime, settings: Settings, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await consulta(settings, "import", str(files / "colonias.geojson")) == 0
    assert capsys.readouterr().out == "4 territories: 4 added, 0 updated\n"
    assert await consulta(settings, "import", str(files / "names.csv")) == 0
    assert capsys.readouterr().out == "3 territories: 3 added, 0 updated\n"
    assert await consulta(settings, "import", str(files / "colonias.geojson")) == 0
    assert capsys.readouterr().out == "4 territories: 0 added, 4 updated\n"

    assert await consulta(settings, "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "centro\tCentro\tcuauhtemoc",
        "cuauhtemoc\tCuauhtémoc\t",
        "doctores\tDoctores\tcuauhtemoc",
        "iztapalapa\tIztapalapa\t",
        "san-angel\tSan Ángel\talvaro-obregon",
        "santa-julia\tSanta Julia\t",
        "vicente-guerrero\tUnidad Habitacional Vicente Guerrero\tiztapalapa",
    ]
    assert await Territories(runtime.store.engine).locate(19.435, -99.135) == "centro"


async def test_format_option_overrides_the_name(
    runtime: Runtime, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "export.txt").write_text(NAMES_CSV, encoding="utf-8")
    assert await consulta(settings, "import", str(tmp_path / "export.txt"), "--format", "csv") == 0
    assert capsys.readouterr().out == "3 territories: 3 added, 0 updated\n"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.geojson", "<kml/>", "bad.geojson: not JSON: Expecting value (line 1, column 1)"),
        (
            "bad.geojson",
            collection(feature("a", "A", CENTRO), feature(None, "B", CENTRO)),
            "bad.geojson: features[1]: no code; nothing was imported",
        ),
        ("bad.csv", "code,name\nok,Ok\n,Nameless\n", "bad.csv: line 3: no code"),
    ],
)
async def test_bad_files_are_refused_whole(
    runtime: Runtime, settings: Settings, tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(Refusal) as refused:
        await consulta(settings, "import", str(tmp_path / name))
    assert message in str(refused.value)
    assert "nothing was imported" in str(refused.value)
    assert await Territories(runtime.store.engine).all() == []


async def test_a_missing_file_is_refused(runtime: Runtime, settings: Settings) -> None:
    with pytest.raises(Refusal, match=r"cannot read /nowhere/colonias\.geojson"):
        await consulta(settings, "import", "/nowhere/colonias.geojson")


def test_an_action_is_required() -> None:
    with pytest.raises(SystemExit):
        parse()
