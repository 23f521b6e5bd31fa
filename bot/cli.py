"""The `consulta` command: serve, worker, chat, flows check, db upgrade."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from consulta.bot import broadcast_cli, report_cli, territory_cli
from consulta.bot.config import ConfigError, Settings
from consulta.bot.logs import PrivateFormatter, configure_logging, secrets_of

if TYPE_CHECKING:
    from aiohttp import web

    from consulta.bot.runtime import Runtime

__all__ = ["PrivateFormatter", "Refusal", "main", "open_runtime"]  # PrivateFormatter: in bot.logs

log = logging.getLogger("consulta")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consulta", description="Ultra-short consultations over WhatsApp, SMS and Telegram."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("serve", help="the web process: webhooks, simulator, health, metrics")
    commands.add_parser("worker", help="a queue worker: sends replies, picks up stranded work")

    chat = commands.add_parser("chat", help="talk to the bot in this terminal")
    chat.add_argument("--flow", help="start this flow (id or deep-link code)")
    chat.add_argument("--lang", choices=("es", "en", "fr"), help="answer in this language")
    chat.add_argument("--as", dest="address", default="local", help="who you are (an address)")

    flows = commands.add_parser("flows", help="flow files")
    flows_commands = flows.add_subparsers(dest="flows_command", required=True, metavar="ACTION")
    check = flows_commands.add_parser("check", help="validate flow files; exit 1 on problems")
    check.add_argument("paths", nargs="*", help="files or folders (default: the shipped flows)")

    tg = commands.add_parser("telegram", help="the Telegram bot")
    tg_commands = tg.add_subparsers(dest="telegram_command", required=True, metavar="ACTION")
    tg_commands.add_parser(
        "set-webhook", help="register PUBLIC_URL/webhooks/telegram and the command menus"
    )
    groups = tg_commands.add_parser("groups", help="neighbourhood groups")
    groups_commands = groups.add_subparsers(dest="groups_command", required=True, metavar="ACTION")
    add = groups_commands.add_parser("add", help="give a group its territory")
    add.add_argument("chat", help="the group's chat id, e.g. -1001234567890")
    add.add_argument("--territory", required=True, help="e.g. santa-julia")
    add.add_argument("--lang", choices=("es", "en", "fr"), help="the language to post in")
    groups_commands.add_parser("list", help="the groups the bot is in")
    invite = tg_commands.add_parser("invite", help="post a survey invitation to a group")
    invite.add_argument("chat")
    invite.add_argument("--flow", required=True)
    poll = tg_commands.add_parser("poll", help="post a flow's choice question as a native poll")
    poll.add_argument("chat")
    poll.add_argument("--flow", required=True)
    poll.add_argument("--question", required=True, help="the state name of the question")

    export = commands.add_parser("export", help="a flow's answers for analysis")
    export.add_argument("--flow", required=True)
    export.add_argument("--format", required=True, choices=("csv", "xlsx", "jsonl", "geojson"))
    export.add_argument("-o", "--output", help="a file (default: standard output)")
    export.add_argument("--since", type=_when, help="started on or after (YYYY-MM-DD[THH:MM])")
    export.add_argument("--until", type=_when, help="started before")
    export.add_argument("--territory")
    export.add_argument("--status", choices=("complete", "partial", "all"), default="complete")
    export.add_argument("--lang", choices=("es", "en", "fr"), help="language of the labels")
    export.add_argument("--codes", action="store_true", help="choice keys instead of labels")
    export.add_argument("--long", action="store_true", help="CSV: one row per answer")
    export.add_argument(
        "--include-previews", action="store_true", help="also the simulator's test conversations"
    )
    export.add_argument(
        "--with-contacts",
        action="store_true",
        help="admins: also each resident's address and name (personal data; the export is logged)",
    )

    contacts = commands.add_parser("contacts", help="residents' data rights (ARCO)")
    contacts_commands = contacts.add_subparsers(
        dest="contacts_command", required=True, metavar="ACTION"
    )
    show = contacts_commands.add_parser("show", help="all that is held about a resident")
    forget = contacts_commands.add_parser("forget", help="forget a resident")
    for sub in (show, forget):
        sub.add_argument("address", help="a phone number (+52…) or a Telegram chat id")
        sub.add_argument("--channel", help="only this channel (whatsapp, sms, telegram…)")
    forget.add_argument("--answers", action="store_true", help="remove their answers too")
    forget.add_argument("--yes", action="store_true", help="do it (without: only say what)")

    staff = commands.add_parser("staff", help="the planning team's accounts (bearer tokens)")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True, metavar="ACTION")
    staff_add = staff_commands.add_parser("add", help="a new account; prints its token once")
    staff_add.add_argument("name")
    staff_add.add_argument("--role", required=True, choices=("admin", "analyst"))
    staff_revoke = staff_commands.add_parser("revoke", help="revoke an account's token")
    staff_revoke.add_argument("name")
    staff_commands.add_parser("list", help="the accounts")

    broadcast_cli.add_parser(commands)
    territory_cli.add_parser(commands)
    report_cli.add_parser(commands)

    db = commands.add_parser("db", help="the database")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply migrations")
    return parser


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command in ("serve", "worker"):
            settings.check_production()
    except ConfigError as exc:
        print(f"consulta: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        logging.WARNING if args.command == "chat" else logging.INFO,
        secrets_of(settings),
        log_format=settings.log_format,
    )
    try:
        return _run(settings, args)
    except Refusal as exc:
        print(f"consulta: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "flows":
        from consulta.flows.check import main as check_main

        return check_main(args.paths)
    if args.command == "db":
        return _db_upgrade(settings)
    runner = {
        "serve": _serve,
        "worker": _worker,
        "chat": _chat,
        "telegram": _telegram,
        "export": _export,
        "contacts": _contacts,
        "staff": _staff,
        "broadcast": broadcast_cli.run,
        "territories": territory_cli.run,
        "reports": report_cli.run,
        "liaisons": report_cli.run,
    }[args.command]
    if args.command in ("serve", "worker"):
        with serving_loop() as loop:
            return loop.run(runner(settings, args))
    return asyncio.run(runner(settings, args))


def serving_loop() -> asyncio.Runner:
    """The event loop of the long-running processes: uvloop's, which carries about twice the
    webhooks per core of asyncio's own."""
    import uvloop

    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


