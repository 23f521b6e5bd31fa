"""Benchmark: export one million answers from PostgreSQL and print rows/s and peak memory,
beside PostgreSQL's own `COPY … TO STDOUT` of the same rows, measured in the same run.

    python -m benchmarks.export [--submissions 100000] [--format csv]

The data (10 answers per submission to the priorities survey) is generated inside PostgreSQL
in a database of its own; the export is written to /dev/null.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time

import asyncpg

from benchmarks.stack import fresh_database
from consulta.bot.export import Export, write_export
from consulta.flows.check import load_library
from consulta.storage.db import connect, migrate_async
from consulta.storage.store import Store

PG_ADMIN = os.environ.get(
    "BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DB_NAME = "consulta_bench_export"

ANSWERS = {  # question → a JSON value, as the engine stores them
    "consent": "true",
    "age_group": '"30_44"',
    "gender": '"woman"',
    "neighbourhood": '"Santa Julia"',
    "sector": '"employed"',
    "pillar": '"public_services"',
    "services_detail": '["water", "waste"]',
    "urgent_problem": '"Falta agua por las mañanas"',
    "satisfaction": "3",
    "problem_location": '{"latitude": 20.1011, "longitude": -98.7591, "label": "Plaza Juárez"}',
}


async def generate(url: str, submissions: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"""
            INSERT INTO contacts (pid, channel, address, profile, extra, opted_out, created_at)
            SELECT 'c' || lpad(g::text, 19, '0'), 'whatsapp', '+52177' || g, '{{}}', '{{}}',
                   false, now()
            FROM generate_series(1, {submissions}) g;
            INSERT INTO submissions (id, contact_id, flow_id, flow_version, status, language,
                                     channel, territory, cursor, started_at, updated_at,
                                     completed_at)
            SELECT lpad(g::text, 32, '0'), g, 'priorities', 1, 'complete', 'es', 'whatsapp',
                   'centro', '{{}}', now() - (g || ' seconds')::interval, now(), now()
            FROM generate_series(1, {submissions}) g;
        """)
        for question, value in ANSWERS.items():
            await conn.execute(
                f"""INSERT INTO answers (submission_id, question, state, raw_text, value,
                                         answered_at)
                    SELECT lpad(g::text, 32, '0'), $1, $1, NULL, $2::json, now()
                    FROM generate_series(1, {submissions}) g""",
                question,
                value,
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


class Null:
    """A binary sink that only counts."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        pass


async def copy_baseline(url: str) -> tuple[float, int]:
    """PostgreSQL's own COPY of the same rows (submissions joined with their answers)."""
    conn = await asyncpg.connect(url)
    sink = Null()

    async def take(chunk: bytes) -> None:
        sink.write(chunk)

    try:
        started = time.perf_counter()
        await conn.copy_from_query(
            """SELECT s.id, c.pid, s.flow_id, s.flow_version, s.status, s.channel, s.language,
                      s.territory, s.started_at, a.question, a.value::text
               FROM submissions s JOIN contacts c ON c.id = s.contact_id
               JOIN answers a ON a.submission_id = s.id
               WHERE s.flow_id = 'priorities' ORDER BY s.started_at, s.id""",
            output=take,
            format="csv",
        )
        return time.perf_counter() - started, sink.bytes
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    raw, url = await fresh_database(PG_ADMIN, DB_NAME)
    await migrate_async(url)
    started = time.perf_counter()
    await generate(raw, args.submissions)
    answers = args.submissions * len(ANSWERS)
    print(
        f"generated {args.submissions:,} submissions, {answers:,} answers "
        f"in {time.perf_counter() - started:.1f} s"
    )

    copy_seconds, copy_bytes = await copy_baseline(raw)

    store = Store(connect(url), "bench")
    export = Export(load_library()["priorities"])
    sink = Null()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    count = await write_export(store, export, args.format, sink)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await store.close()

    print(f"\n{'':34} {'answers/s':>12} {'seconds':>8} {'MB out':>8}")
    print(
        f"{'PostgreSQL COPY (join, csv)':34} {answers / copy_seconds:12,.0f} "
        f"{copy_seconds:8.1f} {copy_bytes / 1e6:8.1f}"
    )
    print(
        f"{'consulta export --format ' + args.format:34} {answers / seconds:12,.0f} "
        f"{seconds:8.1f} {sink.bytes / 1e6:8.1f}"
    )
    print(f"\nsubmissions exported: {count:,} ({count / seconds:,.0f}/s)")
    print(
        f"process peak RSS: {rss_before / 1024:.0f} MB before the export, "
        f"{rss_after / 1024:.0f} MB after it"
    )
    print(f"consulta / COPY time: {seconds / copy_seconds:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=100_000, help="10 answers each")
    parser.add_argument("--format", default="csv", choices=("csv", "jsonl", "geojson", "xlsx"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
