"""A whole Consulta on loopback, for the fault benchmark and the fault tests: a PostgreSQL
cluster and a redis-server of its own, `consulta serve` and `consulta worker` as real
processes logging to files, a Twilio REST API double that records what each resident receives
and when, and signed Twilio webhooks.

Nothing here needs the tests package; `tests/faults/harness.py` re-exports what tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from twilio.request_validator import RequestValidator

__all__ = [
    "ACCOUNT_SID",
    "AUTH_TOKEN",
    "PUBLIC_URL",
    "ROOT",
    "WHATSAPP_FROM",
    "Delivery",
    "PostgresCluster",
    "Processes",
    "RedisServer",
    "TwilioDouble",
    "TwilioWebhooks",
    "consulta_env",
    "free_port",
    "wait_for_port",
]

ROOT = Path(__file__).resolve().parents[1]  # the project: where `python -m bot.cli` runs
PUBLIC_URL = "https://consulta.example.org"
ACCOUNT_SID = "AC" + "5eed" * 8
AUTH_TOKEN = "faults-" + "7" * 25
WHATSAPP_FROM = "whatsapp:+5213300000000"
WEBHOOK_PATH = "/webhooks/twilio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    """True once something accepts connections on host:port, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# --- PostgreSQL and Redis of our own ---------------------------------------------------------


def _postgres_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps them off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) found")
    return Path(initdb).parent


class PostgresCluster:
    """A throw-away PostgreSQL cluster: trust authentication, loopback only, on a free port,
    in `root`/postgres or else a temp dir of its own. initdb refuses to run as root, so as root
    every command runs as `postgres`, which must be able to reach `root` (a private dir such
    as pytest's `tmp_path` is not: leave `root` out there)."""

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="consulta-pg-"))
            root.chmod(0o755)
        self.root = Path(root) / "postgres"
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self.bin = _postgres_bin()
        self.as_postgres = os.geteuid() == 0

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def init(self) -> PostgresCluster:
        self.root.mkdir(parents=True)
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy (asyncpg) URL."""
        host = ("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres")
        self._run("createdb", *host, name)
        return self.url(name)

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        """Stop at once and remove the cluster's files."""
        if self.data.exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.parent.name.startswith("consulta-pg-"):  # the temp dir made for it
            shutil.rmtree(self.root.parent, ignore_errors=True)


class RedisServer:
    """A redis-server of our own, without persistence: killed and started again on the same
    port, it comes back empty, as a crashed Redis without AOF does."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root) / "redis"
        self.port = port or free_port()
        self.log = self.root / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}; see {self.log}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# --- Twilio: signed webhooks in, a REST API double out ------------------------------------------


class TwilioWebhooks:
    """Inbound-message webhooks as Twilio posts them: form-encoded, signed with the auth token
    against PUBLIC_URL + path (not the address they are actually posted to)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth_token: str = AUTH_TOKEN,
        account_sid: str = ACCOUNT_SID,
        public_url: str = PUBLIC_URL,
        to: str = WHATSAPP_FROM,
    ) -> None:
        self.url = base_url.rstrip("/") + WEBHOOK_PATH
        self.signed_url = public_url.rstrip("/") + WEBHOOK_PATH
        self.account_sid, self.to = account_sid, to
        self.validator = RequestValidator(auth_token)

    def form(self, number: str, body: str, sid: str | None = None) -> dict[str, str]:
        """A WhatsApp message from `number` (+52…) saying `body`, with a fresh MessageSid."""
        return {
            "MessageSid": sid or "SM" + uuid.uuid4().hex,
            "AccountSid": self.account_sid,
            "From": f"whatsapp:{number}",
            "To": self.to,
            "Body": body,
            "NumMedia": "0",
            "ProfileName": "Vecina",
            "WaId": number.lstrip("+"),
        }

    def headers(self, form: Mapping[str, str]) -> dict[str, str]:
        return {"X-Twilio-Signature": self.validator.compute_signature(self.signed_url, form)}

    async def post(
        self, session: aiohttp.ClientSession, form: Mapping[str, str], give_up: float = 15
    ) -> int:
        """POST one webhook; its HTTP status. Connection errors, and no answer within
        `give_up` seconds (Twilio waits 15), raise as aiohttp raises them."""
        async with session.post(
            self.url,
            data=dict(form),
            headers=self.headers(form),
            timeout=aiohttp.ClientTimeout(total=give_up),
        ) as response:
            await response.read()
            return response.status

    def post_sync(self, form: Mapping[str, str], timeout: float = 15) -> int:
        """The same from synchronous code; the HTTP status (OSError when nobody answers)."""
        data = urllib.parse.urlencode(dict(form)).encode()
        request = urllib.request.Request(self.url, data=data, headers=self.headers(form))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code)