class Refusal(Exception):
    """Why a command cannot go on: `main` prints it as "consulta: …" and exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class NotUpToDate(Exception):
    """The database's schema is not the one this version of Consulta was written for."""


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, migrate: bool, wait: bool = False
) -> AsyncIterator[Runtime]:
    """The process's runtime, closed when the block ends.

    Args:
        migrate: apply pending migrations first (serve, chat). Without it the schema must
            already be up to date: admin commands say so and stop.
        wait: a database that is not there yet, or not up to date, is waited for rather than
            a reason to exit (serve, worker: they start side by side with what they need).

    Raises:
        Refusal: the flows have problems, a channel setting cannot be used, or the database
            cannot be reached or is not up to date (without `wait`).
    """
    runtime = await _start(settings, migrate=migrate, wait=wait)
    try:
        yield runtime
    finally:
        await runtime.close()


async def _start(settings: Settings, *, migrate: bool, wait: bool) -> Runtime:
    from consulta.bot.outage import Outage
    from consulta.flows.check import FlowCheckError
    from consulta.storage.errors import is_unavailable

    starting = Outage("starting up: the database")
    told = False
    while True:
        try:
            runtime = await _create(settings, migrate=migrate)
        except FlowCheckError as exc:
            raise Refusal(f"refusing to start, the flows have problems:\n{exc}") from None
        except NotUpToDate as exc:
            if not wait:
                raise Refusal(str(exc)) from None
            if not told:
                log.warning("%s; waiting for it", exc)
                told = True
            await starting.pause(exc)
        except ValueError as exc:  # a channel setting that cannot be used
            raise Refusal(str(exc)) from None
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            if not wait:
                raise Refusal(f"the database cannot be reached ({type(exc).__name__})") from None
            await starting.pause(exc)
        else:
            starting.over()
            return runtime


async def _create(settings: Settings, *, migrate: bool) -> Runtime:
    from consulta.bot.runtime import Runtime

    runtime = await Runtime.create(settings, migrate=migrate)
    try:
        if not migrate:
            await _require_current_schema(runtime, settings.database_url)
    except BaseException:
        await runtime.close()
        raise
    return runtime


