"""The `consulta` command: serve, worker, chat, flows check, db upgrade."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from bot.config import ConfigError, Settings

__all__ = ["main"]

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

    db = commands.add_parser("db", help="the database")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply migrations")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"consulta: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING if args.command == "chat" else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "flows":
        from flows.check import main as check_main

        return check_main(args.paths)
    if args.command == "db":
        from storage.db import migrate

        migrate(settings.database_url)
        print("database is up to date")
        return 0
    runner = {"serve": _serve, "worker": _worker, "chat": _chat, "telegram": _telegram}[
        args.command
    ]
    try:
        return asyncio.run(runner(settings, args))
    except KeyboardInterrupt:
        return 130


async def _runtime(settings: Settings, *, migrate: bool = True):  # type: ignore[no-untyped-def]
    from bot.runtime import Runtime
    from flows.check import FlowCheckError

    try:
        return await Runtime.create(settings, migrate=migrate)
    except FlowCheckError as exc:
        print(f"consulta: refusing to start, the flows have problems:\n{exc}", file=sys.stderr)
        return None
    except ValueError as exc:  # a channel setting that cannot be used
        print(f"consulta: {exc}", file=sys.stderr)
        return None


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


async def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from aiohttp import web

    from bot.server import build_app

    runtime = await _runtime(settings)
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
    runtime = await _runtime(settings, migrate=False)
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
    from adapters import terminal
    from adapters.message import Inbound

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


async def _telegram(settings: Settings, _args: argparse.Namespace) -> int:
    from adapters.telegram import TelegramChannel, TelegramConfig
    from bot.telegram_setup import set_webhook

    config = TelegramConfig.from_env(settings.env, settings.public_url)
    if config is None or not config.secret:
        print("consulta: set TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET first", file=sys.stderr)
        return 2
    channel = TelegramChannel(config)
    try:
        url = await set_webhook(channel, settings.default_language)
    finally:
        await channel.close()
    print(f"Telegram will post updates to {url}; commands set in es, en and fr")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
