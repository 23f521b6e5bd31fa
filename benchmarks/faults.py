"""Benchmark: residents in mid-survey on WhatsApp while Consulta's infrastructure fails under
them — does every message they sent get recorded and answered exactly once, without stalls?

    python -m benchmarks.faults [--case all|serve-kill|worker-kill|redis-restart|pg-stop|flood]
                                [--rate 40] [--residents 60] [--keep] ...

It starts a PostgreSQL cluster (initdb on a free port) and a redis-server of its own — never
the shared ones — and, for each case, a fresh database, a fresh Redis, one `consulta serve` and
two `consulta worker` processes, and a Twilio REST API double in this process. Residents
converse at a steady aggregate rate: each posts a signed webhook, waits for the bot's reply to
reach the double, and answers the question it got with an always-valid answer ("1"; a street
for the location question; "prioridades" to start again after the survey's end). While
residents wait on a fault, others do not stop writing: when under 3/4 of the rate went out in
the last second, newcomers post a first "hola" each (and wait for its reply) to make up the
rate. Then:

- serve-kill: SIGKILL `serve`, start it again 2 s later;
- worker-kill: SIGKILL one worker, start it again 2 s later (each kill lands, within 3 s of
  its moment, while the process is mid-work: serve holding a resident's inbox lock, a worker
  sending a reply; a crash between two turns proves little);
- redis-restart: SIGKILL redis-server, start an empty one on the same port 2 s later;
- pg-stop: `pg_ctl stop -m fast`, start again 30 s later;
- flood: no fault; after a baseline, one contact sends 2,000 messages as fast as it can
  while the others go on.

The load goes on through the fault and for a recovery period after the repair, then stops; the
benchmark waits (bounded) for the system to settle, then counts, from the webhooks it sent, the
messages table of the case's database, and what reached the double:

- acknowledged: webhooks answered 2xx. A webhook nobody answered (connection refused or reset:
  `serve` down) is posted again with the same MessageSid every 0.5 s for up to 15 s — more
  generous than Twilio, which retries a failed connection once by default (up to 5 times with
  connection overrides). An HTTP error, or no answer after that, is final: "refused" (Twilio
  logs an error and never posts that message again); the resident writes the answer again 2 s
  later, as a new message. Refused messages count against the target: nobody gets them back.
- stored: inbound rows whose provider id is one of the MessageSids sent.
- replies sent: messages that reached the double.
- duplicates: replies a resident receives twice, counted once each, of two kinds. (1) One
  outbound row sent to Twilio twice: each message at the double is matched to the row that
  recorded its SM sid; a message no row recorded (sent, then the process died or the database
  went away before it noted the sid) is attributed to an undelivered outbound row to the same
  resident with the same text created before it — a send never recorded, not a duplicate —
  and, with no such row, it is a second copy of a row already delivered. (2) A message
  answered twice: every turn of this load yields exactly one reply, so in a resident's
  message log (id order) a delivered outbound row beyond one per inbound row before it is a
  second answer to a message already answered (whatever its text).
- lost: acknowledged webhooks never stored, plus stored inbound never handled, plus outbound
  rows never delivered (after settling). Every turn of this flow yields one reply, so "outbound
  rows" and "handled inbound" should also be equal.
- asked again: the same question twice in a row to a resident who answered it validly in
  between: the conversation went back a step (a stale state), and the answer is kept twice.
- stalled: residents whose reply came more than 5 s after the later of the repair (the
  component answering again: serve's /healthz, Redis's PING, pg_ctl start) and the moment
  they wrote (or never came): a wait that began in the outage may end with the repair, but
  not 5 s after it. The longest wait is over every turn, fault included. A resident who
  gets no reply for --patience s writes the same answer again, as a new message.
- processes: each still running at the end, and started again only by the benchmark; with
  the ERROR/WARNING lines and tracebacks of each process's log, most frequent first.
- flood: the others' p50/p99 wait without the flood (from 5 s after the start until the
  flood) and during it (from its first message to its last reply), and the drain: from the
  flood's last message acknowledged to its last reply reaching the double. Its stalls are the
  others' waits over 5 s during the flood.

A resident's wait runs from the first post of its answer to the first reply reaching the double
after it. Everything runs on 127.0.0.1; every phase is bounded in time; every process and temp
dir is removed at the end, on Ctrl-C and on errors (with --keep the logs stay).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from benchmarks.stack import (
    ROOT,
    Delivery,
    PostgresCluster,
    Processes,
    RedisServer,
    TwilioDouble,
    TwilioWebhooks,
    consulta_env,
    free_port,
)
from consulta.storage import keys

CASES = ("serve-kill", "worker-kill", "redis-restart", "pg-stop", "flood")
PROCESSES = {"serve": "serve", "worker-1": "worker", "worker-2": "worker"}
STALL = 5.0  # seconds: a wait longer than this after the repair is a stall
TWILIO_RETRY_FOR = 15.0  # seconds a webhook nobody answers is posted again
TWILIO_RETRY_EVERY = 0.5
RETYPE_AFTER = 2.0  # seconds before a resident writes a refused message again
FLOOD_NUMBER = 99_999_999
NEWCOMERS = 10_000_000  # numbers of residents writing for the first time to hold the rate


def number(resident: int) -> str:
    return f"+52177{resident:08d}"


def address(resident: int) -> str:
    return f"whatsapp:{number(resident)}"


def next_answer(reply: str) -> str:
    """An answer the question in `reply` always accepts."""
    if "ubicación" in reply or "¿Dónde" in reply:
        return "Calle Hidalgo 12, Centro"  # the location question: "1" is not a place
    if reply.startswith(("¡Gracias", "Entendido")):
        return "prioridades"  # the survey ended: take it again (one reply, the consent)
    return "1"


# --- the load --------------------------------------------------------------------------------


@dataclass
class Webhook:
    sid: str
    resident: int
    sent: float
    status: int | str = "unsent"  # HTTP status, "unreachable" or "timeout"
    answered: float | None = None
    posts: int = 0

    @property
    def acknowledged(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300


@dataclass
class Turn:
    """A resident writing one answer until the bot's next reply reaches them."""

    resident: int
    first_sent: float
    seen: int  # replies the resident had before: the next one answers this turn
    webhooks: list[str] = field(default_factory=list)
    replied: float | None = None

    def wait(self, end: float) -> float:
        return (self.replied if self.replied is not None else end) - self.first_sent