async def _require_current_schema(runtime: Runtime, url: str) -> None:
    """Raise `NotUpToDate` unless the database is at the migrations' head: one query."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from consulta.storage.db import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config(url))
    quiet = logging.getLogger("alembic.runtime.migration")  # "Context impl…": not migrating
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        async with runtime.store.engine.connect() as conn:
            current = set(
                await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads())
            )
    finally:
        quiet.setLevel(level)
    if current == set(scripts.get_heads()):
        return
    unknown = current - {script.revision for script in scripts.walk_revisions()}
    if unknown:
        raise NotUpToDate(
            f"the database was migrated by a newer Consulta (revision {', '.join(sorted(unknown))})"
            ": upgrade this one"
        )
    raise NotUpToDate("the database is not up to date: run `consulta db upgrade`")


def _db_upgrade(settings: Settings) -> int:
    from consulta.storage.db import migrate
    from consulta.storage.errors import is_unavailable

    try:
        migrate(settings.database_url)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise Refusal(f"the database cannot be reached ({type(exc).__name__})") from None
    print("database is up to date")
    return 0


def _stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets: how the long-running processes stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from aiohttp import web

    from consulta.bot.server import build_app

    async with open_runtime(settings, migrate=True, wait=True) as runtime:
        runner = web.AppRunner(build_app(runtime), access_log=None)
        await runner.setup()
        try:
            stop = _stop_on_signals()
            await web.TCPSite(runner, "0.0.0.0", settings.port).start()
            await runtime.start_channels()
            log.info("serving on port %s (public URL %s)", settings.port, settings.public_url)
            await runtime.run_background(stop)
        finally:
            await runner.cleanup()
    return 0


async def _worker(settings: Settings, _args: argparse.Namespace) -> int:
    async with open_runtime(settings, migrate=False, wait=True) as runtime:
        stop = _stop_on_signals()
        if not settings.redis_url:
            log.warning("REDIS_URL is not set: this worker only sweeps its own in-process queue")
        probes = await _serve_probes(runtime, settings.metrics_port)
        log.info("worker started")
        try:
            await runtime.run_background(stop)
        finally:
            if probes is not None:
                await probes.cleanup()
    return 0


async def _serve_probes(runtime: Runtime, port: int) -> web.AppRunner | None:
    """The worker's `GET /metrics` and `GET /healthz` on `port` (METRICS_PORT; 0: none). A
    port it cannot listen on (a second worker on this machine took it) leaves the worker
    working, unscraped, and says so."""
    from aiohttp import web

    from consulta.bot.metrics import CONTENT_TYPE

    async def metrics(_request: web.Request) -> web.Response:
        body = runtime.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_request: web.Request) -> web.Response:
        checks = await runtime.health()
        healthy = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503
        )

    if not port:
        return None
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", port).start()
    except OSError as exc:
        await runner.cleanup()
        log.warning(
            "metrics not served: cannot listen on port %s (%s); give each worker on a machine "
            "its own METRICS_PORT, or 0",
            port,
            exc.strerror,
        )
        return None
    log.info("metrics and health on port %s", port)
    return runner


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.adapters import terminal
    from consulta.adapters.message import Inbound

    # Migrates: on a fresh machine, `make chat` is the first thing run.
    async with open_runtime(settings, migrate=True) as runtime:
        runtime.outbox.register(terminal.CHANNEL, terminal.TerminalSender())
        stop = asyncio.Event()
        sending = asyncio.create_task(runtime.outbox.run(stop, concurrency=1))
        print(
            "Consulta — type your answers; Ctrl-D to leave. /loc LAT,LON shares a location, "
            "/photo FILE sends a photo."
        )
        try:
            first = Inbound(
                terminal.CHANNEL, args.address, start=args.flow or "", language=args.lang
            )
            await runtime.inbox.handle(first)
            await runtime.queue.join()
            while True:
                try:
                    line = await asyncio.to_thread(input, "\n> ")
                except EOFError:
                    print()
                    break
                if not line.strip():
                    continue
                await runtime.inbox.handle(terminal.parse_line(line, args.address))
                await runtime.queue.join()
        finally:
            stop.set()
            await sending
    return 0


async def _telegram(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.adapters.telegram import CHANNEL, TelegramChannel
    from consulta.bot import telegram_setup as staff

    if not (settings.telegram.configured and settings.telegram.webhook_secret):
        raise Refusal("set TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET first", code=2)
    async with open_runtime(settings, migrate=False) as runtime:
        channel = next(c for c in runtime.channels if isinstance(c, TelegramChannel))
        action = args.telegram_command
        try:
            if action == "set-webhook":
                url = await staff.set_webhook(channel, settings.default_language)
                print(f"Telegram will post updates to {url}; commands set in es, en and fr")
            elif action == "groups" and args.groups_command == "add":
                known = await runtime.territories.codes()
                print(
                    await staff.register_group(
                        runtime.groups, args.chat, args.territory, args.lang, known
                    )
                )
            elif action == "groups":
                for g in await runtime.groups.all(CHANNEL):
                    state = "in" if g.active else "left"
                    print(
                        f"{g.address}\t{g.territory or '-'}\t{g.language or '-'}\t{state}\t"
                        f"{g.title or ''}"
                    )
            elif action == "invite":
                url = await staff.invite(
                    channel,
                    runtime.groups,
                    runtime.flows,
                    args.chat,
                    args.flow,
                    settings.default_language,
                )
                print(f"invitation posted; its button opens {url}")
            elif action == "poll":
                poll_id = await staff.post_poll(
                    channel,
                    runtime.groups,
                    runtime.flows,
                    args.chat,
                    args.flow,
                    args.question,
                    settings.default_language,
                )
                print(f"poll {poll_id} posted; votes are stored as answers to {args.question}")
        except staff.StaffError as exc:
            raise Refusal(str(exc)) from None
    return 0


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.bot.export import Export, Progress, write_export

    if args.output is None and args.format == "xlsx" and sys.stdout.isatty():
        raise Refusal("an XLSX file is binary: use -o FILE", code=2)
    async with open_runtime(settings, migrate=False) as runtime:
        flow = runtime.flows.get(args.flow)
        if flow is None:
            flows = ", ".join(sorted(runtime.flows))
            raise Refusal(f"no flow {args.flow!r}; flows: {flows}", code=2)
        export = Export(
            flow,
            language=args.lang or settings.default_language,
            codes=args.codes,
            since=args.since,
            until=args.until,
            territory=args.territory,
            status=args.status,
            include_previews=args.include_previews,
            contacts=args.with_contacts,
        )
        if export.contacts:
            log.warning(
                "export of flow %s WITH CONTACT DETAILS by the command line (user %s)",
                flow.id,
                _os_user(),
            )
        if args.output:
            with open(args.output, "wb") as out:  # noqa: ASYNC230 - the only task here
                await write_export(
                    runtime.store, export, args.format, out, long=args.long, progress=Progress()
                )
        else:
            await write_export(
                runtime.store,
                export,
                args.format,
                sys.stdout.buffer,
                long=args.long,
                progress=Progress(),
            )
            sys.stdout.buffer.flush()
    return 0


def _os_user() -> str:
    """Who ran the command, for the log of exports with personal data."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"


