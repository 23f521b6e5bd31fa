"""Benchmark: signed WhatsApp webhooks from residents in mid-survey against one web process on
PostgreSQL + Redis, at full speed and at a fixed rate, beside a bare aiohttp handler that only
checks the signature — measured in the same run, so the ratio holds on a noisy machine.

    python -m benchmarks.twilio_webhooks [--residents 200] [--seconds 15] [--rate 500] [--only-rate]

Prints messages/s answered (webhooks acknowledged), handled/s (replies queued, first webhook to
last reply), p50/p99 latency from the webhook's arrival to its reply being queued, and the
CPU use of the server, PostgreSQL and Redis (100% = one core).
Everything runs on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from twilio.request_validator import RequestValidator

SID, TOKEN = "AC" + "b" * 32, "bench-token"
PUBLIC = "https://consulta.example.org"
WA_FROM = "whatsapp:+5213300000000"
PG_ADMIN = os.environ.get(
    "BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
DB_NAME = "consulta_bench"
DONE = "consulta:bench:done"  # hash MessageSid → time the reply was queued


# --- the two servers (each in a process of its own) --------------------------------------


async def serve_consulta(port: int) -> None:
    """`consulta serve`, with one hook: note in Redis when each message's reply is queued."""
    from aiohttp import web

    from consulta.bot.config import Settings, TwilioSettings
    from consulta.bot.runtime import Runtime
    from consulta.bot.server import build_app

    db_url = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
    settings = Settings(
        port=port,
        database_url=f"{db_url}/{DB_NAME}",
        redis_url=REDIS_URL,
        public_url=PUBLIC,
        secret_key="bench",
        twilio=TwilioSettings(account_sid=SID, auth_token=TOKEN, whatsapp_from=WA_FROM),
    )
    runtime = await Runtime.create(settings, migrate=False)
    stamps = aioredis.from_url(REDIS_URL)
    handle = runtime.inbox._handle
    done: dict[str, float] = {}  # noted here, sent to Redis in bulk: measuring costs little

    async def timed(held: Any, view: Any, message_id: int, inbound: Any) -> bool:
        more = await handle(held, view, message_id, inbound)
        done[inbound.provider_id] = time.time()
        return more

    async def report() -> None:
        while True:
            await asyncio.sleep(0.05)
            if done:
                batch = dict(done)
                done.clear()
                await stamps.hset(DONE, mapping=batch)

    reporting = asyncio.create_task(report())
    runtime.inbox._handle = timed  # type: ignore[method-assign]
    runner = web.AppRunner(build_app(runtime), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until the benchmark terminates this process
    reporting.cancel()


async def serve_bare(port: int) -> None:
    """The floor: an aiohttp handler that parses the form and checks the signature, no more."""
    from aiohttp import web

    validator = RequestValidator(TOKEN)

    async def handler(request: web.Request) -> web.Response:
        params = dict(await request.post())
        if not validator.validate(
            PUBLIC + request.path_qs, params, request.headers.get("X-Twilio-Signature", "")
        ):
            raise web.HTTPForbidden()
        return web.Response(text="<Response/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/webhooks/twilio", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --- the load ----------------------------------------------------------------------------


def _form(resident: int, body: str) -> dict[str, str]:
    number = f"+52177{resident:08d}"
    return {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": SID,
        "From": f"whatsapp:{number}",
        "To": WA_FROM,
        "Body": body,
        "NumMedia": "0",
        "ProfileName": "Vecina",
        "WaId": number[1:],
    }


class Load:
    def __init__(self, url: str) -> None:
        self.url = url + "/webhooks/twilio"
        self.validator = RequestValidator(TOKEN)
        self.sent: dict[str, float] = {}
        self.answered: list[float] = []  # webhook → HTTP 200
        self.errors = 0

    async def post(self, session: aiohttp.ClientSession, form: dict[str, str]) -> None:
        signature = self.validator.compute_signature(PUBLIC + "/webhooks/twilio", form)
        started = time.time()
        self.sent[form["MessageSid"]] = started
        try:
            async with session.post(
                self.url, data=form, headers={"X-Twilio-Signature": signature}
            ) as response:
                await response.read()
                if response.status != 200:
                    self.errors += 1
        except aiohttp.ClientError:
            self.errors += 1
        self.answered.append(time.time() - started)


# The priorities survey, then round again: a restart skips the profile questions (known).
FIRST_PASS = ["1", "2", "1", "Centro", "1", "3", "1 2", "Faltan luminarias", "2", "Calle Hidalgo"]
AGAIN = ["reiniciar", "1", "3", "1 2", "Faltan luminarias", "2", "Calle Hidalgo"]


def answer(step: int) -> str:
    if step < len(FIRST_PASS):
        return FIRST_PASS[step]
    return AGAIN[(step - len(FIRST_PASS)) % len(AGAIN)]


async def full_speed(load: Load, residents: int, seconds: float, limit: int) -> float:
    """Each resident answers as soon as the previous webhook was answered. Returns msg/s."""
    deadline = time.monotonic() + seconds
    count = 0
    connector = aiohttp.TCPConnector(limit=residents)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def resident(n: int) -> None:
            nonlocal count
            step = 0
            while time.monotonic() < deadline and count < limit:
                count += 1
                await load.post(session, _form(n, answer(step)))
                step += 1

        started = time.monotonic()
        await asyncio.gather(*(resident(n) for n in range(residents)))
        return count / (time.monotonic() - started)


async def fixed_rate(load: Load, residents: int, seconds: float, rate: float) -> float:
    """Open loop: `rate` messages a second spread over the residents. Returns msg/s achieved."""
    total = int(rate * seconds)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        started = time.monotonic()
        for i in range(total):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            resident = residents + i % residents  # other residents than the full-speed run
            step = i // residents
            tasks.append(asyncio.create_task(load.post(session, _form(resident, answer(step)))))
        await asyncio.gather(*tasks)
        return total / (time.monotonic() - started)


async def seed(url: str, residents: int) -> None:
    """Put every resident in mid-survey: greeted and consented."""
    load = Load(url)
    async with aiohttp.ClientSession() as session:
        for batch in range(0, 2 * residents, 100):
            await asyncio.gather(
                *(
                    load.post(session, _form(n, "hola"))
                    for n in range(batch, min(batch + 100, 2 * residents))
                )
            )
    await asyncio.sleep(1)


async def queued_latencies(load: Load, wait: float = 60) -> tuple[list[float], float]:
    """Webhook → reply queued, per message; and replies queued per second, start to last."""
    client = aioredis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if await client.hlen(DONE) >= len(load.sent):
                break
            await asyncio.sleep(0.2)
        done = {k.decode(): float(v) for k, v in (await client.hgetall(DONE)).items()}
        await client.delete(DONE)
    finally:
        await client.aclose()
    latencies = [done[sid] - at for sid, at in load.sent.items() if sid in done]
    finished = [done[sid] for sid in load.sent if sid in done]
    span = max(finished, default=0) - min(load.sent.values(), default=0)
    return latencies, len(finished) / span if span > 0 else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu() -> dict[str, float]:
    """CPU seconds used so far by this machine's PostgreSQL and Redis processes."""
    used = {"postgres": 0.0, "redis-server": 0.0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if name in used:
            used[name] += cpu_seconds(int(pid))
    return used


class Meter:
    """CPU use of the server, PostgreSQL and Redis over one phase (100% = one core)."""

    def __init__(self, server: int) -> None:
        self.server = server
        self.started = time.monotonic()
        self.before = {"server": cpu_seconds(server), **service_cpu()}

    def read(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        after = {"server": cpu_seconds(self.server), **service_cpu()}
        return {
            f"{name} cpu %": 100 * max(0.0, after[name] - self.before[name]) / elapsed
            for name in after
        }


async def figures(load: Load, meter: Meter, rate: float) -> dict[str, Any]:
    """One Consulta phase's figures, once every reply it caused is queued."""
    queued, handled = await queued_latencies(load)
    return {
        "msg/s": rate,
        "handled/s": handled,
        **meter.read(),
        "p50 ms": pct(queued, 50),
        "p99 ms": pct(queued, 99),
        "http p99 ms": pct(load.answered, 99),
        "errors": load.errors,
        "replies queued": f"{len(queued)}/{len(load.sent)}",
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


# --- orchestration -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(kind: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.twilio_webhooks", f"--serve-{kind}", str(port)]
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {kind} server did not start")


async def fresh_database() -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        await conn.close()
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from consulta.storage.db import migrate_async

    await fresh_database()
    db_url = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
    await migrate_async(f"{db_url}/{DB_NAME}")
    results: dict[str, Any] = {}

    if not args.only_rate:
        bare_port = free_port()
        bare = start("bare", bare_port)
        try:
            load = Load(f"http://127.0.0.1:{bare_port}")
            rate = await full_speed(load, args.residents, args.seconds, args.limit)
            results["bare full speed"] = {
                "msg/s": rate,
                "p50 ms": pct(load.answered, 50),
                "p99 ms": pct(load.answered, 99),
                "errors": load.errors,
            }
        finally:
            bare.terminate()
            bare.wait()

    port = free_port()
    server = start("consulta", port)
    try:
        url = f"http://127.0.0.1:{port}"
        await seed(url, args.residents)
        client = aioredis.from_url(REDIS_URL)
        await client.delete(DONE)
        await client.aclose()

        if not args.only_rate:
            load, meter = Load(url), Meter(server.pid)
            rate = await full_speed(load, args.residents, args.seconds, args.limit)
            results["consulta full speed"] = await figures(load, meter, rate)

        load, meter = Load(url), Meter(server.pid)
        achieved = await fixed_rate(load, args.residents, args.seconds, args.rate)
        results[f"consulta at {args.rate:g}/s"] = await figures(load, meter, achieved)
    finally:
        server.terminate()
        server.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--limit", type=int, default=100_000, help="most messages per phase")
    parser.add_argument(
        "--only-rate",
        action="store_true",
        help="only the fixed-rate phase (no full-speed phase before it to clean up after)",
    )
    parser.add_argument("--serve-consulta", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_consulta:
        from consulta.bot.cli import serving_loop

        with serving_loop() as loop:  # as `consulta serve` runs
            loop.run(serve_consulta(args.serve_consulta))
        return
    if args.serve_bare:
        asyncio.run(serve_bare(args.serve_bare))
        return
    results = asyncio.run(run(args))
    print(f"\n{os.cpu_count()} cores; {args.residents} residents; {args.seconds:g} s a phase\n")
    print(f"{'':28} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8}  notes")
    for name, r in results.items():
        notes = ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in r.items()
            if k not in ("msg/s", "p50 ms", "p99 ms")
        )
        print(f"{name:28} {r['msg/s']:8.0f} {r['p50 ms']:8.1f} {r['p99 ms']:8.1f}  {notes}")
    if not args.only_rate:
        bare, full = results["bare full speed"]["msg/s"], results["consulta full speed"]["msg/s"]
        print(f"\nconsulta / bare handler throughput: {full / bare:.2f}")
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
