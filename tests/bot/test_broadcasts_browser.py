"""The dashboard's Broadcasts view in headless Chromium, as staff see it: each broadcast's
progress, its delivery funnel and why some were not sent, in the page's language, following the
delivery callbacks without a reload; an analyst's Pause answered by the API's refusal, an admin
pausing, resuming and cancelling. No phone number ever reaches the page."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import insert, update

from consulta.bot import broadcasts as bc
from consulta.bot.runtime import Runtime
from consulta.storage.broadcasts import Audience, BroadcastInfo, Recipient
from consulta.storage.models import Consent, Contact
from consulta.storage.staff import Staff
from tests.bot.browser import ARTIFACTS, chromium, served, sqlite_settings
from tests.bot.test_dashboard_browser import sign_in

FLOW = "priorities"
TEXTS = {
    "es": "Mañana hay asamblea vecinal en la plaza a las seis de la tarde, ¡te esperamos!",
    "en": "Neighbourhood assembly tomorrow in the square at six pm, see you there!",
    "fr": "Assemblée de quartier demain sur la place à dix-huit heures, on vous attend !",
}


def address(n: int) -> str:
    return f"+52177300000{n:02d}"


async def residents(rt: Runtime, count: int) -> None:
    """Residents who consented on WhatsApp and wrote to us just now (their window is open)."""
    now = datetime.now(UTC)
    async with rt.store.engine.begin() as conn:
        for n in range(count):
            contact_id = (
                await conn.execute(
                    insert(Contact)
                    .values(
                        pid=f"pid-browser-{n}",
                        channel="whatsapp",
                        address=address(n),
                        language="es",
                        profile={},
                        extra={},
                        last_inbound_at=now,
                    )
                    .returning(Contact.id)
                )
            ).scalar_one()
            await conn.execute(
                insert(Consent).values(contact_id=contact_id, flow_id=FLOW, given=True)
            )


async def sending(rt: Runtime, info: BroadcastInfo, claim: int) -> list[Recipient]:
    """Started, and `claim` of its recipients handed to a sender (the rest still queued)."""
    assert await rt.broadcasts.start_due(datetime.now(UTC)) == [info.id]
    return await rt.broadcasts.claim("test", claim, 60.0)


def broadcast(driver: webdriver.Chrome, broadcast_id: int) -> str:
    """A broadcast's card as a person reads it, on one line."""
    found = driver.find_element(By.CSS_SELECTOR, f'section.broadcast[data-id="{broadcast_id}"]')
    return " ".join(found.text.split())


def problem(driver: webdriver.Chrome, broadcast_id: int) -> str | None:
    """The key of what the page said went wrong with the card's last action, if anything."""
    found = driver.find_element(By.CSS_SELECTOR, f'section.broadcast[data-id="{broadcast_id}"]')
    return found.get_attribute("data-problem")


def open_broadcasts(driver: webdriver.Chrome, url: str, token: str) -> None:
    sign_in(driver, url, token)
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "board").is_displayed())
    driver.find_element(By.ID, "show-broadcasts").click()


def click(driver: webdriver.Chrome, broadcast_id: int, action: str) -> None:
    card = f'section.broadcast[data-id="{broadcast_id}"]'
    driver.find_element(By.CSS_SELECTOR, f'{card} button[data-action="{action}"]').click()


async def until(driver: webdriver.Chrome, check: Callable[[webdriver.Chrome], bool]) -> None:
    """Wait (past a 5-second refresh) for what the page shows; a refresh may redraw a funnel as
    it is being read."""
    wait = WebDriverWait(driver, 12, ignored_exceptions=[StaleElementReferenceException])
    await asyncio.to_thread(wait.until, check)


