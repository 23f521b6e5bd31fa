"""The live dashboard in headless Chromium, as an analyst sees it: sign in with a staff token,
read the figures with small cells suppressed and answers by their labels, and watch them change
without a reload; the whole page in one language at a time (Spanish, English or French), the
sign-in screen in the browser's when none was picked. Elements are found by stable keys (data-t,
data-name, data-error), never by their words, so the words can be checked in every language."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from consulta.adapters.message import Inbound
from consulta.bot.runtime import Runtime
from consulta.storage.staff import Staff
from tests.bot.browser import ARTIFACTS, chromium, served, sqlite_settings

# The page's own words, as a planning team reads them (by their data-t keys).
WORDS = {
    "es": {
        "title": "Consulta · Participación en vivo",
        "token": "Token del equipo (consulta staff add …)",
        "open": "Abrir el tablero",
        "participation": "Participación",
        "broadcasts": "Difusiones",
        "language": "Idioma",
        "flow": "Encuesta",
        "started": "iniciaron",
        "completed": "terminaron",
        "rate": "porcentaje que terminó",
        "who": "Quiénes participan",
        "answers": "Respuestas",
    },
    "en": {
        "title": "Consulta · Live participation",
        "token": "Staff token (consulta staff add …)",
        "open": "Open the dashboard",
        "participation": "Participation",
        "broadcasts": "Broadcasts",
        "language": "Language",
        "flow": "Survey",
        "started": "started",
        "completed": "completed",
        "rate": "completion rate",
        "who": "Who is taking part",
        "answers": "Answers",
    },
    "fr": {
        "title": "Consulta · Participation en direct",
        "token": "Jeton de l’équipe (consulta staff add …)",
        "open": "Ouvrir le tableau de bord",
        "participation": "Participation",
        "broadcasts": "Diffusions",
        "language": "Langue",
        "flow": "Enquête",
        "started": "ont commencé",
        "completed": "ont terminé",
        "rate": "taux d’achèvement",
        "who": "Qui participe",
        "answers": "Réponses",
    },
}
# The breakdown cards' headings, by their data-name.
NAMES = {
    "es": {
        "channel": "Canal",
        "language": "Idioma",
        "gender": "Género",
        "age_group": "Grupo de edad",
    },
    "en": {
        "channel": "Channel",
        "language": "Language",
        "gender": "Gender",
        "age_group": "Age group",
    },
    "fr": {
        "channel": "Canal",
        "language": "Langue",
        "gender": "Genre",
        "age_group": "Tranche d’âge",
    },
}
# "updated" and the time, as each language writes it (Mexican 12-hour time, British and French 24).
UPDATED = {
    "es": r"actualizado: \d{1,2}:\d{2}:\d{2}\s[ap]\.\s?m\.",
    "en": r"updated \d{2}:\d{2}:\d{2}",
    "fr": r"mis à jour à \d{2}:\d{2}:\d{2}",
}
INVALID = {
    "es": "Ese token no es válido (o fue revocado).",
    "en": "That token is not valid (or was revoked).",
    "fr": "Ce jeton n’est pas valide (ou a été révoqué).",
}

# Everything the page shows of its own, read in one go (a refresh may redraw cards meanwhile).
READ_PAGE = """
const texts = {}, names = {}, cards = {};
for (const e of document.querySelectorAll("[data-t]")) texts[e.dataset.t] = e.textContent;
for (const c of document.querySelectorAll("#participation section.card")) {
  cards[`${c.parentElement.id}/${c.dataset.name}`] = c.innerText.replace(/\\s+/g, " ");
  if (c.closest("#breakdowns")) names[c.dataset.name] = c.querySelector("h3").textContent;
}
return {lang: document.documentElement.lang, title: document.title,
        placeholder: document.getElementById("token").placeholder,
        updated: document.getElementById("updated").textContent,
        error: document.getElementById("error").textContent,
        texts, names, cards, body: document.body.innerText};
