"""Benchmark: a WhatsApp broadcast sent by two `consulta worker` processes to a Twilio double —
is the cap held in total, is it reached, and does a killed worker lose or repeat anyone?

    python -m benchmarks.broadcasts [--case all|cap|fast|kill] [--keep]

It starts a PostgreSQL cluster and a redis-server of its own (never the shared ones), a Twilio
REST API double in this process (it records each message's arrival time), and for each case a
fresh database and Redis, N residents who consented, with their WhatsApp window open, and two
workers with the case's TWILIO_WHATSAPP_RATE and no quiet hours. It creates a broadcast with
`consulta broadcast create` and waits for the recipients to be settled. Then:

- cap: --cap-rate (50/s) for --cap-recipients (1,500): the rate sent from the first to the last
  arrival against the cap (target: ≥ 95 %), and the most arrivals in any one-second window
  (target: never above the cap, plus the one-message burst GCRA allows at the start);
- fast: --fast-rate (2,000/s) for --fast-recipients (20,000): the rate the workers actually
  reach, to show the send loop is not what limits it;
- kill: --kill-rate (200/s) for --kill-recipients (4,000); one worker is SIGKILLed 5 s in
  and started again 2 s later: duplicates (a resident who received it twice) and lost (a
  recipient not sent, or sent but never received) must both be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from benchmarks.stack import (
    PostgresCluster,
    Processes,
    RedisServer,
    TwilioDouble,
    consulta_env,
    free_port,
)

CASES = ("cap", "fast", "kill")
TEXT = "Consulta: asamblea vecinal el sábado a las 10"
WORKERS = ("worker-1", "worker-2")


@dataclass
class Case:
    name: str
    rate: float
    recipients: int
    kill: bool = False
    kill_after: float = 5.0  # seconds after the broadcast is created


@dataclass
class Outcome:
    lines: list[str]
    received: int  # messages at the double
    duplicates: int  # residents who received it more than once (each extra copy)
    lost: int  # recipients not sent, or sent and never received
    busiest: int  # most arrivals in one second, after the first


async def _residents(url: str, n: int) -> None:
    """N WhatsApp residents who consented and wrote a minute ago (their window is open)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO contacts (pid, channel, address, language, profile, extra, opted_out,
                                  created_at, last_inbound_at)
            SELECT 'b' || g, 'whatsapp', '+5219' || lpad(g::text, 9, '0'), 'es',
                   '{}', '{}', false, now(), now() - interval '1 minute'
            FROM generate_series(1, $1) AS g
            """,
            n,
        )
        await conn.execute(
            """
            INSERT INTO consents (contact_id, flow_id, given, at)
            SELECT id, 'priorities', true, now() FROM contacts
            """
        )
    finally:
        await conn.close()


async def _states(url: str) -> Counter[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM broadcast_recipients GROUP BY 1")
        return Counter({r["state"]: r["n"] for r in rows})
    finally:
        await conn.close()


def _busiest_second(times: list[float]) -> tuple[int, float]:
    """The most arrivals in any window of one second (sliding, to the arrival), and when that
    window starts (seconds after the first arrival)."""
    most, start, at = 0, 0, 0.0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        if end - start + 1 > most:
            most, at = end - start + 1, times[start] - times[0]
    return most, at


async def run_case(case: Case, cluster: PostgresCluster, root: Path) -> Outcome:
    home = root / case.name
    home.mkdir()
    database_url = await asyncio.to_thread(cluster.create_database, f"bc_{case.name}")
    plain_url = cluster.url(f"bc_{case.name}", driver="postgresql")
    redis = RedisServer(home)
    await asyncio.to_thread(redis.start)
    double = TwilioDouble()
    await double.start()
    env = consulta_env(
        database_url=database_url,
        redis_url=redis.url,
        twilio_api=double.url,
        port=free_port(),
        spool_dir=home / "spool",
        media_dir=home / "media",
        extra={
            "TWILIO_WHATSAPP_RATE": str(case.rate),
            "BROADCAST_QUIET_HOURS": "",
            "METRICS_PORT": "0",
        },
    )
    procs = Processes(env, home / "logs")
    try:
        await asyncio.to_thread(procs.run, "db", "upgrade")
        await _residents(plain_url, case.recipients)
        for name in WORKERS:
            procs.start(name, "worker")
        await asyncio.sleep(2)  # their start-up
        created = await asyncio.to_thread(procs.run, "broadcast", "create", "--text-es", TEXT)
        began = time.time()
        killed_at = None
        bound = case.recipients / case.rate * 2 + 60
        while time.time() - began < bound:
            await asyncio.sleep(0.5)
            if case.kill and killed_at is None and time.time() - began >= case.kill_after:
                procs.kill("worker-1")
                killed_at = time.time()
                await asyncio.sleep(2)
                procs.restart("worker-1")
            states = await _states(plain_url)
            if states["queued"] + states["sending"] == 0 and sum(states.values()):
                break
        await asyncio.sleep(1)  # the last requests in flight
        states = await _states(plain_url)
        times = sorted(d.at for d in double.deliveries)
        received = Counter(d.to for d in double.deliveries)
        lines = [created.strip()]
        if len(times) >= 2:
            span = times[-1] - times[0]
            rate = (len(times) - 1) / span if span else float("inf")
            lines.append(
                f"sent {len(times):,} in {span:.1f} s: {rate:,.1f}/s, "
                f"{rate / case.rate:.1%} of the cap ({case.rate:g}/s)"
            )
            most, at = _busiest_second(times)
            settled, _ = _busiest_second([t for t in times if t - times[0] >= 1.0])
            lines.append(
                f"busiest one-second window: {most} messages ({at:.1f} s in); "
                f"after the first second: {settled}"
            )
            gaps = sorted(b - a for a, b in itertools.pairwise(times))
            low, typical = gaps[len(gaps) // 20], gaps[len(gaps) // 2]
            lines.append(
                f"gaps between arrivals: min {gaps[0] * 1000:.1f} ms, p5 {low * 1000:.1f} ms, "
                f"median {typical * 1000:.1f} ms"
            )
        duplicates = sum(n - 1 for n in received.values() if n > 1)
        not_sent = case.recipients - states["sent"]
        never_received = states["sent"] - len(received)
        lines.append(f"recipients by state: {dict(sorted(states.items()))}")
        lines.append(
            f"duplicates: {duplicates}; lost: {max(0, not_sent) + max(0, never_received)} "
            f"(not sent {not_sent}, sent but never received {never_received})"
        )
        if killed_at is not None:
            sent_before = sum(1 for t in times if t < killed_at)
            lines.append(
                f"worker-1 SIGKILLed {killed_at - began:.1f} s in ({sent_before} sent by then), "
                "restarted 2 s later"
            )
        for name in WORKERS:
            errors = [ln for ln in procs.log(name).splitlines() if "ERROR" in ln or "Trace" in ln]
            if errors:
                lines.append(f"{name}: {len(errors)} error lines, first: {errors[0][:160]}")
        lost = max(0, not_sent) + max(0, never_received)
        return Outcome(lines, len(times), duplicates, lost, settled if len(times) >= 2 else 0)
    finally:
        await asyncio.to_thread(procs.stop_all)
        await double.stop()
        redis.stop()


async def main_async(args: argparse.Namespace) -> None:
    cases = {
        "cap": Case("cap", args.cap_rate, args.cap_recipients),
        "fast": Case("fast", args.fast_rate, args.fast_recipients),
        "kill": Case("kill", args.kill_rate, args.kill_recipients, kill=True),
    }
    chosen = CASES if args.case == "all" else (args.case,)
    root = Path(tempfile.mkdtemp(prefix="consulta-broadcasts-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as `postgres` and lives under it
    cluster = PostgresCluster(root)
    print(f"temp dir {root}; PostgreSQL on port {cluster.port}", flush=True)
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        for name in chosen:
            case = cases[name]
            print(f"\n== {name}: {case.recipients:,} recipients at {case.rate:g}/s ==", flush=True)
            for line in (await run_case(case, cluster, root)).lines:
                print(f"  {line}", flush=True)
    finally:
        if args.keep:
            cluster.stop("fast")
        else:
            cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("all", *CASES), default="all")
    parser.add_argument("--cap-rate", type=float, default=50)
    parser.add_argument("--cap-recipients", type=int, default=1500)
    parser.add_argument("--fast-rate", type=float, default=2000)
    parser.add_argument("--fast-recipients", type=int, default=20000)
    parser.add_argument("--kill-rate", type=float, default=200)
    parser.add_argument("--kill-recipients", type=int, default=4000)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (process logs)")
    args = parser.parse_args()
    command = [Path(sys.executable).name, "-m", "benchmarks.broadcasts", *sys.argv[1:]]
    print(" ".join(shlex.quote(a) for a in command), flush=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
