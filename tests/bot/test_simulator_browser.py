"""The simulator in headless Chromium, as staff use it: sign in with a staff token, pick a flow
and a language, click the buttons, type answers, share a location, and finish the priorities
survey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from consulta.bot.runtime import Runtime
from consulta.storage.staff import Staff
from tests.bot.browser import ARTIFACTS, chromium, served, sqlite_settings

CLOSING = {
    "es": "¡Gracias! Tu opinión llega al equipo",
    "en": "Thank you! Your views go to the team",
    "fr": "Merci ! Votre avis est transmis",
}
TYPED = {
    "es": "Falta agua en las mañanas",
    "en": "No water in the mornings",
    "fr": "Pas d'eau le matin",
}


@pytest.fixture
async def served_app(tmp_path: Path) -> AsyncIterator[tuple[str, Runtime]]:
    async with served(sqlite_settings(tmp_path)) as app:
        yield app


def _bot_messages(driver: webdriver.Chrome) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages .msg.out")]


def sign_in(driver: webdriver.Chrome, url: str, token: str) -> None:
    driver.get(f"{url}/simulator")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()


def _complete_survey(
    driver: webdriver.Chrome, url: str, token: str, lang: str, shot: Path
) -> list[str]:
    wait = WebDriverWait(driver, 10)
    sign_in(driver, url, token)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "flow")).options) == 2)
    Select(driver.find_element(By.ID, "flow")).select_by_value("priorities")
    Select(driver.find_element(By.ID, "lang")).select_by_value(lang)
    driver.find_element(By.ID, "start").click()
    seen = 0
    for _ in range(20):
        wait.until(lambda d, before=seen: len(_bot_messages(d)) > before)
        messages = _bot_messages(driver)
        seen = len(messages)
        if messages[-1].startswith(CLOSING[lang]):
            break
        buttons = driver.find_elements(By.CSS_SELECTOR, "#messages .buttons button")
        if driver.find_element(By.ID, "location").is_displayed():
            driver.find_element(By.ID, "share-location").click()
        elif buttons:
            buttons[0].click()  # consent "yes" is first; the first choice otherwise
        else:
            box = driver.find_element(By.ID, "text")
            box.send_keys(TYPED[lang])
            driver.find_element(By.ID, "send").click()
    driver.save_screenshot(str(shot))
    assert driver.find_element(By.ID, "error").text == ""
    mine = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages .msg.in")]
    assert all(mine), f"every answer shows in its bubble: {mine}"
    return _bot_messages(driver)


@pytest.mark.parametrize("lang", ["es", "en", "fr"])
async def test_staff_complete_the_priorities_survey_in_the_simulator(
    served_app: tuple[str, Runtime], tmp_path: Path, lang: str
) -> None:
    url, runtime = served_app
    token = await Staff(runtime.store).add("Ana Analista", "analyst")
    ARTIFACTS.mkdir(exist_ok=True)
    driver = await asyncio.to_thread(chromium, tmp_path / "chromium")
    try:
        messages = await asyncio.to_thread(
            _complete_survey, driver, url, token, lang, ARTIFACTS / f"simulator-{lang}.png"
        )
    finally:
        await asyncio.to_thread(driver.quit)
    assert messages[-1].startswith(CLOSING[lang])
    [submission] = await runtime.store.submissions()
    assert submission["status"] == "complete" and submission["language"] == lang
    assert submission["answers"]["problem_location"] == {"latitude": 20.1011, "longitude": -98.7591}
    assert submission["answers"]["urgent_problem"] == TYPED[lang]
    assert submission["answers"]["consent"] is True


async def test_without_a_valid_token_nothing_opens(
    served_app: tuple[str, Runtime], tmp_path: Path
) -> None:
    url, runtime = served_app
    driver = await asyncio.to_thread(chromium, tmp_path / "chromium")
    try:
        await asyncio.to_thread(sign_in, driver, url, "not-a-token")
        wait = WebDriverWait(driver, 10)
        await asyncio.to_thread(
            wait.until, lambda d: "not valid" in d.find_element(By.ID, "error").text
        )
        assert not driver.find_element(By.ID, "simulator").is_displayed()
        assert driver.find_element(By.ID, "login").is_displayed()
    finally:
        await asyncio.to_thread(driver.quit)
    assert await runtime.store.submissions() == []
