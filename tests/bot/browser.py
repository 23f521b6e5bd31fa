"""Headless Chromium for the page tests, and serving a runtime's app on loopback for it."""

from __future__ import annotations

import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.bot.server import build_app

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def chromium(profile: Path) -> webdriver.Chrome:
    """Debian's chromium and chromedriver; a clear failure (never a skip) when missing."""
    for tool in ("chromium", "chromedriver"):
        assert shutil.which(tool), f"{tool} is missing: `make test` installs Debian's packages"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,1400",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def sqlite_settings(folder: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{folder / 'pages.db'}",
        secret_key="browser-test",
        media_dir=str(folder / "media"),
    )


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[str, Runtime]]:
    """The web process on a free loopback port, in this event loop."""
    runtime = await Runtime.create(settings)
    runner = web.AppRunner(build_app(runtime))
    await runner.setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", runtime
    finally:
        await runner.cleanup()
        await runtime.close()
