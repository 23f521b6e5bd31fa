"""`consulta reports …` and `consulta liaisons …` on SQLite and PostgreSQL: parsed as the command
line parses them and run against a real database; a refusal is a clear message, exit status 1,
and nothing changed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from consulta.bot import report_cli
from consulta.bot.cli import Refusal
from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.storage.liaisons import Liaisons
from consulta.storage.reports import Reports
from tests.storage.test_reports import inserted, made


async def consulta(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run one command as `consulta` would; its output."""
    parser = argparse.ArgumentParser(prog="consulta")
    commands = parser.add_subparsers(dest="command", required=True)
    report_cli.add_parser(commands)
    capsys.readouterr()
    assert await report_cli.run(settings, parser.parse_args(argv)) == 0
    return capsys.readouterr().out


async def refused(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run a command that must be refused; its message."""
    with pytest.raises(Refusal) as caught:
        await consulta(settings, capsys, *argv)
    assert caught.value.code == 1
    return str(caught.value)


async def test_staff_follow_a_report_from_the_command_line(
    runtime: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    folio = await made(runtime, "+5215512345678", "streetlight")
    await inserted(runtime, "AAAA2222", territory="centro", days_ago=3)

    listed = await consulta(settings, capsys, "reports", "list")
    assert (
        f"{folio}\treceived\tstreetlight\t-\t" in listed
        and "AAAA2222\treceived\t-\tcentro\t" in listed
    )
    said = await consulta(
        settings,
        capsys,
        "reports",
        "set",
        folio.lower(),
        "in_progress",
        "--note",
        "Mañana",
        "--by",
        "Ana",
    )
    assert said.splitlines() == [
        f"{folio}: received → in_progress",
        "the reporter will be told (queued for `consulta worker`)",
    ]
    said = await consulta(
        settings, capsys, "reports", "set", "AAAA2222", "duplicate", "--duplicate-of", folio
    )
    assert said.splitlines()[0] == f"AAAA2222: received → duplicate of {folio}"

    shown = await consulta(settings, capsys, "reports", "show", folio)
    assert shown.startswith(f"{folio}\tin_progress\tstreetlight")
    assert "  category: streetlight" in shown and "\tin_progress\tAna — Mañana" in shown
    fresh = await consulta(settings, capsys, "reports", "show", "AAAA2222")
    assert f"\tduplicate of {folio}\t" in fresh

    only = await consulta(settings, capsys, "reports", "list", "--status", "in_progress")
    assert only.splitlines() == [listed.splitlines()[0].replace("received", "in_progress")]
    assert await consulta(settings, capsys, "reports", "list", "--category", "pothole") == ""
    assert "AAAA2222" in await consulta(
        settings, capsys, "reports", "list", "--territory", "centro"
    )
    recent = await consulta(settings, capsys, "reports", "list", "--since", "2000-01-01")
    assert len(recent.splitlines()) == 2

    before = len((await Reports(runtime.store.engine).get(folio)).changes)
    assert await refused(settings, capsys, "reports", "show", "ZZZZ9999") == "no report ZZZZ9999"
    assert "no report ZZZZ9999" in await refused(
        settings, capsys, "reports", "set", "ZZZZ9999", "resolved"
    )
    assert "needs the folio" in await refused(
        settings, capsys, "reports", "set", folio, "duplicate"
    )
    assert "cannot duplicate itself" in await refused(
        settings, capsys, "reports", "set", folio, "duplicate", "--duplicate-of", folio
    )
    assert "unknown category 'potholes'" in await refused(
        settings, capsys, "reports", "list", "--category", "potholes"
    )
    await consulta(settings, capsys, "reports", "set", folio, "resolved")
    assert "reopen it first" in await refused(settings, capsys, "reports", "set", folio, "rejected")
    assert len((await Reports(runtime.store.engine).get(folio)).changes) == before + 1
    with pytest.raises(SystemExit):  # argparse: an unknown status, before anything runs
        await consulta(settings, capsys, "reports", "set", folio, "fixed")


async def test_staff_register_liaisons_from_the_command_line(
    runtime: Runtime, settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    added = await consulta(
        settings,
        capsys,
        "liaisons",
        "add",
        "55 1111 2222",
        "--name",
        "Rosa",
        "--territory",
        "centro",
    )
    assert added.strip() == "added: +525511112222\tany\tRosa\tcentro\t-"
    updated = await consulta(
        settings,
        capsys,
        "liaisons",
        "add",
        "+5215511112222",
        "--name",
        "Rosa",
        "--territory",
        "centro",
        "--lang",
        "es",
    )
    assert updated.startswith("updated: +525511112222")

    sheet = tmp_path / "liaisons.csv"
    sheet.write_text(
        "\ufeffAddress,Name,Territory,Lang\n"
        "+523312345678,Lupe,sur,\n"
        "\n"
        "987654321,Marc,sur,fr\n"
        "525511112222,Rosa,sur,es\n",
        encoding="utf-8",
    )
    said = await consulta(settings, capsys, "liaisons", "import", str(sheet))
    assert said.strip() == "2 added, 1 updated"
    listed = await consulta(settings, capsys, "liaisons", "list", "--territory", "sur")
    assert listed.splitlines() == [
        "+523312345678\tany\tLupe\tsur\t-",
        "987654321\ttelegram\tMarc\tsur\tfr",
        "+525511112222\tany\tRosa\tsur\tes",
    ]

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("address,name,territory,lang\n+525500000001,Ana,norte,es\nabc,B,norte,\n")
    assert "row 2: not a phone number: 'abc'" in await refused(
        settings, capsys, "liaisons", "import", str(wrong)
    )
    headless = tmp_path / "headless.csv"
    headless.write_text("+525500000001,Ana,norte,es\n")
    assert "needs a header" in await refused(settings, capsys, "liaisons", "import", str(headless))
    assert "cannot read" in await refused(
        settings, capsys, "liaisons", "import", str(tmp_path / "missing.csv")
    )
    assert "not a valid phone number" in await refused(
        settings, capsys, "liaisons", "add", "+52 55", "--name", "X", "--territory", "norte"
    )
    assert await Liaisons(runtime.store.engine).all("norte") == []

    assert (await consulta(settings, capsys, "liaisons", "remove", "987654321")).strip() == (
        "removed 987654321"
    )
    assert "no liaison with the address 987654321" in await refused(
        settings, capsys, "liaisons", "remove", "987654321"
    )
    assert len((await consulta(settings, capsys, "liaisons", "list")).splitlines()) == 2