async def _contacts(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from consulta.storage.data_rights import DataRights

    async with open_runtime(settings, migrate=False) as runtime:
        rights = DataRights(runtime.store)
        found = await rights.contacts(args.address.removeprefix("whatsapp:"), args.channel)
        if not found:
            raise Refusal(f"nothing is held about {args.address}")
        if args.contacts_command == "show":
            described = [await rights.describe(c) for c in found]
            print(json.dumps(described, ensure_ascii=False, indent=2, default=str))
            return 0
        what = (
            "everything, answers included"
            if args.answers
            else ("address, name, profile, messages and pseudonym; answers stay, anonymous")
        )
        if not args.yes:
            print(f"would forget {len(found)} contact(s) ({what}); add --yes to do it")
            return 1
        for contact in found:
            await runtime.forget(contact, answers=args.answers)
            log.info("forgot contact %s (%s)", contact.pid, what)  # the pseudonym, not the address
        print(f"forgot {len(found)} contact(s): {what}")
    return 0


async def _staff(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from consulta.storage.staff import Staff

    async with open_runtime(settings, migrate=False) as runtime:
        staff = Staff(runtime.store)
        if args.staff_command == "add":
            try:
                token = await staff.add(args.name, args.role)
            except IntegrityError:
                raise Refusal(f"there is already an account named {args.name!r}") from None
            print(f"{args.name} ({args.role}). Their token, shown this once:\n{token}")
        elif args.staff_command == "revoke":
            if not await staff.revoke(args.name):
                raise Refusal(f"no active account named {args.name!r}")
            print(f"{args.name}'s token no longer works")
        else:
            for name, role, created, revoked in await staff.all():
                state = f"revoked {revoked:%Y-%m-%d}" if revoked else "active"
                print(f"{name}\t{role}\t{created:%Y-%m-%d}\t{state}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
