"""Benchmark: a broadcast to 100,000 residents on PostgreSQL — `create` (which counts the
audience) and `start_due` (which materialises one recipient row each, in one INSERT … SELECT)
— and then the first `claim` a sender makes from that many queued recipients.

    python -m benchmarks.broadcast_materialise [--residents 100000]

The residents (all consenting, on WhatsApp, SMS and Telegram, some in their WhatsApp window)
and as many again who are not in the audience (opted out, never consented, forgotten) are
generated inside PostgreSQL, in a database of its own that the run drops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg

from benchmarks.stack import drop_database, fresh_database
from consulta.storage.broadcasts import Audience, Broadcasts
from consulta.storage.db import connect, migrate_async
from consulta.storage.models import utcnow

PG_ADMIN = os.environ.get(
    "BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DB_NAME = "consulta_bench_broadcasts"


async def generate(url: str, residents: int) -> None:
    """`residents` who are in the audience, and as many who are not (a third each opted out,
    forgotten, or said no to the notice), with a consent or a refusal and a submission each."""
    everyone = 2 * residents
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"""
            INSERT INTO contacts (pid, channel, address, language, profile, extra, opted_out,
                                  created_at, last_inbound_at)
            SELECT 'c' || lpad(g::text, 19, '0'),
                   (ARRAY['whatsapp', 'whatsapp', 'whatsapp', 'sms', 'telegram'])[g % 5 + 1],
                   CASE WHEN g > {residents} AND g % 3 = 1 THEN 'forgotten:' || g
                        ELSE '+52177' || g END,
                   (ARRAY['es', 'en', 'fr', NULL])[g % 4 + 1],
                   json_build_object('gender', (ARRAY['woman', 'man'])[g % 2 + 1],
                                     'age_group', (ARRAY['18_29', '30_44', '45_59'])[g % 3 + 1]),
                   '{{}}', g > {residents} AND g % 3 = 0, now(),
                   now() - (g % 2880 || ' minutes')::interval
            FROM generate_series(1, {everyone}) g;
            INSERT INTO consents (contact_id, flow_id, given, notice_version, at)
            SELECT g, 'priorities', g <= {residents} OR g % 3 <> 2, 'v1', now()
            FROM generate_series(1, {everyone}) g;
            INSERT INTO submissions (id, contact_id, flow_id, flow_version, status, language,
                                     channel, territory, cursor, started_at, updated_at)
            SELECT lpad(g::text, 32, '0'), g, 'priorities', 1,
                   (ARRAY['complete', 'partial'])[g % 2 + 1], 'es', 'whatsapp',
                   (ARRAY['centro', 'norte', 'sur'])[g % 3 + 1], '{{}}', now(), now()
            FROM generate_series(1, {everyone}) g;
        """)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    raw, url = await fresh_database(PG_ADMIN, DB_NAME)
    try:
        await migrate_async(url)
        started = time.perf_counter()
        await generate(raw, args.residents)
        print(
            f"generated {2 * args.residents:,} contacts ({args.residents:,} in the audience) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        engine = connect(url)
        broadcasts = Broadcasts(engine)
        try:
            await measure(broadcasts, args.residents)
        finally:
            await engine.dispose()
    finally:
        await drop_database(PG_ADMIN, DB_NAME)


async def measure(broadcasts: Broadcasts, residents: int) -> None:
    started = time.perf_counter()
    info = await broadcasts.create(
        kind="flow",
        flow_id="priorities",
        texts={},
        audience=Audience(),
        template="invitation",
        send_at=utcnow(),
        created_by="benchmark",
    )
    create_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ids = await broadcasts.start_due(utcnow())
    start_seconds = time.perf_counter() - started
    materialised = (await broadcasts.get(info.id)).recipients
    started = time.perf_counter()
    batch = await broadcasts.claim("benchmark", 100, 60)
    claim_seconds = time.perf_counter() - started
    queued = (await broadcasts.progress(info.id, utcnow())).by_state["queued"]

    total = create_seconds + start_seconds
    print(f"\n{'':38} {'seconds':>8} {'rows/s':>12}")
    print(f"{'create (counts the audience)':38} {create_seconds:8.3f} {'':>12}")
    print(
        f"{'start_due (materialises recipients)':38} {start_seconds:8.3f} "
        f"{materialised / start_seconds:12,.0f}"
    )
    print(f"{'create + start_due':38} {total:8.3f} {materialised / total:12,.0f}")
    print(f"{'first claim of 100 (of all queued)':38} {claim_seconds:8.3f}")
    print(f"\naudience counted {info.recipients:,}, materialised {materialised:,}")
    assert ids == [info.id], ids
    assert info.recipients == materialised == residents, (info.recipients, materialised)
    assert len(batch) == 100 and queued == residents - 100, (len(batch), queued)
    print("check: every resident in the audience once, nobody else")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residents", type=int, default=100_000, help="in the audience")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