"""


def phrases(lang: str) -> set[str]:
    return {*WORDS[lang].values(), *NAMES[lang].values(), INVALID[lang]}


def wrong_words(page: dict[str, Any], lang: str, *, board: bool) -> list[str]:
    """What the page shows that is not as `lang` says it: its own words, and any phrase of
    another language left over anywhere (the title, the token's placeholder, the visible text)."""
    words = WORDS[lang]
    wrong = [f"html lang={page['lang']!r}"] if page["lang"] != lang else []
    if page["title"] != words["title"]:
        wrong.append(f"document title {page['title']!r}")
    if page["placeholder"] != words["token"]:
        wrong.append(f"token placeholder {page['placeholder']!r}")
    wrong += [
        f"data-t={key}: {page['texts'].get(key)!r}"
        for key, text in words.items()
        if key != "token" and page["texts"].get(key) != text
    ]
    if board:
        wrong += [
            f"card {key}: {page['names'].get(key)!r}"
            for key, name in NAMES[lang].items()
            if page["names"].get(key) != name
        ]
        if not re.fullmatch(UPDATED[lang], page["updated"]):
            wrong.append(f"updated {page['updated']!r}")
    own = [
        page["title"],
        page["placeholder"],
        page["updated"],
        page["body"],
        *page["texts"].values(),
    ]
    for other in WORDS.keys() - {lang}:
        for phrase in sorted(phrases(other) - phrases(lang)):
            if any(phrase in text for text in own):
                wrong.append(f"{other} {phrase!r} on the {lang} page")
    return wrong


async def speaks(
    driver: webdriver.Chrome, lang: str, *, board: bool, cards: dict[str, str] | None = None
) -> None:
    """Wait (past a 5-second refresh) until the page is all in `lang` and each card shows the
    text given (cards by grid and data-name: "answers/pillar", "breakdowns/gender"); then say
    what is still wrong, if anything."""

    def wrong(d: webdriver.Chrome) -> list[str]:
        page = d.execute_script(READ_PAGE)
        missing = [
            f"card {key} has no {text!r}: {page['cards'].get(key)!r}"
            for key, text in (cards or {}).items()
            if text not in page["cards"].get(key, "")
        ]
        return wrong_words(page, lang, board=board) + missing

    try:
        await asyncio.to_thread(WebDriverWait(driver, 12).until, lambda d: not wrong(d))
    except TimeoutException:
        pass
    assert wrong(driver) == []


def browser_speaking(accept_language: str, profile: Path) -> webdriver.Chrome:
    """Chromium whose languages (navigator.languages) are `accept_language`'s."""
    driver = chromium(profile)
    agent = driver.execute_cdp_cmd("Browser.getVersion", {})["userAgent"]
    driver.execute_cdp_cmd(
        "Network.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": accept_language}
    )
    return driver


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


def pick(driver: webdriver.Chrome, lang: str) -> None:
    Select(driver.find_element(By.ID, "lang")).select_by_value(lang)