class Load:
    """Residents conversing at `rate` webhooks/s between them, and (flood case) one contact
    sending as fast as it can."""

    def __init__(self, hooks: TwilioWebhooks, double: TwilioDouble, args: argparse.Namespace):
        self.hooks, self.double, self.args = hooks, double, args
        self.webhooks: dict[str, Webhook] = {}
        self.turns: list[Turn] = []
        self.stopping = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.started = 0.0
        self.stopped = 0.0
        self.recent: deque[float] = deque()  # when each new message was first posted
        self.newcomers = 0

    async def __aenter__(self) -> Load:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.cancel()
        if self.session is not None:
            await self.session.close()

    async def send(self, resident: int, body: str) -> Webhook:
        assert self.session is not None
        form = self.hooks.form(number(resident), body)
        hook = Webhook(form["MessageSid"], resident, time.time())
        self.webhooks[hook.sid] = hook
        self.recent.append(hook.sent)
        while True:
            hook.posts += 1
            try:
                hook.status = await self.hooks.post(self.session, form)
                hook.answered = time.time()
                return hook
            except TimeoutError:
                hook.status = "timeout"
                return hook
            except aiohttp.ClientError:
                hook.status = "unreachable"  # nobody answered: posted again, like Twilio
                if time.time() - hook.sent > TWILIO_RETRY_FOR:
                    return hook
                await asyncio.sleep(TWILIO_RETRY_EVERY)

    def start(self, residents: range) -> None:
        self.started = time.time()
        interval = len(residents) / self.args.rate
        for i, n in enumerate(residents):
            offset = interval * i / len(residents)
            self.tasks.append(asyncio.create_task(self.converse(n, interval, offset)))
        self.tasks.append(asyncio.create_task(self.hold_rate()))

    async def hold_rate(self, tick: float = 0.1) -> None:
        """While residents wait for replies (an outage), others keep writing: when fewer than
        3/4 of the rate's messages went out in the last second, newcomers write their first
        "hola" to make up the rate (one turn each, as `turn` writes it)."""
        rate = self.args.rate
        while not self.stopping.is_set():
            await asyncio.sleep(tick)
            now = time.time()
            while self.recent and self.recent[0] < now - 1:
                self.recent.popleft()
            if now - self.started < 2 or len(self.recent) >= 0.75 * rate:
                continue
            for _ in range(min(round(rate * tick), int(rate - len(self.recent)))):
                resident = NEWCOMERS + self.newcomers
                self.newcomers += 1
                self.tasks.append(asyncio.create_task(self.turn(resident, "hola")))

    async def converse(self, n: int, interval: float, offset: float) -> None:
        answer, at = "hola", self.started + offset
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, at - time.time()))
            if self.stopping.is_set():
                return
            turn = await self.turn(n, answer)
            if turn.replied is None:
                return  # the load stopped
            answer = next_answer(self.double.to(address(n))[-1].text)
            at = max(turn.first_sent + interval, time.time())

    async def turn(self, n: int, answer: str) -> Turn:
        """Write `answer` until the bot's next reply arrives (or the load stops): again 2 s
        after a refusal, and again after --patience s of silence."""
        to = address(n)
        seen = len(self.double.to(to))
        turn = Turn(n, time.time(), seen)
        self.turns.append(turn)
        while True:
            hook = await self.send(n, answer)
            turn.webhooks.append(hook.sid)
            if not hook.acknowledged:
                if self.stopping.is_set():
                    return turn
                await asyncio.sleep(RETYPE_AFTER)  # the message is gone: write it again
                continue
            # Waits on after the load stops: the reply to what was sent still counts.
            if await self.double.wait_for(to, seen + 1, within=self.args.patience):
                turn.replied = self.double.to(to)[seen].at
                return turn
            if self.stopping.is_set():
                return turn
            # No answer for so long: the resident writes the same again, a new message.

    async def flood(self, resident: int, count: int, concurrency: int) -> None:
        """`count` messages from one contact, `concurrency` in flight at a time."""
        remaining = iter(range(count))

        async def poster() -> None:
            for _ in remaining:
                await self.send(resident, "1")

        await asyncio.gather(*(poster() for _ in range(concurrency)))

    def stop(self) -> None:
        self.stopping.set()
        self.stopped = time.time()

    def late_replies(self) -> None:
        """Replies that came after a resident stopped waiting (the load was over)."""
        for turn in self.turns:
            got = self.double.to(address(turn.resident))
            if turn.replied is None and len(got) > turn.seen:
                turn.replied = got[turn.seen].at

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --- one system under test ----------------------------------------------------------------------