async def test_an_analyst_watches_a_broadcast_go_out_live(tmp_path: Path) -> None:
    async with served(sqlite_settings(tmp_path)) as (url, runtime):
        await residents(runtime, 4)
        info = await bc.create(
            runtime.broadcasts, runtime.settings, runtime.engine, Audience(), texts=TEXTS
        )
        claimed = await sending(runtime, info, 3)  # the fourth is still queued
        await runtime.broadcasts.sent([(r.id, f"SM{r.id}") for r in claimed[:2]])
        await runtime.broadcasts.skipped([claimed[2].id], "outside window")
        first, second = claimed[0].id, claimed[1].id
        await runtime.broadcasts.record_status("whatsapp", f"SM{first}", "delivered", None)
        token = await Staff(runtime.store).add("Ana Analista", "analyst")
        driver = await asyncio.to_thread(chromium, tmp_path / "chromium")
        try:
            await asyncio.to_thread(open_broadcasts, driver, url, token)
            # In the server's default language, Spanish, until someone picks another.
            await until(driver, lambda d: "Entregados" in broadcast(d, info.id))
            seen = broadcast(driver, info.id)
            assert f"#{info.id} · Mensaje: «Mañana hay asamblea vecinal en la plaza a…»" in seen
            assert "enviando" in seen and "4 destinatarios" in seen
            assert "3 de 4 procesados (75%)" in seen
            assert "quedan ~30 s" in seen  # one left, at the last minute's two sends
            assert "Enviados 2 50%" in seen and "Entregados 1 25%" in seen
            assert "Leídos 0 0%" in seen and "Respondieron 0 0%" in seen
            assert "Completaron" not in seen  # a message, not a survey
            assert "Omitidos: fuera de la ventana de 24 h 1" in seen
            bar = driver.find_element(By.CSS_SELECTOR, ".progress[role=progressbar]")
            assert (bar.get_attribute("aria-valuenow"), bar.get_attribute("aria-valuemax")) == (
                "3",
                "4",
            )
            assert not any(address(n) in driver.page_source for n in range(4))
            await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "broadcasts.png"))

            # Callbacks and a reply arrive while the page is open: it follows, without a reload.
            driver.execute_script("window.stillThisPage = true")
            await runtime.broadcasts.record_status("whatsapp", f"SM{second}", "read", None)
            await runtime.broadcasts.record_status("whatsapp", f"SM{first}", "read", None)
            async with runtime.store.engine.begin() as conn:
                await conn.execute(
                    update(Contact)
                    .where(Contact.address == address(0))
                    .values(last_inbound_at=datetime.now(UTC))
                )
            await until(driver, lambda d: "Leídos 2 50%" in broadcast(d, info.id))
            seen = broadcast(driver, info.id)
            assert "Entregados 2 50%" in seen and "Respondieron 1 25%" in seen
            assert driver.execute_script("return window.stillThisPage") is True

            # The language picked above speaks the view too, and shows the message in it.
            language = Select(driver.find_element(By.ID, "lang"))
            await asyncio.to_thread(language.select_by_value, "en")
            await until(driver, lambda d: "Delivered 2 50%" in broadcast(d, info.id))
            seen = broadcast(driver, info.id)
            assert "Message: «Neighbourhood assembly tomorrow" in seen and "sending" in seen
            assert "Skipped: outside the 24-hour window 1" in seen
            assert driver.find_element(By.ID, "show-broadcasts").text == "Broadcasts"
            await asyncio.to_thread(language.select_by_value, "fr")
            # French figures as French is written: a space before the percent sign.
            await until(driver, lambda d: "Remis 2 50 %" in broadcast(d, info.id))
            seen = broadcast(driver, info.id)
            assert "Ont répondu 1 25 %" in seen and "Non envoyés : hors de la fenêtre" in seen

            # Pausing is for admins: the page says the API refused it (403), in its language.
            await asyncio.to_thread(click, driver, info.id, "pause")
            await until(driver, lambda d: problem(d, info.id) == "forbidden")
            assert "demande un jeton administrateur" in broadcast(driver, info.id)
            assert (await runtime.broadcasts.get(info.id)).status == "sending"
        finally:
            await asyncio.to_thread(driver.quit)


async def test_an_admin_pauses_resumes_and_cancels_a_survey_invitation(tmp_path: Path) -> None:
    async with served(sqlite_settings(tmp_path)) as (url, runtime):
        await residents(runtime, 3)
        info = await bc.create(
            runtime.broadcasts, runtime.settings, runtime.engine, Audience(), flow_id=FLOW
        )
        claimed = await sending(runtime, info, 1)
        await runtime.broadcasts.sent([(claimed[0].id, f"SM{claimed[0].id}")])
        token = await Staff(runtime.store).add("Adela Admin", "admin")
        driver = await asyncio.to_thread(chromium, tmp_path / "chromium")
        try:
            await asyncio.to_thread(open_broadcasts, driver, url, token)
            await until(driver, lambda d: "Enviados 1 33%" in broadcast(d, info.id))
            seen = broadcast(driver, info.id)
            assert f"#{info.id} · Encuesta:" in seen and f"({FLOW})" in seen
            assert "Completaron la encuesta 0 0%" in seen
            assert "Reanudar" not in seen and "Pausar" in seen

            await asyncio.to_thread(click, driver, info.id, "pause")
            await until(driver, lambda d: "en pausa" in broadcast(d, info.id))
            assert (await runtime.broadcasts.get(info.id)).status == "paused"
            assert "Pausar" not in broadcast(driver, info.id)
            await asyncio.to_thread(click, driver, info.id, "resume")
            await until(driver, lambda d: "enviando" in broadcast(d, info.id))

            await asyncio.to_thread(click, driver, info.id, "cancel")
            await asyncio.to_thread(lambda: driver.switch_to.alert.accept())
            await until(driver, lambda d: "cancelada" in broadcast(d, info.id))
            seen = broadcast(driver, info.id)
            assert "Omitidos: difusión cancelada 2" in seen
            assert "3 de 3 procesados (100%)" in seen
            buttons = driver.find_elements(By.CSS_SELECTOR, "section.broadcast .actions button")
            assert not any(b.is_displayed() for b in buttons)
        finally:
            await asyncio.to_thread(driver.quit)
