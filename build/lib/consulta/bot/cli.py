"""The `consulta` command: serve, worker, chat, flows check, db upgrade."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from consulta.bot.config import ConfigError, Settings
from consulta.bot.logs import PrivateFormatter, configure_logging, secrets_of

__all__ = ["PrivateFormatter", "main"]  # PrivateFormatter: now in bot.logs

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
    except ConfigError as exc:
        print(f"consulta: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        logging.WARNING if args.command == "chat" else logging.INFO, secrets_of(settings)
    )
    if args.command == "flows":
        from consulta.flows.check import main as check_main

        return check_main(args.paths)
    if args.command == "db":
        from consulta.storage.db import migrate

        migrate(settings.database_url)
        print("database is up to date")
        return 0
    runner = {
        "serve": _serve,
        "worker": _worker,
        "chat": _chat,
        "telegram": _telegram,
        "export": _export,
        "contacts": _contacts,
        "staff": _staff,
    }[args.command]
    try:
        if args.command in ("serve", "worker"):
            with serving_loop() as loop:
                return loop.run(runner(settings, args))
        return asyncio.run(runner(settings, args))
    except KeyboardInterrupt:
        return 130


def serving_loop() -> asyncio.Runner:
    """The event loop of the long-running processes: uvloop's, which carries about twice the
    webhooks per core of asyncio's own."""
    import uvloop

    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


async def _runtime(settings: Settings, *, migrate: bool = True, wait: bool = False):  # type: ignore[no-untyped-def]
    """The process's runtime; with `wait` (serve, worker), a database that is not there yet is
    waited for, not a reason to exit."""
    from consulta.bot.outage import Outage
    from consulta.bot.runtime import Runtime
    from consulta.flows.check import FlowCheckError
    from consulta.storage.errors import is_unavailable

    starting = Outage("starting up: the database")
    while True:
        try:
            return await Runtime.create(settings, migrate=migrate)
        except FlowCheckError as exc:
            print(f"consulta: refusing to start, the flows have problems:\n{exc}", file=sys.stderr)
            return None
        except ValueError as exc:  # a channel setting that cannot be used
            print(f"consulta: {exc}", file=sys.stderr)
            return None
        except Exception as exc:
            if not (wait and is_unavailable(exc)):
                raise
            await starting.pause(exc)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


async def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from aiohttp import web

    from consulta.bot.server import build_app

    runtime = await _runtime(settings, wait=True)
    if runtime is None:
        return 1
    runner = web.AppRunner(build_app(runtime), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", settings.port).start()
    await runtime.start_channels()
    log.info("serving on port %s (public URL %s)", settings.port, settings.public_url)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    try:
        await runtime.run_background(stop)
    finally:
        await runner.cleanup()
        await runtime.close()
    return 0


async def _worker(settings: Settings, _args: argparse.Namespace) -> int:
    runtime = await _runtime(settings, migrate=False, wait=True)
    if runtime is None:
        return 1
    if not settings.redis_url:
        log.warning("REDIS_URL is not set: this worker only sweeps its own in-process queue")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    log.info("worker started")
    try:
        await runtime.run_background(stop)
    finally:
        await runtime.close()
    return 0


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.adapters import terminal
    from consulta.adapters.message import Inbound

    runtime = await _runtime(settings)
    if runtime is None:
        return 1
    runtime.outbox.register(terminal.CHANNEL, terminal.TerminalSender())
    stop = asyncio.Event()
    sending = asyncio.create_task(runtime.outbox.run(stop, concurrency=1))
    print(
        "Consulta — type your answers; Ctrl-D to leave. /loc LAT,LON shares a location, "
        "/photo FILE sends a photo."
    )
    try:
        first = Inbound(terminal.CHANNEL, args.address, start=args.flow or "", language=args.lang)
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
        await runtime.close()
    return 0


async def _telegram(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.adapters.telegram import CHANNEL, TelegramChannel
    from consulta.bot import telegram_setup as staff

    runtime = await _runtime(settings)
    if runtime is None:
        return 1
    channel = next((c for c in runtime.channels if isinstance(c, TelegramChannel)), None)
    try:
        if channel is None or not channel.config.secret:
            print(
                "consulta: set TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET first",
                file=sys.stderr,
            )
            return 2
        action = args.telegram_command
        if action == "set-webhook":
            url = await staff.set_webhook(channel, settings.default_language)
            print(f"Telegram will post updates to {url}; commands set in es, en and fr")
        elif action == "groups" and args.groups_command == "add":
            print(await staff.register_group(runtime.groups, args.chat, args.territory, args.lang))
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
        print(f"consulta: {exc}", file=sys.stderr)
        return 1
    finally:
        await runtime.close()
    return 0


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.bot.export import Export, Progress, write_export

    runtime = await _runtime(settings)
    if runtime is None:
        return 1
    try:
        flow = runtime.flows.get(args.flow)
        if flow is None:
            print(
                f"consulta: no flow {args.flow!r}; flows: {', '.join(sorted(runtime.flows))}",
                file=sys.stderr,
            )
            return 2
        if args.output is None and args.format == "xlsx" and sys.stdout.isatty():
            print("consulta: an XLSX file is binary: use -o FILE", file=sys.stderr)
            return 2
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
    finally:
        await runtime.close()
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

    from consulta.storage.repository import DataRights

    runtime = await _runtime(settings)
    if runtime is None:
        return 1
    rights = DataRights(runtime.store)
    try:
        found = await rights.contacts(args.address.removeprefix("whatsapp:"), args.channel)
        if not found:
            print(f"consulta: nothing is held about {args.address}", file=sys.stderr)
            return 1
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
    finally:
        await runtime.close()


async def _staff(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from consulta.storage.repository import Staff

    runtime = await _runtime(settings)
    if runtime is None:
        return 1
    staff = Staff(runtime.store)
    try:
        if args.staff_command == "add":
            try:
                token = await staff.add(args.name, args.role)
            except IntegrityError:
                print(f"consulta: there is already an account named {args.name!r}", file=sys.stderr)
                return 1
            print(f"{args.name} ({args.role}). Their token, shown this once:\n{token}")
        elif args.staff_command == "revoke":
            if not await staff.revoke(args.name):
                print(f"consulta: no active account named {args.name!r}", file=sys.stderr)
                return 1
            print(f"{args.name}'s token no longer works")
        else:
            for name, role, created, revoked in await staff.all():
                state = f"revoked {revoked:%Y-%m-%d}" if revoked else "active"
                print(f"{name}\t{role}\t{created:%Y-%m-%d}\t{state}")
    finally:
        await runtime.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
