"""Residents' data rights: everything held is shown; forgetting leaves nothing that points back."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from consulta.adapters.message import Inbound
from consulta.bot.runtime import Runtime
from consulta.storage.data_rights import DataRights
from consulta.storage.media import MediaStore
from consulta.storage.models import Contact, MessageLog, Submission
from consulta.storage.records import ContactInfo

PHONE = "+5217733333333"


async def answered(rt: Runtime) -> None:
    await rt.inbox.handle(
        Inbound("whatsapp", PHONE, start="priorities", language="es", name="Rosa Pérez")
    )
    for text in ("1", "2", "1", "Santa Julia"):  # WhatsApp names the sender in every message
        await rt.inbox.handle(Inbound("whatsapp", PHONE, text=text, name="Rosa Pérez"))
    await rt.inbox.handle(Inbound("sms", PHONE, text="hola"))


async def test_show_everything_held(runtime: Runtime) -> None:
    await answered(runtime)
    rights = DataRights(runtime.store)
    whatsapp, sms = await rights.contacts(PHONE)
    held = await rights.describe(whatsapp)
    assert held["address"] == PHONE and held["name"] == "Rosa Pérez"
    assert held["profile"] == {
        "age_group": "18_29",
        "gender": "woman",
        "neighbourhood": "Santa Julia",
    }
    assert held["consents"][0]["given"] is True and held["consents"][0]["notice_version"]
    assert held["submissions"][0]["answers"]["neighbourhood"] == "Santa Julia"
    assert held["messages"] == {"in": 5, "out": 5}
    assert (await rights.describe(sms))["channel"] == "sms"


async def test_forget_keeps_only_anonymous_answers(runtime: Runtime) -> None:
    await answered(runtime)
    rights = DataRights(runtime.store)
    [contact] = await rights.contacts(PHONE, "whatsapp")
    pseudonym = contact.pid
    await rights.forget(contact, answers=False)
    async with runtime.store.engine.connect() as conn:
        row = (await conn.execute(select(Contact).where(Contact.id == contact.id))).one()
        assert PHONE not in row.address and row.name is None and row.profile == {}
        assert row.pid != pseudonym  # the keyed hash of the phone would point back
        logged = (
            await conn.execute(select(MessageLog.id).where(MessageLog.contact_id == contact.id))
        ).all()
        assert logged == []
    [submission] = await runtime.store.submissions(contact.id)
    assert submission["answers"]["age_group"] == "18_29"  # the answer stays, anonymous
    assert await rights.contacts(PHONE, "whatsapp") == []
    # Writing again from the same phone is a new, unrelated contact.
    await runtime.inbox.handle(Inbound("whatsapp", PHONE, text="hola"))
    [fresh] = await rights.contacts(PHONE, "whatsapp")
    assert fresh.id != contact.id and fresh.profile == {}


async def test_forget_with_answers_removes_everything(runtime: Runtime) -> None:
    await answered(runtime)
    rights = DataRights(runtime.store)
    for contact in await rights.contacts(PHONE):
        await rights.forget(contact, answers=True)
    async with runtime.store.engine.connect() as conn:
        assert (await conn.execute(select(Contact.id))).all() == []
        assert (await conn.execute(select(Submission.id))).all() == []
        assert (await conn.execute(select(MessageLog.id))).all() == []


async def test_forgetting_everything_deletes_their_photos_but_not_a_shared_one(
    runtime: Runtime, tmp_path: Path
) -> None:
    media = MediaStore(tmp_path / "kept")
    own = await media.save(b"their street", "image/jpeg")
    shared = await media.save(b"the same picture twice", "image/jpeg")

    async def reported(address: str, submission: str, photos: list[str]) -> ContactInfo:
        contact_id, _ = await runtime.store.record_inbound("whatsapp", address, None, "", {})
        contact = await runtime.store.contact(contact_id)
        async with runtime.store.changes(contact) as tx:
            tx.start_submission(submission, "report", 1, "es", None, None)
            for n, ref in enumerate(photos):
                tx.save_answer(submission, f"photo{n}", "photo", None, {"media": ref})
        return contact

    resident = await reported(PHONE, "s-resident", [own, shared])
    await reported("+5217700000001", "s-neighbour", [shared])
    await DataRights(runtime.store).forget(resident, answers=True, media=media)
    assert not media.path(own).exists()
    assert media.path(shared).exists()  # the neighbour's answer still shows it


async def test_forgetting_but_keeping_answers_keeps_their_photos(
    runtime: Runtime, tmp_path: Path
) -> None:
    media = MediaStore(tmp_path / "kept")
    ref = await media.save(b"a pothole", "image/jpeg")
    contact_id, _ = await runtime.store.record_inbound("whatsapp", PHONE, None, "", {})
    contact = await runtime.store.contact(contact_id)
    async with runtime.store.changes(contact) as tx:
        tx.start_submission("s1", "report", 1, "es", None, None)
        tx.save_answer("s1", "photo", "photo", None, {"media": ref})
    await DataRights(runtime.store).forget(contact, answers=False, media=media)
    assert media.path(ref).exists()
    [submission] = await runtime.store.submissions()
    assert submission["answers"]["photo"] == {"media": ref}
