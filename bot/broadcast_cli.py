"""`consulta broadcast …`: staff create, follow, pause, resume and cancel broadcasts."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consulta.bot.broadcasts import Plan
    from consulta.bot.config import Settings
    from consulta.storage.broadcasts import Audience, BroadcastInfo

__all__ = ["add_parser", "run"]

LANGS = ("es", "en", "fr")
CHANNELS = ("whatsapp", "sms", "telegram")
FOLLOW_EVERY = 1.0  # seconds between refreshes of `show --follow`


def add_parser(commands: Any) -> None:
    broadcast = commands.add_parser("broadcast", help="messages and survey invitations to many")
    actions = broadcast.add_subparsers(dest="broadcast_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="define one; prints its id and recipients")
    what = create.add_argument_group("content (a survey, or a message in each language)")
    what.add_argument("--flow", help="invite to this survey: its first question is the message")
    for lang in LANGS:
        what.add_argument(f"--text-{lang}", help=f"the message in {lang}")
    what.add_argument("--message", type=Path, help="a YAML file with the texts: es, en, fr")
    who = create.add_argument_group("audience (filters AND together; a repeated one ORs)")
    who.add_argument("--channel", action="append", choices=CHANNELS, default=[])
    who.add_argument("--territory", action="append", default=[])
    who.add_argument("--lang", action="append", choices=LANGS, default=[])
    who.add_argument(
        "--where", action="append", default=[], metavar="FIELD=VALUE", help="a profile field"
    )
    who.add_argument("--answered", action="append", default=[], metavar="FLOW")
    who.add_argument("--not-answered", action="append", default=[], metavar="FLOW")
    who.add_argument(
        "--groups", action="store_true", help="Telegram neighbourhood groups (by --territory)"
    )
    create.add_argument(
        "--at", help="when to send (YYYY-MM-DDTHH:MM, in TIMEZONE unless it has an offset)"
    )
    create.add_argument("--template", help="a TWILIO_TEMPLATES name for closed WhatsApp windows")
    create.add_argument("--dry-run", action="store_true", help="count and estimate; change nothing")

    actions.add_parser("list", help="every broadcast, newest first")
    show = actions.add_parser("show", help="progress: counts by state, funnel, ETA")
    show.add_argument("id", type=int)
    show.add_argument("--follow", action="store_true", help="refresh until it is finished")
    for name, text in (("pause", "pause"), ("resume", "resume"), ("cancel", "cancel")):
        action = actions.add_parser(name, help=f"{text} a broadcast")
        action.add_argument("id", type=int)


def _audience(args: argparse.Namespace) -> Audience:
    from consulta.storage.broadcasts import Audience, BroadcastError

    where = []
    for item in args.where:
        field, sep, value = item.partition("=")
        if not sep or not field.strip() or not value.strip():
            raise BroadcastError(f"--where takes FIELD=VALUE, not {item!r}")
        where.append((field.strip(), value.strip()))
    return Audience(
        channels=tuple(args.channel),
        territories=tuple(args.territory),
        languages=tuple(args.lang),
        where=tuple(where),
        answered=tuple(args.answered),
        not_answered=tuple(args.not_answered),
        groups=args.groups,
    )


def _texts(args: argparse.Namespace) -> dict[str, str]:
    from consulta.storage.broadcasts import BroadcastError

    texts: dict[str, str] = {}
    if args.message is not None:
        import yaml

        try:
            loaded = yaml.safe_load(args.message.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise BroadcastError(f"cannot read {args.message}: {exc}") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise BroadcastError(f"{args.message}: expected es:, en:, fr: with a text each")
        texts.update({str(k): v for k, v in loaded.items()})
    for lang in LANGS:
        given = getattr(args, f"text_{lang}")
        if given:
            texts[lang] = given
    return texts


def _at(text: str | None, settings: Settings) -> datetime | None:
    from consulta.storage.broadcasts import BroadcastError

    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BroadcastError(f"--at: not a time: {text!r} (use YYYY-MM-DDTHH:MM)") from None
    return (value if value.tzinfo else value.replace(tzinfo=settings.timezone)).astimezone(UTC)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.bot import broadcasts as bc
    from consulta.bot.cli import Refusal, open_runtime
    from consulta.storage.broadcasts import BroadcastError

    async with open_runtime(settings, migrate=False) as runtime:
        store = runtime.broadcasts
        try:
            if args.broadcast_command == "create":
                audience, texts = _audience(args), _texts(args)
                at = _at(args.at, settings)
                options: dict[str, Any] = {
                    "flow_id": args.flow,
                    "texts": texts,
                    "template": args.template,
                    "send_at": at,
                }
                if args.dry_run:
                    plan = await bc.plan(store, settings, runtime.engine, audience, **options)
                    _print_plan(plan)
                    return 0
                info = await bc.create(store, settings, runtime.engine, audience, **options)
                when = "now" if at is None else info.send_at.astimezone(settings.timezone)
                print(f"broadcast {info.id}: {info.recipients} recipients, sending {when}")
            elif args.broadcast_command == "list":
                for info in await store.all():
                    print(_line(info, settings))
            elif args.broadcast_command == "show":
                await _show(runtime, settings, args.id, follow=args.follow)
            else:
                change = getattr(store, args.broadcast_command)
                info = await change(args.id)
                print(f"broadcast {info.id}: {info.status}")
        except BroadcastError as exc:
            raise Refusal(str(exc)) from None
    return 0


def _print_plan(plan: Plan) -> None:
    print("would send to:")
    for (channel, lang), n in sorted(plan.counts.items()):
        print(f"  {channel:<9} {lang}  {n}")
    print(f"  total        {plan.total}")
    print(f"estimated time to send: {_duration(plan.seconds)} (changed nothing)")


def _line(info: BroadcastInfo, settings: Settings) -> str:
    what = f"survey {info.flow_id}" if info.kind == "flow" else "message"
    when = info.send_at.astimezone(settings.timezone).strftime("%Y-%m-%d %H:%M")
    return f"{info.id}\t{info.status}\t{what}\t{info.recipients} recipients\t{when}"


async def _show(runtime: Any, settings: Settings, broadcast_id: int, *, follow: bool) -> None:
    from consulta.bot import broadcasts as bc

    bar = follow and sys.stdout.isatty()
    while True:
        info = await runtime.broadcasts.get(broadcast_id)
        progress = await runtime.broadcasts.progress(broadcast_id, datetime.now(UTC))
        channels = set(info.audience.channels) or {"whatsapp", "sms", "telegram"}
        eta = bc.eta_seconds(progress, settings, channels)
        if bar:
            done = info.recipients - progress.by_state["queued"] - progress.by_state["sending"]
            width = 40
            filled = width * done // max(1, info.recipients)
            sys.stdout.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{info.recipients}"
                f"  {info.status}  ETA {_duration(eta)} "
            )
            sys.stdout.flush()
        else:
            print(_line(info, settings))
            for state in ("queued", "sending", "failed", "skipped"):
                print(f"  {state:<10} {progress.by_state[state]}")
            for reason, n in sorted(progress.failed_by_reason.items()):
                print(f"    failed: {reason}: {n}")
            for reason, n in sorted(progress.skipped_by_reason.items()):
                print(f"    skipped: {reason}: {n}")
            stages = bc.funnel(progress, survey=info.kind == "flow")
            print("  funnel     " + " → ".join(f"{k} {n}" for k, n in stages.items()))
            if info.status == "sending":
                print(f"  ETA        {_duration(eta)}")
        if not follow or info.status in ("done", "cancelled"):
            if bar:
                print()
            return
        await asyncio.sleep(FOLLOW_EVERY)
