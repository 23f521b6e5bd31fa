"""Installed as users install it: the wheel holds one import package, `consulta`, with its data
files, and a survey runs from it in a folder far from the checkout."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("consulta-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throw-away virtualenv with the wheel installed (not editable). Its dependencies come
    from this one's site-packages through a .pth line — which does not run the checkout's
    editable finder, so nothing of the checkout is importable there."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield venv


def test_the_wheel_installs_only_consulta_with_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info" not in n.split("/")[0]}
    assert tops == {"consulta"}
    for data in (
        "consulta/locales/consulta.pot",
        "consulta/locales/es/LC_MESSAGES/consulta.po",
        "consulta/locales/en/LC_MESSAGES/consulta.po",
        "consulta/locales/fr/LC_MESSAGES/consulta.po",
        "consulta/flows/definitions/priorities.yaml",
        "consulta/flows/definitions/report.yaml",
        "consulta/flows/schema.json",
        "consulta/bot/pages/simulator.html",
        "consulta/bot/pages/dashboard.html",
        "consulta/bot/openapi.yaml",
        "consulta/storage/migrations/script.py.mako",
        "consulta/storage/migrations/env.py",
        "consulta/py.typed",
    ):
        assert data in names, data
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_a_survey_runs_from_the_installed_package_far_from_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    bin_ = installed / "bin"
    chat = subprocess.run(
        [bin_ / "consulta", "chat", "--lang", "es"],
        input="1\n",  # yes to the consent question
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=120,
    )
    assert chat.returncode == 0, chat.stderr
    assert "¿Aceptas participar?" in chat.stdout and "¿Cuál es tu edad?" in chat.stdout
    assert (elsewhere / "consulta.db").exists()  # the embedded default, where it was run
    module = subprocess.run(
        [bin_ / "python", "-m", "consulta", "flows", "check"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=60,
    )
    assert module.returncode == 0 and "2 flows OK" in module.stdout, module.stderr
    for generic in ("bot", "flows", "adapters", "storage", "locales"):
        found = subprocess.run(
            [bin_ / "python", "-c", f"import {generic}"],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            env=env,
        )
        assert found.returncode != 0 and "ModuleNotFoundError" in found.stderr, generic