class Stack:
    """A fresh database, a fresh Redis, a Twilio double, serve and two workers."""

    def __init__(self, cluster: PostgresCluster, root: Path, case: str) -> None:
        self.cluster, self.root, self.case = cluster, root / case, case
        self.root.mkdir(parents=True)
        self.database = "consulta_" + case.replace("-", "_")
        self.redis = RedisServer(self.root)
        self.double = TwilioDouble()
        self.spool = self.root / "spool"
        self.procs: Processes | None = None

    async def start(self) -> None:
        database_url = await asyncio.to_thread(self.cluster.create_database, self.database)
        await asyncio.to_thread(self.redis.start)
        await self.double.start()
        env = consulta_env(
            database_url=database_url,
            redis_url=self.redis.url,
            twilio_api=self.double.url,
            port=free_port(),
            spool_dir=self.spool,
            media_dir=self.root / "media",
        )
        self.procs = Processes(env, self.root / "logs")
        await asyncio.to_thread(self.procs.run, "db", "upgrade")
        for name, command in PROCESSES.items():
            self.procs.start(name, command)
        await self.procs.wait_healthy_async("serve")
        await asyncio.sleep(1)  # the workers' start-up
        for name in PROCESSES:
            if not self.procs.alive(name):
                raise RuntimeError(f"{name} exited at start:\n{self.procs.tail(name)}")

    @property
    def hooks(self) -> TwilioWebhooks:
        assert self.procs is not None
        return TwilioWebhooks(f"http://127.0.0.1:{self.procs.port}")

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.cluster.url(self.database, driver="postgresql"))

    async def close(self) -> None:
        if self.procs is not None:
            await asyncio.to_thread(self.procs.stop_all)
        self.redis.stop()
        await self.double.stop()


@dataclass
class Fault:
    description: str
    at: float  # injected
    repaired: float  # the component answers again
    notes: list[str] = field(default_factory=list)


@dataclass
class Work:
    """What one process holds in Redis: inbox locks (key → value) and queue items it is
    sending."""

    locks: dict[str, str]
    sending: int

    def busy(self, serve: bool) -> bool:
        """serve is caught mid-turn (holding a resident's inbox lock); a worker while it
        sends (workers take locks only in their sweeps)."""
        return bool(self.locks) if serve else bool(self.sending or self.locks)


async def work_of(client: aioredis.Redis, pid: int, unnamed_locks: bool) -> Work:
    """The inbox locks and outbound working lists of the process with this pid: named
    `host:pid` or `host:pid:<random>`. A lock's value starts with its holder's name when the
    code records it; locks that name nobody count with `unnamed_locks`."""
    owner = f"{socket.gethostname()}:{pid}"
    locks = [k async for k in client.scan_iter(match=keys.LOCK + "*", count=1000)]
    values = await client.mget(locks) if locks else []

    def owned(holder: str) -> bool:
        return holder == owner or holder.startswith(owner + ":")

    mine = {
        k: v
        for k, v in zip(locks, values, strict=True)
        if v is not None and (owned(v.split("|", 1)[0]) if "|" in v else unnamed_locks)
    }
    lists = [k async for k in client.scan_iter(match=keys.OUTBOUND_WORKING + "*", count=1000)]
    sending = 0
    for name in lists:
        if owned(name.removeprefix(keys.OUTBOUND_WORKING)):
            sending += await client.llen(name)
    return Work(mine, sending)


async def strike_when_busy(stack: Stack, name: str, within: float = 3) -> tuple[str, Work]:
    """Wait (at most `within` s) for a moment when `name` is mid-work (`Work.busy`) and
    SIGKILL it then: a crash between two turns proves little. Returns what was going on, and
    what it held right after the kill. (Locks that do not name their holder are taken for
    serve's.)"""
    procs = stack.procs
    assert procs is not None
    pid, unnamed = procs.pid(name), name == "serve"
    client = aioredis.from_url(stack.redis.url, decode_responses=True)
    try:
        moment = f"no busy moment within {within:g} s"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            work = await work_of(client, pid, unnamed)
            if work.busy(serve=name == "serve"):
                moment = f"{len(work.locks)} inbox locks held, {work.sending} replies in hand"
                break
        procs.kill(name)
        return moment, await work_of(client, pid, unnamed)
    finally:
        await client.aclose()


async def kill_and_restart(stack: Stack, name: str, args: argparse.Namespace) -> list[str]:
    """SIGKILL `name` mid-work, start it again `args.down` s later; notes on what it left
    behind: inbox locks still held (the same value before and after the pause) and replies
    in its outbound working list."""
    procs = stack.procs
    assert procs is not None
    pid = procs.pid(name)
    moment, left = await strike_when_busy(stack, name)
    await asyncio.sleep(args.down)
    client = aioredis.from_url(stack.redis.url, decode_responses=True)
    try:
        later = await work_of(client, pid, name == "serve")
    finally:
        await client.aclose()
    procs.restart(name)
    orphaned = sum(later.locks.get(k) == v for k, v in left.locks.items())
    return [
        f"{name} killed with {moment}",
        f"{name} left {len(left.locks)} inbox locks and {left.sending} replies in its working"
        f" list; {args.down:g} s later {orphaned} of those locks still held, {later.sending}"
        " replies still there",
    ]