async def test_an_analyst_watches_participation_live(tmp_path: Path) -> None:
    async with served(sqlite_settings(tmp_path)) as (url, runtime):
        for n in range(6):
            await resident(runtime, n, "1")
        await resident(runtime, 6, "3")
        token = await Staff(runtime.store).add("Ana Analista", "analyst")
        driver = await asyncio.to_thread(browser_speaking, "es-MX,es", tmp_path / "chromium")
        try:
            await asyncio.to_thread(driver.get, f"{url}/dashboard")
            await speaks(driver, "es", board=False)
            await asyncio.to_thread(sign_in, driver, url, token)
            wait = WebDriverWait(driver, 10)
            await asyncio.to_thread(wait.until, lambda d: text_of(d, "started") == "7")
            assert not driver.find_element(By.ID, "login").is_displayed()
            # The server's default language (Spanish) names the answers, not the keys they are
            # stored as; small cells stay "<5"; the page's own words are Spanish too.
            await speaks(
                driver,
                "es",
                board=True,
                cards={
                    "answers/pillar": "Bienestar social 6",
                    "breakdowns/gender": "Género Mujer 7",
                    "breakdowns/language": "Idioma español 7",
                },
            )
            pillar = driver.execute_script(READ_PAGE)["cards"]["answers/pillar"]
            assert "Seguridad y paz ciudadana <5" in pillar
            assert "social_wellbeing" not in pillar and "security" not in pillar
            assert (text_of(driver, "completed"), text_of(driver, "rate")) == ("0", "0%")
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "dashboard.png"))

            await resident(runtime, 7, "1")  # a new resident takes part: no reload needed
            slow = WebDriverWait(driver, 12)
            await asyncio.to_thread(slow.until, lambda d: text_of(d, "started") == "8")

            # Each language picked speaks the whole page, and nothing of the one before is left.
            await asyncio.to_thread(pick, driver, "en")
            await speaks(
                driver,
                "en",
                board=True,
                cards={
                    "answers/pillar": "Social wellbeing 7",
                    "breakdowns/gender": "Gender Woman 8",
                    "breakdowns/language": "Language Spanish 8",
                },
            )
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "dashboard-en.png"))
            await asyncio.to_thread(pick, driver, "fr")
            await speaks(
                driver,
                "fr",
                board=True,
                cards={
                    "answers/pillar": "Bien-être social 7",
                    "breakdowns/gender": "Genre Femme 8",
                    "breakdowns/language": "Langue espagnol 8",
                },
            )
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "dashboard-fr.png"))
            await asyncio.to_thread(pick, driver, "es")
            await speaks(
                driver,
                "es",
                board=True,
                cards={
                    "answers/pillar": "Bienestar social 7",
                    "breakdowns/gender": "Género Mujer 8",
                },
            )
        finally:
            await asyncio.to_thread(driver.quit)


@pytest.mark.parametrize(
    ("browser", "lang"),
    [
        ("fr-FR,fr", "fr"),
        ("en-GB,en", "en"),
        ("de-DE,de", "es"),  # none of ours: the server's default (never learned here: Spanish)
    ],
)
async def test_a_wrong_token_opens_nothing(tmp_path: Path, browser: str, lang: str) -> None:
    async with served(sqlite_settings(tmp_path)) as (url, _):
        driver = await asyncio.to_thread(browser_speaking, browser, tmp_path / "chromium")
        try:
            await asyncio.to_thread(sign_in, driver, url, "not-a-token")
            error = (By.CSS_SELECTOR, '#error[data-error="invalid"]')
            wait = WebDriverWait(driver, 10)
            await asyncio.to_thread(wait.until, lambda d: d.find_elements(*error))
            assert text_of(driver, "error") == INVALID[lang]
            assert not driver.find_element(By.ID, "board").is_displayed()
            await speaks(driver, lang, board=False)
            name = f"dashboard-sign-in-{lang}.png"
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / name))
        finally:
            await asyncio.to_thread(driver.quit)


async def test_the_sign_in_screen_speaks_what_the_page_has_learned(tmp_path: Path) -> None:
    """In a browser speaking none of the page's languages: the server's default, once a sign-in
    has told the page which it is; the language picked, once someone picks one."""
    settings = sqlite_settings(tmp_path).model_copy(update={"default_language": "en"})
    async with served(settings) as (url, runtime):
        token = await Staff(runtime.store).add("Ana Analista", "analyst")
        driver = await asyncio.to_thread(browser_speaking, "de-DE,de", tmp_path / "chromium")

        async def signed_out() -> None:
            driver.execute_script("sessionStorage.removeItem('consulta-token')")
            await asyncio.to_thread(driver.get, f"{url}/dashboard")

        try:
            await asyncio.to_thread(driver.get, f"{url}/dashboard")
            await speaks(driver, "es", board=False)  # nothing learned yet: the shipped default
            await asyncio.to_thread(sign_in, driver, url, token)
            await speaks(
                driver, "en", board=True, cards={"breakdowns/gender": "Gender No answers yet"}
            )
            await signed_out()
            await speaks(driver, "en", board=False)
            await asyncio.to_thread(sign_in, driver, url, token)
            await speaks(driver, "en", board=True)
            await asyncio.to_thread(pick, driver, "fr")
            await speaks(
                driver,
                "fr",
                board=True,
                cards={"breakdowns/gender": "Genre Pas encore de réponses"},
            )
            await signed_out()
            await speaks(driver, "fr", board=False)
        finally:
            await asyncio.to_thread(driver.quit)
