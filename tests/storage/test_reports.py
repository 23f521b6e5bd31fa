"""Reports and liaisons on SQLite and PostgreSQL: a report made through the real report flow,
moved through its statuses (every change kept, refused ones changing nothing), listed by
status, territory, category and date; liaisons registered, imported and recognised on any
channel."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update

from consulta.adapters.message import Inbound, Place
from consulta.bot.config import Settings
from consulta.bot.runtime import Runtime
from consulta.storage.liaisons import LiaisonError, LiaisonIn, Liaisons, canonical_address
from consulta.storage.models import Contact, ReportChange, Submission, utcnow
from consulta.storage.reports import ReportError, Reports, UnknownReport

CATEGORIES = ["water_leak", "no_water", "streetlight", "pothole", "garbage", "insecurity"]


async def made(
    rt: Runtime, address: str, category: str, *, channel: str = "whatsapp", word: str = "reporte"
) -> str:
    """A report made as a resident makes one, through the shipped report flow: its folio."""
    choice = str(CATEGORIES.index(category) + 1)
    await rt.inbox.handle(Inbound(channel, address, text=word))
    for step in (
        Inbound(channel, address, text="1"),  # consent
        Inbound(channel, address, text=choice),
        Inbound(channel, address, place=Place(19.43, -99.13)),
        Inbound(channel, address, text="No hay luz desde el lunes"),
        Inbound(channel, address, text="0"),  # no photo
    ):
        await rt.inbox.handle(step)
    async with rt.store.engine.connect() as conn:
        folio = await conn.scalar(
            select(Submission.folio)
            .join(Contact, Contact.id == Submission.contact_id)
            .where(Contact.address == address, Submission.status == "complete")
            .order_by(Submission.started_at.desc())
            .limit(1)
        )
    assert folio is not None
    return folio


async def inserted(
    rt: Runtime, folio: str, *, territory: str | None = None, days_ago: int = 0
) -> None:
    """A completed report put straight into the database (no answers)."""
    when = utcnow() - timedelta(days=days_ago)
    async with rt.store.engine.begin() as conn:
        contact_id = (
            await conn.execute(
                insert(Contact)
                .values(
                    pid=f"p{folio}",
                    channel="sms",
                    address=f"+5255000{len(folio):02d}{abs(hash(folio)) % 1000:03d}",
                    profile={},
                    extra={},
                    created_at=when,
                )
                .returning(Contact.id)
            )
        ).scalar_one()
        await conn.execute(
            insert(Submission).values(
                id=uuid.uuid4().hex,
                contact_id=contact_id,
                flow_id="report",
                flow_version=1,
                status="complete",
                language="fr",
                channel="sms",
                territory=territory,
                folio=folio,
                cursor={},
                started_at=when,
                updated_at=when,
                completed_at=when,
            )
        )


async def changes(rt: Runtime) -> int:
    async with rt.store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(ReportChange)) or 0)


async def test_a_report_made_in_chat_goes_through_its_life(runtime: Runtime) -> None:
    folio = await made(runtime, "+5215512345678", "streetlight")
    reports = Reports(runtime.store.engine)
    [listed] = await reports.all()
    assert (listed.folio, listed.status, listed.category) == (folio, "received", "streetlight")
    assert listed.changed_at is None and not listed.liaison and listed.contact.startswith("c")

    first = await reports.set_status(folio, "in_review", by="Ana")
    assert (first.previous, first.status, first.note) == ("received", "in_review", None)
    contact = await runtime.store.find_contact("whatsapp", "+5215512345678")
    assert contact is not None
    assert (first.contact_id, first.channel, first.language) == (contact.id, "whatsapp", "es")
    news = await reports.set_status(
        folio.lower(), "in_review", note="La cuadrilla va el lunes", by="Ana"
    )
    assert news.folio == folio and news.note == "La cuadrilla va el lunes"
    await reports.set_status(f"#{folio}", "in_progress", by="Beto")
    done = await reports.set_status(folio, "resolved", note="Lámpara cambiada", by="Beto")
    assert (done.previous, done.status) == ("in_progress", "resolved")

    detail = await reports.get(folio)
    assert detail.report.status == "resolved" and detail.report.changed_at == done.at
    assert [(c.status, c.by, c.note) for c in detail.changes] == [
        ("in_review", "Ana", None),
        ("in_review", "Ana", "La cuadrilla va el lunes"),
        ("in_progress", "Beto", None),
        ("resolved", "Beto", "Lámpara cambiada"),
    ]
    assert detail.changes[0].at.tzinfo is not None
    assert detail.answers["category"] == "streetlight"
    assert detail.answers["location"] == {"latitude": 19.43, "longitude": -99.13}
    assert "consent" not in detail.answers
    assert (await reports.history([folio]))[folio] == detail.changes


async def test_changes_that_are_not_allowed_change_nothing(runtime: Runtime) -> None:
    await inserted(runtime, "AAAA2222")
    await inserted(runtime, "BBBB3333")
    await inserted(runtime, "CCCC4444")
    reports = Reports(runtime.store.engine)
    await reports.set_status("BBBB3333", "duplicate", duplicate_of="AAAA2222", by="Ana")
    await reports.set_status("CCCC4444", "resolved", by="Ana")
    before = await changes(runtime)
    refused = {
        ("ZZZZ9999", "in_review", None, None): "no report ZZZZ9999",
        ("AAAA2222", "fixed", None, None): "unknown status 'fixed'",
        ("AAAA2222", "received", None, None): "cannot be set",
        ("AAAA2222", "duplicate", None, None): "needs the folio",
        ("AAAA2222", "duplicate", None, "aaaa2222"): "cannot duplicate itself",
        ("AAAA2222", "duplicate", None, "ZZZZ9999"): "no report ZZZZ9999",
        ("AAAA2222", "duplicate", None, "BBBB3333"): "use AAAA2222",
        ("AAAA2222", "in_review", None, "CCCC4444"): "only a duplicate",
        ("CCCC4444", "rejected", "no", None): "reopen it first",
        ("CCCC4444", "in_review", None, None): "needs a note",
        ("BBBB3333", "received", "x", None): "cannot be set",
        ("AAAA2222", "in_review", "x" * 1001, None): "at most 1000",
    }
    for (folio, status, note, original), reason in refused.items():
        with pytest.raises(ReportError, match=reason):
            await reports.set_status(folio, status, note=note, duplicate_of=original)
    with pytest.raises(UnknownReport):
        await reports.get("ZZZZ9999")
    await reports.set_status("AAAA2222", "in_review")
    with pytest.raises(ReportError, match="already in_review"):
        await reports.set_status("AAAA2222", "in_review")
    assert await changes(runtime) == before + 1

    reopened = await reports.set_status("CCCC4444", "in_progress", note="Volvió a fallar")
    assert reopened.previous == "resolved" and reopened.language == "fr"
    original = await reports.set_status("BBBB3333", "in_review", note="No era el mismo")
    assert original.duplicate_of is None


async def test_an_unfinished_report_is_not_a_report_yet(runtime: Runtime) -> None:
    await inserted(runtime, "DDDD5555")
    async with runtime.store.engine.begin() as conn:
        await conn.execute(
            update(Submission).where(Submission.folio == "DDDD5555").values(status="partial")
        )
    reports = Reports(runtime.store.engine)
    assert await reports.all() == []
    with pytest.raises(UnknownReport):
        await reports.set_status("DDDD5555", "in_review")


async def test_reports_are_listed_by_status_territory_category_and_date(runtime: Runtime) -> None:
    leak = await made(runtime, "+5215500000001", "water_leak")
    light = await made(runtime, "+5215500000002", "streetlight")
    await inserted(runtime, "EEEE6666", territory="centro", days_ago=10)
    await inserted(runtime, "FFFF7777", territory="norte", days_ago=2)
    reports = Reports(runtime.store.engine)
    await reports.set_status(light, "in_progress", by="Ana")
    await reports.set_status("FFFF7777", "rejected", note="Fuera del municipio", by="Ana")

    async def folios(**filters: object) -> set[str]:
        return {r.folio for r in await reports.all(**filters)}  # type: ignore[arg-type]

    assert await folios() == {leak, light, "EEEE6666", "FFFF7777"}
    assert await folios(status="received") == {leak, "EEEE6666"}
    assert await folios(status="in_progress") == {light}
    assert await folios(status="rejected", territory="norte") == {"FFFF7777"}
    assert await folios(territory="centro") == {"EEEE6666"}
    assert await folios(category="water_leak") == {leak}
    assert await folios(category="pothole") == set()
    assert await folios(since=utcnow() - timedelta(days=5)) == {leak, light, "FFFF7777"}
    newest_first = [r.folio for r in await reports.all()]
    assert newest_first[-1] == "EEEE6666"
    assert [r.folio for r in await reports.all(limit=2, offset=2)] == newest_first[2:]
    with pytest.raises(ReportError, match="unknown status"):
        await reports.all(status="open")


async def test_a_liaisons_reports_are_tagged(runtime: Runtime) -> None:
    mine = await made(runtime, "+5215511112222", "pothole")
    theirs = await made(runtime, "4242", "garbage", channel="telegram", word="report")
    other = await made(runtime, "+5215533334444", "pothole")
    liaisons = Liaisons(runtime.store.engine)
    await liaisons.add(LiaisonIn("55 1111 2222", "Rosa", "centro"))
    await liaisons.add(LiaisonIn("4242", "Juan", "norte", "en"))
    tagged = {r.folio: r.liaison for r in await Reports(runtime.store.engine).all()}
    assert tagged == {mine: True, theirs: True, other: False}


async def test_liaisons_are_registered_and_recognised_on_any_channel(runtime: Runtime) -> None:
    liaisons = Liaisons(runtime.store.engine)
    rosa, created = await liaisons.add(LiaisonIn(" +52 1 55 1111 2222 ", "Rosa", "centro", "ES"))
    assert created and (rosa.address, rosa.channel, rosa.language) == ("+525511112222", None, "es")
    again, created = await liaisons.add(LiaisonIn("5511112222", "Rosa Pérez", "norte"))
    assert not created and (again.id, again.name, again.territory) == (
        rosa.id,
        "Rosa Pérez",
        "norte",
    )
    await liaisons.add(LiaisonIn("-100123", "Grupo Centro", "centro"))
    await liaisons.add(LiaisonIn("+14155552671", "Sam", "centro", "en", channel="sms"))

    found = await liaisons.liaison_for("whatsapp", "+5215511112222")
    assert found is not None and found.name == "Rosa Pérez"
    assert await liaisons.liaison_for("sms", "+525511112222") == found
    telegram = await liaisons.liaison_for("telegram", "-100123")
    assert telegram is not None and telegram.channel == "telegram"
    assert await liaisons.liaison_for("whatsapp", "-100123") is None
    assert await liaisons.liaison_for("sms", "+14155552671") is not None
    assert await liaisons.liaison_for("whatsapp", "+14155552671") is None  # sms only
    assert await liaisons.liaison_for("whatsapp", "+525599999999") is None
    assert await liaisons.liaison_for("whatsapp", "garbage") is None

    assert [x.name for x in await liaisons.all()] == ["Grupo Centro", "Sam", "Rosa Pérez"]
    assert [x.name for x in await liaisons.all("norte")] == ["Rosa Pérez"]
    assert await liaisons.remove("+52 55 1111 2222")
    assert not await liaisons.remove("+525511112222")
    assert not await liaisons.remove("nonsense")
    assert await liaisons.liaison_for("whatsapp", "+5215511112222") is None


async def test_a_file_of_liaisons_is_all_or_nothing(runtime: Runtime) -> None:
    liaisons = Liaisons(runtime.store.engine)
    await liaisons.add(LiaisonIn("+525511112222", "Rosa", "centro"))
    rows = [
        LiaisonIn("525511112222", "Rosa", "sur", "es"),  # a spreadsheet ate the "+"
        LiaisonIn("(33) 1234-5678", "Lupe", "sur", ""),
        LiaisonIn("987654321", "Marc", "sur", "fr"),
    ]
    with pytest.raises(LiaisonError, match=r"row 4: .*'\+5212345'"):
        await liaisons.add_many([*rows, LiaisonIn("+5212345", "Nadie", "sur")])
    with pytest.raises(LiaisonError, match=r"row 3: .*earlier row"):
        await liaisons.add_many([rows[0], rows[1], LiaisonIn("+525511112222", "R", "x")])
    with pytest.raises(LiaisonError, match=r"row 2: .*unknown language"):
        await liaisons.add_many([rows[0], LiaisonIn("+523312345678", "L", "sur", "pt")])
    assert [x.territory for x in await liaisons.all()] == ["centro"]
    assert await liaisons.add_many(rows) == (2, 1)
    assert {(x.address, x.territory) for x in await liaisons.all("sur")} == {
        ("+525511112222", "sur"),
        ("+523312345678", "sur"),
        ("987654321", "sur"),
    }


def test_addresses_are_kept_in_one_form() -> None:
    assert canonical_address("whatsapp:+5215512345678") == ("+525512345678", None)
    assert canonical_address("+52 (55) 1234-5678", "sms") == ("+525512345678", "sms")
    assert canonical_address("123456789") == ("123456789", "telegram")
    assert canonical_address("5512345678") == ("+525512345678", None)
    assert canonical_address("5512345678", "telegram") == ("5512345678", "telegram")
    assert canonical_address("5512345678", "whatsapp") == ("+525512345678", "whatsapp")
    assert canonical_address("0042", "telegram") == ("42", "telegram")
    for wrong, channel in (("", None), ("+52 55", None), ("abc", None), ("+5255", "telegram")):
        with pytest.raises(LiaisonError):
            canonical_address(wrong, channel)
    with pytest.raises(LiaisonError, match="unknown channel"):
        canonical_address("+525512345678", "fax")


async def test_forgetting_a_reporter_forgets_their_reports_changes(runtime: Runtime) -> None:
    folio = await made(runtime, "+5215512345678", "pothole")
    await Reports(runtime.store.engine).set_status(folio, "in_review", note="Visto")
    contact = await runtime.store.find_contact("whatsapp", "+5215512345678")
    assert contact is not None
    await runtime.forget(contact, answers=True)
    assert await changes(runtime) == 0


async def test_two_staff_closing_one_report_at_once(shared_settings: Settings) -> None:
    """PostgreSQL: the second change waits for the first and is checked against it."""
    runtime = await Runtime.create(shared_settings, migrate=False)
    try:
        await inserted(runtime, "GGGG8888")
        reports = Reports(runtime.store.engine)
        results = await asyncio.gather(
            reports.set_status("GGGG8888", "resolved", by="Ana"),
            reports.set_status("GGGG8888", "rejected", note="no", by="Beto"),
            return_exceptions=True,
        )
        assert sum(isinstance(r, ReportError) for r in results) == 1
        assert len((await reports.get("GGGG8888")).changes) == 1
    finally:
        await runtime.close()