async def inject(case: str, stack: Stack, args: argparse.Namespace) -> Fault:
    procs = stack.procs
    assert procs is not None
    at = time.time()
    if case == "serve-kill":
        notes = await kill_and_restart(stack, "serve", args)
        restarted = time.time()
        try:
            await procs.wait_healthy_async("serve", within=60)
        except RuntimeError as exc:
            notes.append(f"serve did not come back: {exc}")
        repaired = time.time()
        notes.append(
            f"serve restarted at +{restarted - at:.1f} s, healthy at +{repaired - at:.1f} s"
        )
        return Fault(f"serve SIGKILLed, restarted after {args.down:g} s", at, repaired, notes)
    if case == "worker-kill":
        notes = await kill_and_restart(stack, "worker-1", args)
        return Fault(f"worker-1 SIGKILLed, restarted after {args.down:g} s", at, time.time(), notes)
    if case == "redis-restart":
        stack.redis.kill()
        await asyncio.sleep(args.down)
        await asyncio.to_thread(stack.redis.start)
        return Fault(
            f"redis-server SIGKILLed, an empty one started after {args.down:g} s", at, time.time()
        )
    if case == "pg-stop":
        await asyncio.to_thread(stack.cluster.stop, "fast")
        stopped = time.time()
        await asyncio.sleep(max(0.0, at + args.pg_down - time.time()))
        await asyncio.to_thread(stack.cluster.start)
        repaired = time.time()
        note = f"stopped in {stopped - at:.1f} s; accepting connections at +{repaired - at:.1f} s"
        return Fault(f"PostgreSQL stopped for {args.pg_down:g} s", at, repaired, [note])
    raise ValueError(case)


_INBOUND_IDS = "SELECT provider_id FROM messages WHERE direction = 'in'"


