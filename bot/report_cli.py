"""`consulta reports …` and `consulta liaisons …`: staff follow neighbourhood reports through their
statuses, and register the community liaisons who make many of them."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consulta.bot.config import Settings
    from consulta.flows.model import Flow
    from consulta.storage.liaisons import LiaisonIn, LiaisonInfo
    from consulta.storage.reports import Report

__all__ = ["add_parser", "read_liaisons_csv", "report_categories", "run"]

STATUSES = ("received", "in_review", "in_progress", "resolved", "rejected", "duplicate")
SETTABLE = STATUSES[1:]
LANGS = ("es", "en", "fr")
CHANNELS = ("whatsapp", "sms", "telegram")
CSV_COLUMNS = ("address", "name", "territory", "lang")  # and, optionally, channel
MAX_CSV = 5 * 1024 * 1024


def add_parser(commands: Any) -> None:
    reports = commands.add_parser("reports", help="neighbourhood reports and their statuses")
    actions = reports.add_subparsers(dest="reports_command", required=True, metavar="ACTION")
    change = actions.add_parser("set", help="change a report's status (the reporter is told)")
    change.add_argument("folio")
    change.add_argument("status", choices=SETTABLE)
    change.add_argument("--note", help="what the reporter is told with it")
    change.add_argument("--duplicate-of", metavar="FOLIO", help="with duplicate: the original")
    change.add_argument("--by", help="who made the change (default: your login name)")
    listing = actions.add_parser("list", help="reports, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--territory")
    listing.add_argument("--category", help="a report category's key (water_leak, pothole…)")
    listing.add_argument("--since", type=_day, help="made on or after (YYYY-MM-DD, in TIMEZONE)")
    show = actions.add_parser("show", help="one report and every change: who, when, note")
    show.add_argument("folio")

    liaisons = commands.add_parser("liaisons", help="community liaisons, recognised on any channel")
    liaison_actions = liaisons.add_subparsers(
        dest="liaisons_command", required=True, metavar="ACTION"
    )
    add = liaison_actions.add_parser("add", help="register one (or update the one registered)")
    add.add_argument("address", help="a phone number (+52…, or national) or a Telegram chat id")
    add.add_argument("--name", required=True)
    add.add_argument("--territory", required=True, help="a territory code")
    add.add_argument("--lang", choices=LANGS)
    add.add_argument("--channel", choices=CHANNELS, help="only this channel (default: any)")
    load = liaison_actions.add_parser(
        "import", help="a CSV file: address,name,territory,lang (all rows or none)"
    )
    load.add_argument("file", type=Path)
    shown = liaison_actions.add_parser("list", help="the liaisons, by territory")
    shown.add_argument("--territory")
    remove = liaison_actions.add_parser("remove", help="stop recognising one")
    remove.add_argument("address")


def _day(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from None


def report_categories(flows: Mapping[str, Flow]) -> set[str]:
    """Every category key the report flows offer (the choices of their `category` question)."""
    from consulta.storage.reports import CATEGORY

    return {
        choice.key
        for flow in flows.values()
        if flow.is_report
        for name, state in flow.states.items()
        if (state.key or name) == CATEGORY
        for choice in state.choices
    }


def read_liaisons_csv(text: str) -> list[LiaisonIn]:
    """Liaisons from a CSV with a header: address, name, territory, lang (may be empty) and,
    optionally, channel. Raises LiaisonError naming what is wrong."""
    from consulta.storage.liaisons import LiaisonError, LiaisonIn

    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [(name or "").strip().lower() for name in reader.fieldnames or ()]
    missing = [c for c in CSV_COLUMNS[:3] if c not in header]
    if missing:
        raise LiaisonError(f"the CSV needs a header with {', '.join(CSV_COLUMNS)}")
    reader.fieldnames = header
    found = []
    for row in reader:
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # a blank line
        found.append(
            LiaisonIn(
                address=row.get("address") or "",
                name=row.get("name") or "",
                territory=row.get("territory") or "",
                language=(row.get("lang") or "").strip() or None,
                channel=(row.get("channel") or "").strip().lower() or None,
            )
        )
    return found


def _who(given: str | None) -> str:
    if given and given.strip():
        return given.strip()[:128]
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"


def _when(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.timezone).strftime("%Y-%m-%d %H:%M")


def _report_line(report: Report, settings: Settings) -> str:
    return "\t".join(
        (
            report.folio,
            report.status,
            report.category or "-",
            report.territory or "-",
            _when(report.received_at, settings),
            "liaison" if report.liaison else "resident",
        )
    )


def _liaison_line(liaison: LiaisonInfo) -> str:
    return "\t".join(
        (
            liaison.address,
            liaison.channel or "any",
            liaison.name,
            liaison.territory,
            liaison.language or "-",
        )
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from consulta.bot.cli import Refusal, open_runtime
    from consulta.storage.liaisons import LiaisonError
    from consulta.storage.reports import ReportError

    async with open_runtime(settings, migrate=False) as runtime:
        try:
            if args.command == "reports":
                await _reports(runtime, settings, args)
            else:
                await _liaisons(runtime, args)
        except (ReportError, LiaisonError) as exc:
            raise Refusal(str(exc)) from None
    return 0


async def _reports(runtime: Any, settings: Settings, args: argparse.Namespace) -> None:
    from consulta.bot.report_news import tell_reporter
    from consulta.storage.reports import ReportError, Reports

    reports = Reports(runtime.store.engine, settings.default_language)
    if args.reports_command == "set":
        notice = await reports.set_status(
            args.folio,
            args.status,
            note=args.note,
            duplicate_of=args.duplicate_of,
            by=_who(args.by),
        )
        of = f" of {notice.duplicate_of}" if notice.duplicate_of else ""
        print(f"{notice.folio}: {notice.previous} → {notice.status}{of}")
        told = await tell_reporter(runtime.inbox, notice)
        if not told:
            print("the reporter opted out: not told")
        elif notice.channel in runtime.outbox.senders:  # this process reaches their channel
            await runtime.outbox.deliver_all(told)
            print("the reporter was told")
        else:
            print("the reporter will be told (queued for `consulta worker`)")
    elif args.reports_command == "list":
        if args.category is not None:
            known = report_categories(runtime.flows)
            if args.category not in known:
                raise ReportError(
                    f"unknown category {args.category!r}: one of {', '.join(sorted(known))}"
                )
        since = args.since
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=settings.timezone)
        found = await reports.all(
            status=args.status,
            territory=args.territory,
            category=args.category,
            since=since.astimezone(UTC) if since else None,
        )
        for report in found:
            print(_report_line(report, settings))
    else:
        detail = await reports.get(args.folio)
        print(_report_line(detail.report, settings))
        for question, value in detail.answers.items():
            print(f"  {question}: {value}")
        print("  changes:" if detail.changes else "  no changes yet")
        for change in detail.changes:
            of = f" of {change.duplicate_of}" if change.duplicate_of else ""
            note = f" — {change.note}" if change.note else ""
            print(f"  {_when(change.at, settings)}\t{change.status}{of}\t{change.by}{note}")


async def _liaisons(runtime: Any, args: argparse.Namespace) -> None:
    from consulta.storage.liaisons import LiaisonError, LiaisonIn, Liaisons

    liaisons = Liaisons(runtime.store.engine)
    if args.liaisons_command == "add":
        given = LiaisonIn(args.address, args.name, args.territory, args.lang, args.channel)
        liaison, created = await liaisons.add(given)
        print(f"{'added' if created else 'updated'}: {_liaison_line(liaison)}")
    elif args.liaisons_command == "import":
        try:
            raw = args.file.read_bytes()[: MAX_CSV + 1]
            if len(raw) > MAX_CSV:
                raise LiaisonError(f"{args.file} is over {MAX_CSV // 1024 // 1024} MB")
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LiaisonError(f"cannot read {args.file}: {exc}") from None
        added, updated = await liaisons.add_many(read_liaisons_csv(text))
        print(f"{added} added, {updated} updated")
    elif args.liaisons_command == "list":
        for liaison in await liaisons.all(args.territory):
            print(_liaison_line(liaison))
    elif not await liaisons.remove(args.address):
        raise LiaisonError(f"no liaison with the address {args.address}")
    else:
        print(f"removed {args.address}")
