"""Answers place a submission in a territory of the catalogue: a report's pin by the outline it
falls in, a typed place or neighbourhood by its name; a deep link's territory is kept."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from consulta.adapters.message import Inbound, Place
from consulta.bot.runtime import Runtime
from consulta.storage.models import Submission
from consulta.storage.territories import Feature

CENTRO = [[-98.76, 20.10], [-98.74, 20.10], [-98.74, 20.12], [-98.76, 20.12], [-98.76, 20.10]]
JULIA = [[-98.72, 20.10], [-98.70, 20.10], [-98.70, 20.12], [-98.72, 20.12], [-98.72, 20.10]]


async def catalogue(runtime: Runtime) -> None:
    await runtime.territories.import_features(
        [
            Feature("centro", "Centro", geometry={"type": "Polygon", "coordinates": [CENTRO]}),
            Feature(
                "santa-julia", "Santa Julia", geometry={"type": "Polygon", "coordinates": [JULIA]}
            ),
        ]
    )


async def territories(runtime: Runtime, flow: str) -> list[Any]:
    async with runtime.store.engine.connect() as conn:
        rows = await conn.execute(
            select(Submission.territory)
            .where(Submission.flow_id == flow)
            .order_by(Submission.started_at)
        )
        return list(rows.scalars())


async def report(runtime: Runtime, who: str, place: Inbound) -> None:
    await runtime.inbox.handle(Inbound("whatsapp", who, start="report", language="es"))
    for text in ("sí", "1"):
        await runtime.inbox.handle(Inbound("whatsapp", who, text=text))
    await runtime.inbox.handle(place)
    await runtime.inbox.handle(Inbound("whatsapp", who, text="Lámpara fundida frente al 12"))
    await runtime.inbox.handle(Inbound("whatsapp", who, text="saltar"))  # no photo: filed


async def test_a_pin_places_a_report_in_the_territory_it_falls_in(runtime: Runtime) -> None:
    await catalogue(runtime)
    pin = Place(20.11, -98.71)  # inside Santa Julia
    await report(runtime, "+5217700000001", Inbound("whatsapp", "+5217700000001", place=pin))
    outside = Place(19.0, -99.0)
    await report(runtime, "+5217700000002", Inbound("whatsapp", "+5217700000002", place=outside))
    typed = Inbound("whatsapp", "+5217700000003", text="colonia Centro")
    await report(runtime, "+5217700000003", typed)
    assert await territories(runtime, "report") == ["santa-julia", None, "centro"]


async def test_a_typed_neighbourhood_places_a_survey_and_a_deep_link_wins(runtime: Runtime) -> None:
    await catalogue(runtime)
    who = "+5217700000004"
    await runtime.inbox.handle(Inbound("whatsapp", who, start="prioridades", language="es"))
    for text in ("1", "2", "1", "Sta. Julia"):  # consent, age, gender, neighbourhood
        await runtime.inbox.handle(Inbound("whatsapp", who, text=text))
    linked = "+5217700000005"
    await runtime.inbox.handle(
        Inbound("whatsapp", linked, start="prioridades_centro", language="es")
    )
    for text in ("1", "2", "1", "Santa Julia"):
        await runtime.inbox.handle(Inbound("whatsapp", linked, text=text))
    assert await territories(runtime, "priorities") == ["santa-julia", "centro"]


async def test_a_link_to_a_territory_the_catalogue_lacks_is_ignored(
    runtime: Runtime, caplog: Any
) -> None:
    await catalogue(runtime)
    who = "+5217700000006"
    with caplog.at_level("INFO"):
        await runtime.inbox.handle(
            Inbound("whatsapp", who, start="prioridades_atlantida", language="es")
        )
    assert await territories(runtime, "priorities") == [None]
    assert "'atlantida', which the catalogue lacks" in caplog.text
    assert who not in caplog.text


async def test_a_liaisons_report_defaults_to_their_territory(runtime: Runtime) -> None:
    from consulta.storage.liaisons import LiaisonIn, Liaisons

    await catalogue(runtime)
    liaison = "+5217700000007"
    await Liaisons(runtime.store.engine).add(LiaisonIn(liaison, "Rosa", "santa-julia"))
    typed = Inbound("whatsapp", liaison, text="frente a la tienda de don Chucho")
    await report(runtime, liaison, typed)  # a place the catalogue cannot tell
    pinned = Place(20.11, -98.75)  # inside Centro: the pin wins over their territory
    await report(runtime, liaison, Inbound("whatsapp", liaison, place=pinned))
    await report(runtime, "+5217700000008", Inbound("whatsapp", "+5217700000008", text="x"))
    assert await territories(runtime, "report") == ["santa-julia", "centro", None]