def twilio_page(account_sid: str, key: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of a Twilio 2010 API list, as the twilio library reads it (a single page)."""
    uri = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
    return {
        key: records,
        "first_page_uri": uri,
        "next_page_uri": None,
        "previous_page_uri": None,
        "page": 0,
        "page_size": 50,
        "start": 0,
        "end": len(records),
        "uri": uri,
    }


async def fresh_database(admin_url: str, name: str) -> tuple[str, str]:
    """A new, empty database `name` on the server of `admin_url` (dropped first if it was
    left behind): its URL for asyncpg and for SQLAlchemy."""
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    raw = admin_url.rsplit("/", 1)[0] + "/" + name
    return raw, raw.replace("postgresql://", "postgresql+asyncpg://")


async def drop_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@dataclass(frozen=True)
class Delivery:
    """One message Consulta asked Twilio to send."""

    sid: str  # the SM… sid the double answered with
    to: str  # whatsapp:+52…
    text: str  # the body, or the body of the content (buttons) sent
    at: float  # time.time() when the request arrived


@dataclass
class TwilioDouble:
    """Twilio's Messages and Content APIs on 127.0.0.1, in the caller's event loop: answers
    like Twilio (201, a fresh SM sid) and records every message with its arrival time."""

    account_sid: str = ACCOUNT_SID
    deliveries: list[Delivery] = field(default_factory=list)
    by_to: dict[str, list[Delivery]] = field(default_factory=dict)
    contents: dict[str, str] = field(default_factory=dict)  # ContentSid → body
    url: str = ""
    _runner: web.AppRunner | None = None
    _arrived: dict[str, asyncio.Event] = field(default_factory=dict)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._message)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages.json", self._list)
        app.router.add_post("/v1/Content", self._content)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def to(self, address: str) -> list[Delivery]:
        """What `address` (whatsapp:+52…) received so far, in order."""
        return self.by_to.get(address, [])

    async def wait_for(self, address: str, count: int, within: float) -> bool:
        """Wait until `address` has received `count` messages; False after `within` s."""
        deadline = time.monotonic() + within
        while len(self.to(address)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            event = self._arrived.setdefault(address, asyncio.Event())
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return True

    async def _message(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        if request.match_info["sid"] != self.account_sid:
            return web.json_response({"code": 20003, "status": 401}, status=401)
        sid = "SM" + uuid.uuid4().hex
        to = str(form.get("To", ""))
        if "Body" in form:
            text = str(form["Body"])
        else:
            text = self.contents.get(str(form.get("ContentSid")), "")
        delivery = Delivery(sid, to, text, time.time())
        self.deliveries.append(delivery)
        self.by_to.setdefault(to, []).append(delivery)
        if to in self._arrived:
            self._arrived[to].set()
        resource = {
            "sid": sid,
            "account_sid": self.account_sid,
            "status": "queued",
            "to": to,
            "from": form.get("From"),
            "body": form.get("Body"),
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": None,
            "error_code": None,
            "date_created": "Sun, 22 Nov 2026 12:00:00 +0000",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return web.json_response(resource, status=201)

    async def _list(self, request: web.Request) -> web.Response:
        """Messages to `To` newest first, one page, as Twilio lists them (a sender that lost a
        send's answer asks whether the message arrived)."""
        to = request.query.get("To", "")
        found = [
            {
                "sid": d.sid,
                "account_sid": self.account_sid,
                "to": d.to,
                "body": d.text,
                "status": "queued",
                "date_created": format_datetime(datetime.fromtimestamp(d.at, UTC)),
            }
            for d in reversed(self.by_to.get(to, []))
        ]
        limit = int(request.query.get("PageSize", "50"))
        return web.json_response(twilio_page(self.account_sid, "messages", found[:limit]))

    async def _content(self, request: web.Request) -> web.Response:
        body = await request.json()
        sid = "HX" + uuid.uuid4().hex
        types = body.get("types", {})
        text = types.get("twilio/text", {}).get("body")
        if text is None and types:
            text = next(iter(types.values())).get("body", "")
        self.contents[sid] = text or ""
        return web.json_response({"sid": sid, "account_sid": self.account_sid, **body}, status=201)


# --- consulta serve / consulta worker as real processes ----------------------------------------

PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def consulta_env(
    *,
    database_url: str,
    redis_url: str | None,
    twilio_api: str,
    port: int,
    spool_dir: Path,
    media_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a production-like process talking WhatsApp through the double.
    Only the variables named here (and PATH, HOME…) reach it: nothing leaks in from the shell."""
    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env.update(
        DATABASE_URL=database_url,
        PUBLIC_URL=PUBLIC_URL,
        PORT=str(port),
        SECRET_KEY=secrets.token_hex(32),
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_WHATSAPP_FROM=WHATSAPP_FROM,
        TWILIO_API_BASE_URL=twilio_api,
        TWILIO_WHATSAPP_RATE="1000",  # pacing must not be what is measured
        SPOOL_DIR=str(spool_dir),
        MEDIA_DIR=str(media_dir),
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


@dataclass
class _Process:
    name: str
    command: str  # serve | worker
    popen: subprocess.Popen[bytes]
    started: float
    generation: int


class Processes:
    """`consulta serve` and `consulta worker` processes (as `python -m bot.cli`, which is what
    the `consulta` console script runs), each logging to `logs/<name>.log`; every start of a
    name appends to the same file under a header line."""

    def __init__(self, env: Mapping[str, str], logs: Path, cwd: Path = ROOT) -> None:
        self.env, self.logs, self.cwd = dict(env), Path(logs), cwd
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = int(self.env.get("PORT", "8080"))
        self.procs: dict[str, _Process] = {}
        self.killed: list[tuple[str, float]] = []  # (name, when) killed on purpose
        self.starts: dict[str, int] = {}

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def run(self, *args: str, timeout: float = 120) -> str:
        """A one-off command (`db upgrade`…) with the same environment; its output. Raises
        RuntimeError when it fails."""
        done = subprocess.run(
            [sys.executable, "-m", "consulta", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"consulta {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self, name: str, command: str = "serve") -> subprocess.Popen[bytes]:
        generation = self.starts.get(name, 0) + 1
        self.starts[name] = generation
        with open(self.log_path(name), "ab") as log:
            log.write(f"=== {name}: consulta {command}, start {generation} ===\n".encode())
            log.flush()
            popen = subprocess.Popen(
                [sys.executable, "-m", "consulta", command],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
            )
        self.procs[name] = _Process(name, command, popen, time.time(), generation)
        return popen

    def pid(self, name: str) -> int:
        return self.procs[name].popen.pid

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].popen.poll() is None

    def returncode(self, name: str) -> int | None:
        return self.procs[name].popen.poll()

    def health(self, timeout: float = 2) -> tuple[int, dict[str, Any]]:
        """serve's GET /healthz: (status, body), (0, {}) when nobody answers."""
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), json.loads(error.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def wait_healthy(self, name: str = "serve", timeout: float = 60) -> float:
        """Wait for serve's /healthz to answer 200; seconds waited. Raises RuntimeError (with
        the log's tail) when it exits or stays unhealthy."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.alive(name):
                raise RuntimeError(f"{name} exited ({self.returncode(name)}):\n{self.tail(name)}")
            if self.health(timeout=1)[0] == 200:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"{name} not healthy after {timeout:g} s:\n{self.tail(name)}")

    async def wait_healthy_async(self, name: str = "serve", within: float = 60) -> float:
        return await asyncio.to_thread(self.wait_healthy, name, within)

    def kill(self, name: str) -> None:
        """SIGKILL, as the OOM killer or a lost machine would: no cleanup of any kind."""
        process = self.procs[name].popen
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            self.killed.append((name, time.time()))

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, self.procs[name].command)

    def log(self, name: str) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, name: str, lines: int = 25) -> str:
        return "\n".join(self.log(name).splitlines()[-lines:])

    def stop_all(self, timeout: float = 10) -> None:
        """SIGTERM every running process, then SIGKILL what is left after `timeout` s."""
        running = [p.popen for p in self.procs.values() if p.popen.poll() is None]
        for popen in running:
            with contextlib.suppress(ProcessLookupError):
                popen.terminate()
        deadline = time.monotonic() + timeout
        for popen in running:
            try:
                popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(10)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()