async def database_state(stack: Stack) -> dict[str, Any] | None:
    """Inbound provider ids, and how many inbound wait and outbound are queued; None while
    PostgreSQL does not answer."""
    try:
        conn = await asyncio.wait_for(stack.connect(), 5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        rows = await conn.fetch(
            "SELECT direction, status, count(*) AS n FROM messages GROUP BY direction, status"
        )
        stored = {r["provider_id"] for r in await conn.fetch(_INBOUND_IDS)}
    finally:
        await conn.close()
    counts = {(r["direction"], r["status"]): r["n"] for r in rows}
    return {
        "received": counts.get(("in", "received"), 0),
        "queued": counts.get(("out", "queued"), 0) + counts.get(("out", "sending"), 0),
        "stored": stored,
    }


async def spool_left(stack: Stack) -> str | None:
    """What still waits in the spool (SPOOL_DIR files, the Redis list), if anything."""
    files = sum(1 for p in stack.spool.rglob("*") if p.is_file()) if stack.spool.exists() else 0
    entries = 0
    if hasattr(keys, "SPOOL") and stack.redis.ping():
        client = aioredis.from_url(stack.redis.url)
        try:
            entries = await client.llen(keys.SPOOL)
        finally:
            await client.aclose()
    if not files and not entries:
        return None
    return f"spool left                {files} files in SPOOL_DIR, {entries} entries in Redis"


async def settle(stack: Stack, load: Load, bound: float) -> tuple[bool, float]:
    """Wait until every acknowledged message is stored and handled, every reply sent, and
    the double quiet for 2 s; at most `bound` seconds. (settled, seconds waited)"""
    procs = stack.procs
    assert procs is not None
    started = time.time()
    last, quiet_since = -1, time.time()
    while time.time() - started < bound:
        await asyncio.sleep(1)
        if len(stack.double.deliveries) != last:
            last, quiet_since = len(stack.double.deliveries), time.time()
        if not any(procs.alive(name) for name in PROCESSES):
            break  # nothing can happen any more
        state = await database_state(stack)
        if state is None:
            continue
        acked = {h.sid for h in load.webhooks.values() if h.acknowledged}
        if (
            not acked - state["stored"]
            and state["received"] == 0
            and state["queued"] == 0
            and time.time() - quiet_since >= 2
        ):
            return True, time.time() - started
    return False, time.time() - started


# --- figures -----------------------------------------------------------------------------------


@dataclass
class Row:
    id: int
    direction: str
    status: str
    provider_id: str | None
    body: str | None
    created: float
    to: str  # whatsapp:+52…


async def message_rows(stack: Stack) -> list[Row]:
    conn = await stack.connect()
    try:
        found = await conn.fetch(
            "SELECT m.id, m.direction, m.status, m.provider_id, m.body, m.created_at, c.address"
            " FROM messages m JOIN contacts c ON c.id = m.contact_id ORDER BY m.id"
        )
    finally:
        await conn.close()
    return [
        Row(
            r["id"],
            r["direction"],
            r["status"],
            r["provider_id"],
            r["body"],
            r["created_at"].timestamp(),
            f"whatsapp:{r['address']}",
        )
        for r in found
    ]


def match_deliveries(
    outbound: list[Row], deliveries: list[Delivery]
) -> tuple[dict[int, int], int, list[Delivery]]:
    """(deliveries per outbound row id, unrecorded sends, the duplicates): see the docstring."""
    by_sid = {r.provider_id: r for r in outbound if r.provider_id}
    delivered: dict[int, int] = defaultdict(int)
    unmatched = []
    for d in deliveries:
        row = by_sid.get(d.sid)
        if row is not None:
            delivered[row.id] += 1
        else:
            unmatched.append(d)
    by_to: dict[str, list[Row]] = defaultdict(list)
    for r in outbound:
        by_to[r.to].append(r)
    unrecorded, duplicates = 0, []
    for d in sorted(unmatched, key=lambda d: d.at):
        candidates = [
            r
            for r in by_to[d.to]
            if r.body == d.text and r.created <= d.at + 0.5 and not delivered[r.id]
        ]
        if candidates:
            delivered[candidates[0].id] += 1
            unrecorded += 1
        else:
            duplicates.append(d)
    return delivered, unrecorded, duplicates


def answered_twice(outbound: list[Row], inbound: list[Row], excluded: set[str]) -> list[Row]:
    """Replies beyond one per message: walking each resident's log in id order, every inbound
    row allows one reply and every outbound row uses one; a reply with none left answers a
    message already answered (the same turn run twice). A resident writes only after their
    reply arrived, so a reply's row always comes before their next message's."""
    events: dict[str, list[Row]] = defaultdict(list)
    for r in sorted(outbound + inbound, key=lambda r: r.id):
        if r.to not in excluded:
            events[r.to].append(r)
    twice = []
    for rows in events.values():
        owed = 0
        for r in rows:
            if r.direction == "in":
                owed += 1
            elif owed:
                owed -= 1
            else:
                twice.append(r)
    return twice


def asked_again(outbound: list[Row], inbound: list[Row], excluded: set[str]) -> int:
    """Consecutive identical questions to a resident with a handled answer in between."""
    events: dict[str, list[Row]] = defaultdict(list)
    for r in sorted(outbound + inbound, key=lambda r: r.id):
        if r.to not in excluded:
            events[r.to].append(r)
    repeats = 0
    for rows in events.values():
        last: str | None = None
        answered = False
        for r in rows:
            if r.direction == "in":
                answered = True
                continue
            if answered and r.body == last:
                repeats += 1
            last, answered = r.body, False
    return repeats


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


LOG_LEVEL = re.compile(r" (ERROR|CRITICAL|WARNING) ([\w.]+): (.*)")
EXCEPTION = re.compile(r"^([\w.]+(?:Error|Exception|Interrupt|Exit)\b.*)")
FRAME = re.compile(r'^\s+File "(.+)", line (\d+), in (\S+)')


def log_evidence(text: str) -> dict[str, Counter[str]]:
    """What a process log says went wrong: ERROR/WARNING lines by message, and exceptions
    with the last frame of the project's own code they went through."""
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    frame = ""
    for line in text.splitlines():
        if found := LOG_LEVEL.search(line):
            levels[found[1]] += 1
            messages[f"{found[1]} {found[2]}: {found[3][:110]}"] += 1
        elif found := FRAME.match(line):
            path = Path(found[1])
            if path.is_relative_to(ROOT) and ".venv" not in path.parts:
                frame = f" (from {path.relative_to(ROOT)}:{found[2]} in {found[3]})"
        elif found := EXCEPTION.match(line):
            exceptions[found[1][:120] + frame] += 1
            frame = ""
    return {"levels": levels, "messages": messages, "exceptions": exceptions}


@dataclass
class Result:
    case: str
    lines: list[str]
    verdict: str


def figures(
    case: str,
    stack: Stack,
    load: Load,
    rows: list[Row],
    fault: Fault | None,
    settled: tuple[bool, float],
    ended: float,
    extra: list[str],
    stall_from: float,
    stall_until: float | None = None,
    exclude_from_stalls: frozenset[int] = frozenset(),
) -> Result:
    procs = stack.procs
    assert procs is not None
    hooks = list(load.webhooks.values())
    acked = [h for h in hooks if h.acknowledged]
    refused = Counter(str(h.status) for h in hooks if not h.acknowledged)
    inbound = [r for r in rows if r.direction == "in"]
    outbound = [r for r in rows if r.direction == "out"]
    stored_ids = {r.provider_id for r in inbound}
    sent_ids = {h.sid for h in hooks}
    stored = sent_ids & stored_ids
    acked_not_stored = sum(h.sid not in stored_ids for h in acked)
    unhandled = sum(r.status != "processed" for r in inbound)
    handled = len(inbound) - unhandled
    deliveries = stack.double.deliveries
    delivered, unrecorded, resent = match_deliveries(outbound, deliveries)
    twice = [
        r for r in answered_twice(outbound, inbound, {address(FLOOD_NUMBER)}) if delivered[r.id]
    ]
    duplicates = len(resent) + len(twice)
    undelivered = sum(not delivered[r.id] for r in outbound)
    lost = acked_not_stored + unhandled + undelivered
    examples = _examples(load, stack.double, inbound, outbound, delivered, resent, twice)
    again = asked_again(outbound, inbound, {address(FLOOD_NUMBER)})

    # A turn is watched when it was still waiting at `stall_from` or began later; it stalled
    # when its reply came more than STALL seconds after the later of the two.
    turns = [t for t in load.turns if t.resident not in exclude_from_stalls]
    until = stall_until if stall_until is not None else ended
    watched = [
        t
        for t in turns
        if t.first_sent <= until and (t.replied if t.replied is not None else ended) >= stall_from
    ]
    stalled_turns = [
        t
        for t in watched
        if (t.replied if t.replied is not None else ended) - max(t.first_sent, stall_from) > STALL
    ]
    stalled = {t.resident for t in stalled_turns}
    longest = max((t.wait(ended) for t in turns), default=float("nan"))
    longest_after = max((t.wait(ended) for t in watched), default=float("nan"))
    unanswered = sum(t.replied is None for t in turns)

    span = (load.stopped or ended) - load.started
    ups = []
    for name in PROCESSES:
        kills = sum(1 for n, _ in procs.killed if n == name)
        state = "up" if procs.alive(name) else f"DOWN (exit {procs.returncode(name)})"
        ups.append(f"{name} {state}" + (f", SIGKILLed+restarted {kills}×" if kills else ""))
    health, body = procs.health()
    unexpected = [n for n in PROCESSES if not procs.alive(n)]

    by_status = ", ".join(f"{k} {v}" for k, v in sorted(refused.items()))
    lines = [
        f"webhooks sent            {len(hooks)} ({len(hooks) / span:.1f}/s over {span:.0f} s,"
        f" {load.newcomers} from newcomers holding the rate);"
        f" posts {sum(h.posts for h in hooks)} (with Twilio-style retries)",
        f"acknowledged             {len(acked)}",
        f"refused                  {sum(refused.values())}"
        + (f" ({by_status})" if refused else ""),
        f"stored                   {len(stored)} of {len(hooks)} sent"
        f" ({len(acked) - acked_not_stored} of {len(acked)} acknowledged)",
        f"replies sent             {len(deliveries)} (sends never recorded: {unrecorded});"
        f" outbound rows {len(outbound)}, handled inbound {handled}",
        f"duplicates               {duplicates} (a reply sent again {len(resent)}; a turn"
        f" answered twice {len(twice)})",
        f"lost                     {lost} (acknowledged never stored {acked_not_stored},"
        f" stored never handled {unhandled}, replies never sent {undelivered})",
        *examples,
        f"asked again              {again}",
        f"stalled >{STALL:g} s            {len(stalled)} residents ({len(stalled_turns)} of"
        f" {len(watched)} turns watched); turns never answered {unanswered}",
        f"longest wait             {longest:.1f} s (of turns watched for stalls:"
        f" {longest_after:.1f} s)",
        *_worst(stalled_turns, load.started, ended),
        *extra,
        "processes                "
        + "; ".join(ups)
        + f"; /healthz {health or 'no answer'}"
        + (f" {body}" if health != 200 else ""),
        f"settled                  {'yes' if settled[0] else 'NO'} after {settled[1]:.0f} s",
    ]
    for name in PROCESSES:
        evidence = log_evidence(procs.log(name))
        if evidence["levels"] or evidence["exceptions"]:
            counts = [f"{v} {k}" for k, v in evidence["levels"].most_common()]
            if evidence["exceptions"]:
                counts.append(f"{evidence['exceptions'].total()} tracebacks")
            lines.append(f"log {name:<20} {', '.join(counts)}")
            for message, n in evidence["messages"].most_common(3):
                lines.append(f"    {n:>5} × {message}")
            for message, n in evidence["exceptions"].most_common(3):
                lines.append(f"    {n:>5} × {message}")

    failures = []
    if refused:
        failures.append(f"refused {sum(refused.values())}")
    if lost:
        failures.append(f"lost {lost}")
    if duplicates:
        failures.append(f"duplicates {duplicates}")
    if stalled:
        failures.append(f"stalled {len(stalled)}")
    if unexpected:
        failures.append("down: " + ", ".join(unexpected))
    if again:
        failures.append(f"asked again {again}")
    if not settled[0]:
        failures.append("did not settle")
    verdict = "PASS" if not failures else "FAIL — " + ", ".join(failures)
    header = f"{case}: {fault.description}" if fault else case
    notes = fault.notes if fault else []
    lines[:0] = [f"fault                    {note}" for note in notes]
    return Result(header, lines, verdict)


def _examples(
    load: Load,
    double: TwilioDouble,
    inbound: list[Row],
    outbound: list[Row],
    delivered: dict[int, int],
    resent: list[Delivery],
    twice: list[Row],
    count: int = 3,
) -> list[str]:
    """A few of the duplicates and losses, with times (seconds since the load began)."""
    t0, found = load.started, []
    for d in resent[:count]:
        first = next((e for e in double.to(d.to) if e.text == d.text and e.at < d.at), None)
        then = f"+{first.at - t0:.1f} s and again at " if first else ""
        found.append(f"    sent again to {d.to[-8:]}: «{d.text[:40]}…» at {then}+{d.at - t0:.1f} s")
    for r in twice[:count]:
        found.append(
            f"    answered twice: reply {r.id} to {r.to[-8:]}, «{(r.body or '')[:40]}…» again"
            f" (row created +{r.created - t0:.1f} s)"
        )
    stored = {r.provider_id for r in inbound}
    missing = [h for h in load.webhooks.values() if h.acknowledged and h.sid not in stored]
    for h in missing[:count]:
        found.append(
            f"    never stored: {h.sid} from {h.resident}, acknowledged +{h.sent - t0:.1f} s"
        )
    for r in [r for r in inbound if r.status != "processed"][:count]:
        found.append(f"    never handled: message {r.id} from {r.to[-8:]} (status {r.status})")
    for r in [r for r in outbound if not delivered[r.id]][:count]:
        found.append(f"    never sent: reply {r.id} to {r.to[-8:]} (status {r.status})")
    return found


def _worst(turns: list[Turn], started: float, ended: float, count: int = 5) -> list[str]:
    """The longest stalls: how long, from when, and how many times the resident wrote."""
    worst = sorted(turns, key=lambda t: -t.wait(ended))[:count]
    return [
        f"    stalled resident {t.resident}: wrote at +{t.first_sent - started:.1f} s"
        f" ({len(t.webhooks)} messages), "
        + (f"answered {t.wait(ended):.1f} s later" if t.replied else "never answered")
        for t in worst
    ]


def waits_between(load: Load, start: float, end: float, ended: float) -> list[float]:
    """Waits of the residents' turns begun between `start` and `end`."""
    return [t.wait(ended) for t in load.turns if start <= t.first_sent < end]


# --- the cases --------------------------------------------------------------------------------


async def fault_case(
    case: str, cluster: PostgresCluster, root: Path, args: argparse.Namespace
) -> Result:
    stack = Stack(cluster, root, case)
    cleanup = _register(lambda: _kill_stack(stack))
    try:
        await stack.start()
        async with Load(stack.hooks, stack.double, args) as load:
            load.start(range(args.residents))
            print(f"  [{case}] load running; fault at +{args.warmup:g} s", flush=True)
            await asyncio.sleep(args.warmup)
            fault = await inject(case, stack, args)
            print(
                f"  [{case}] fault injected at +{fault.at - load.started:.1f} s,"
                f" repaired at +{fault.repaired - load.started:.1f} s",
                flush=True,
            )
            await asyncio.sleep(args.after)
            load.stop()
            settled = await settle(stack, load, args.settle)
            ended = time.time()
            await load.cancel()
            load.late_replies()
            before = waits_between(load, load.started + 5, fault.at, ended)
            after = waits_between(load, fault.repaired, load.stopped, ended)
            held = [
                t.replied - fault.repaired
                for t in load.turns
                if t.first_sent < fault.repaired and t.replied and t.replied > fault.repaired
            ]
            extra = [
                f"wait p50 / p99           {_ms(before)} before the fault;"
                f" {_ms(after)} after the repair",
                f"backlog                  {len(held)} turns begun before the repair were"
                f" answered after it"
                + (
                    f", the last {max(held):.1f} s after it (p50 {pct(held, 50):.1f} s)"
                    if held
                    else ""
                ),
                f"timeline                 fault at +{fault.at - load.started:.1f} s, repaired"
                f" +{fault.repaired - load.started:.1f} s, load stopped"
                f" +{load.stopped - load.started:.1f} s",
            ]
            extra += [spooled] if (spooled := await spool_left(stack)) else []
            rows = await message_rows(stack)
            result = figures(case, stack, load, rows, fault, settled, ended, extra, fault.repaired)
        if result.verdict != "PASS" and stack.procs is not None:
            result.lines.append(f"logs in {stack.procs.logs}")
        return result
    except Exception:
        if stack.procs is not None:
            print(f"  [{case}] failed; process logs in {stack.procs.logs}:", file=sys.stderr)
            for name in PROCESSES:
                print(f"--- {name} ---\n{stack.procs.tail(name)}", file=sys.stderr)
        raise
    finally:
        await stack.close()
        cleanup()


async def flood_case(cluster: PostgresCluster, root: Path, args: argparse.Namespace) -> Result:
    stack = Stack(cluster, root, "flood")
    cleanup = _register(lambda: _kill_stack(stack))
    try:
        await stack.start()
        flooder = address(FLOOD_NUMBER)
        async with Load(stack.hooks, stack.double, args) as load:
            load.start(range(args.flood_residents))
            print(f"  [flood] {args.flood_residents} residents; flood at +{args.baseline:g} s")
            await asyncio.sleep(args.baseline)
            flood_start = time.time()
            await load.flood(FLOOD_NUMBER, args.flood, args.flood_concurrency)
            flood_sent = time.time()
            flood_hooks = [h for h in load.webhooks.values() if h.resident == FLOOD_NUMBER]
            acked = [h for h in flood_hooks if h.acknowledged]
            last_recorded = max((h.answered or 0 for h in acked), default=flood_sent)
            print(
                f"  [flood] {len(flood_hooks)} flood webhooks posted in"
                f" {flood_sent - flood_start:.1f} s; waiting for its backlog",
                flush=True,
            )
            # Drained: a reply for every acknowledged flood message, or nothing new for 10 s
            # and none of the flood's messages waiting in the database.
            deadline = flood_sent + args.flood_bound
            drained = False
            while time.time() < deadline:
                await asyncio.sleep(0.5)
                got = stack.double.to(flooder)
                if len(got) >= len(acked):
                    drained = True
                    break
                if got and time.time() - got[-1].at > 10:
                    state = await database_state(stack)
                    if state is not None and state["received"] == 0:
                        drained = True
                        break
            got = stack.double.to(flooder)
            drain_end = got[-1].at if got else time.time()
            load.stop()
            settled = await settle(stack, load, args.settle)
            ended = time.time()
            await load.cancel()
            load.late_replies()
            baseline = waits_between(load, load.started + 5, flood_start, ended)
            during = waits_between(load, flood_start, drain_end, ended)
            ratio50 = pct(during, 50) / pct(baseline, 50) if baseline else float("nan")
            ratio99 = pct(during, 99) / pct(baseline, 99) if baseline else float("nan")
            extra = [
                f"flood                    {len(flood_hooks)} messages from one contact posted"
                f" in {flood_sent - flood_start:.1f} s"
                f" ({len(flood_hooks) / max(flood_sent - flood_start, 1e-9):.0f}/s),"
                f" {len(acked)} acknowledged, {len(got)} replies to it",
                f"flood drain              {drain_end - last_recorded:.1f} s from its last message"
                f" acknowledged to its last reply" + ("" if drained else " (NOT drained)"),
                f"others' wait p50 / p99   {_ms(baseline)} without the flood; {_ms(during)}"
                f" during it (×{ratio50:.1f} / ×{ratio99:.1f})",
            ]
            extra += [spooled] if (spooled := await spool_left(stack)) else []
            rows = await message_rows(stack)
            result = figures(
                "flood",
                stack,
                load,
                rows,
                None,
                settled,
                ended,
                extra,
                stall_from=flood_start,
                stall_until=drain_end,
                exclude_from_stalls=frozenset({FLOOD_NUMBER}),
            )
            result.case = (
                f"flood: one contact sends {args.flood} messages while"
                f" {args.flood_residents} converse"
            )
        if result.verdict != "PASS" and stack.procs is not None:
            result.lines.append(f"logs in {stack.procs.logs}")
        return result
    finally:
        await stack.close()
        cleanup()


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{pct(values, 50) * 1000:.0f} / {pct(values, 99) * 1000:.0f} ms (n={len(values)})"


# --- clean-up, whatever happens ---------------------------------------------------------------

_CLEANUPS: list[Callable[[], None]] = []


def _register(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Run `cleanup` at exit unless it is called before; returns the call."""
    _CLEANUPS.append(cleanup)

    def run() -> None:
        if cleanup in _CLEANUPS:
            _CLEANUPS.remove(cleanup)
            with contextlib.suppress(Exception):
                cleanup()

    return run


@atexit.register
def _clean_everything() -> None:
    while _CLEANUPS:
        with contextlib.suppress(Exception):
            _CLEANUPS.pop()()


def _kill_stack(stack: Stack) -> None:
    if stack.procs is not None:
        stack.procs.stop_all(timeout=5)
    stack.redis.kill()


def _code_version() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.splitlines()
    except OSError:
        return "unknown"
    return f"{head} + {len(changed)} changed/new files in the working tree" if changed else head


async def run(args: argparse.Namespace, root: Path) -> list[Result]:
    # SIGTERM cancels the run as Ctrl-C does (asyncio.Runner): every `finally` cleans up.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    cases = CASES if args.case == "all" else (args.case,)
    cluster = PostgresCluster(root)
    stop_cluster = _register(cluster.destroy if not args.keep else lambda: cluster.stop("fast"))
    print(f"temp dir {root}; PostgreSQL on port {cluster.port}", flush=True)
    results = []
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        for case in cases:
            print(f"\n== {case} ==", flush=True)
            if case == "flood":
                result = await flood_case(cluster, root, args)
            else:
                result = await fault_case(case, cluster, root, args)
            _print(result)
            results.append(result)
    finally:
        stop_cluster()
    return results


def _print(result: Result) -> None:
    print(f"\n{result.case}")
    for line in result.lines:
        print(f"  {line}")
    print(f"  verdict: {result.verdict}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("all", *CASES), default="all")
    parser.add_argument("--rate", type=float, default=40, help="webhooks/s, all residents")
    parser.add_argument("--residents", type=int, default=60)
    parser.add_argument("--warmup", type=float, default=15, help="seconds of load before")
    parser.add_argument("--after", type=float, default=20, help="seconds of load after repair")
    parser.add_argument("--down", type=float, default=2, help="seconds a killed thing stays")
    parser.add_argument("--pg-down", type=float, default=30, help="seconds PostgreSQL is down")
    parser.add_argument("--settle", type=float, default=90, help="most seconds to settle")
    parser.add_argument("--patience", type=float, default=45, help="a resident's longest wait")
    parser.add_argument("--flood", type=int, default=2000, help="messages in the flood")
    parser.add_argument("--flood-residents", type=int, default=50)
    parser.add_argument("--flood-concurrency", type=int, default=20)
    parser.add_argument("--baseline", type=float, default=20, help="seconds before the flood")
    parser.add_argument("--flood-bound", type=float, default=180, help="most seconds to drain")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (process logs)")
    args = parser.parse_args()

    # Ctrl-C cancels the run (asyncio.Runner does so only with Python's own SIGINT handler,
    # which a shell does not install for a job it started in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "-m", __spec__.name])
    print(f"{command} {' '.join(shlex.quote(a) for a in sys.argv[1:])}")
    print(
        "parameters: "
        + ", ".join(f"{k}={v}" for k, v in vars(args).items())
        + f"; code {_code_version()}; {os.cpu_count()} cores"
    )
    root = Path(tempfile.mkdtemp(prefix="consulta-faults-"))
    root.chmod(0o755)  # PostgreSQL runs as `postgres` and lives under it
    if not args.keep:
        _register(lambda: shutil.rmtree(root, ignore_errors=True))
    try:
        results = asyncio.run(run(args, root))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    finally:
        _clean_everything()
    print("\nsummary")
    for result in results:
        print(f"  {result.case.split(':')[0]:<14} {result.verdict}")
    if len(results) > 1:
        passed = statistics.mean(r.verdict == "PASS" for r in results)
        print(f"  {passed:.0%} of cases meet the target")


if __name__ == "__main__":
    main()
