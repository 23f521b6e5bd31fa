"""The live dashboard in headless Chromium, as an analyst sees it: sign in with a staff token,
read the figures with small cells suppressed and answers by their labels, and watch them change
without a reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from consulta.adapters.message import Inbound
from consulta.bot.runtime import Runtime
from consulta.storage.staff import Staff
from tests.bot.browser import ARTIFACTS, chromium, served, sqlite_settings


async def resident(rt: Runtime, n: int, pillar: str) -> None:
    address = f"+52177200000{n:02d}"
    await rt.inbox.handle(Inbound("whatsapp", address, start="prioridades_centro", language="es"))
    for text in ("1", "2", "1", "Centro", "1", pillar):
        await rt.inbox.handle(Inbound("whatsapp", address, text=text))


def sign_in(driver: webdriver.Chrome, url: str, token: str) -> None:
    driver.get(f"{url}/dashboard")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def card(driver: webdriver.Chrome, name: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f'section.card[data-name="{name}"]').text


async def test_an_analyst_watches_participation_live(tmp_path: Path) -> None:
    async with served(sqlite_settings(tmp_path)) as (url, runtime):
        for n in range(6):
            await resident(runtime, n, "1")
        await resident(runtime, 6, "3")
        token = await Staff(runtime.store).add("Ana Analista", "analyst")
        driver = await asyncio.to_thread(chromium, tmp_path / "chromium")
        try:
            await asyncio.to_thread(sign_in, driver, url, token)
            wait = WebDriverWait(driver, 10)
            await asyncio.to_thread(wait.until, lambda d: text_of(d, "started") == "7")
            assert not driver.find_element(By.ID, "login").is_displayed()
            pillar = (await asyncio.to_thread(card, driver, "pillar")).replace("\n", " ")
            # Labels in the default language (Spanish), not the keys the answers are stored as.
            assert "Bienestar social 6" in pillar and "Seguridad y paz ciudadana <5" in pillar
            assert "social_wellbeing" not in pillar and "security" not in pillar
            gender = await asyncio.to_thread(card, driver, "Gender")
            assert "Mujer 7" in gender.replace("\n", " ")
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "dashboard.png"))
            await resident(runtime, 7, "1")  # a new resident takes part: no reload needed
            slow = WebDriverWait(driver, 12)
            await asyncio.to_thread(slow.until, lambda d: text_of(d, "started") == "8")
            language = Select(driver.find_element(By.ID, "lang"))
            await asyncio.to_thread(language.select_by_value, "en")
            # Each refresh redraws the cards: one read may catch the old card as it goes.
            redrawn = WebDriverWait(driver, 10, ignored_exceptions=[StaleElementReferenceException])
            await asyncio.to_thread(
                redrawn.until,
                lambda d: "Social wellbeing 7" in card(d, "pillar").replace("\n", " "),
            )
        finally:
            await asyncio.to_thread(driver.quit)


async def test_a_wrong_token_opens_nothing(tmp_path: Path) -> None:
    async with served(sqlite_settings(tmp_path)) as (url, _):
        driver = await asyncio.to_thread(chromium, tmp_path / "chromium")
        try:
            await asyncio.to_thread(sign_in, driver, url, "not-a-token")
            wait = WebDriverWait(driver, 10)
            await asyncio.to_thread(wait.until, lambda d: "not valid" in text_of(d, "error"))
            assert not driver.find_element(By.ID, "board").is_displayed()
        finally:
            await asyncio.to_thread(driver.quit)
