"""Exports for the planning team: CSV that Excel opens with its accents, XLSX, JSON lines and
GeoJSON — streamed, pseudonymous unless an admin asks for contact details, and with no cell
that a spreadsheet would run as a formula. A report flow's exports carry each report's status
and liaison flag too."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import IO, Any

from tqdm import tqdm

from consulta.flows.i18n import LANGUAGES
from consulta.flows.model import Flow, State
from consulta.storage.exports import ExportRow, count_submissions, stream_submissions
from consulta.storage.reports import CATEGORY
from consulta.storage.store import Store

__all__ = ["FORMATS", "Export", "Progress", "neutralise", "write_export"]

FORMATS = ("csv", "xlsx", "jsonl", "geojson")
PREVIEW_CHANNELS = ("simulator",)  # staff previews are not the consultation's data
# OWASP CSV injection: a spreadsheet runs cells starting with these.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
FIXED = (
    "submission",
    "contact",
    "flow",
    "version",
    "status",
    "channel",
    "language",
    "territory",
    "folio",
    "started_at",
    "completed_at",
)
CONTACT_DETAILS = ("address", "name")  # right after "contact", only when an admin asks
# Right after "folio", for report flows only. Not "status": that column is the submission's
# (complete, partial), which a report's status (received, in_progress, …) must not overwrite.
REPORT_COLUMNS = ("report_status", "liaison")


def neutralise(value: Any) -> Any:
    """Text a spreadsheet would run as a formula gets a leading apostrophe; numbers stay."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@dataclass(frozen=True)
class Export:
    flow: Flow
    language: str = "es"
    codes: bool = False  # choice keys instead of labels
    since: datetime | None = None
    until: datetime | None = None
    territory: str | None = None
    status: str = "complete"
    include_previews: bool = False
    contacts: bool = False  # the residents' addresses and names: admins only, and logged

    @cached_property
    def questions(self) -> list[State]:
        return [s for s in self.flow.states.values() if s.kind.waits]

    @property
    def reports(self) -> bool:
        return self.flow.is_report

    @cached_property
    def category(self) -> State | None:
        """The question whose answer is a report's category (report flows only)."""
        if not self.reports:
            return None
        return next((q for q in self.questions if q.question_key == CATEGORY), None)

    @cached_property
    def fixed_columns(self) -> tuple[str, ...]:
        columns: tuple[str, ...] = FIXED
        if self.reports:
            at = columns.index("folio") + 1
            columns = (*columns[:at], *REPORT_COLUMNS, *columns[at:])
        if self.contacts:
            at = columns.index("contact") + 1
            columns = (*columns[:at], *CONTACT_DETAILS, *columns[at:])
        return columns

    def _filters(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "territory": self.territory,
            "status": self.status,
            "channels_excluded": () if self.include_previews else PREVIEW_CHANNELS,
        }

    def rows(self, store: Store) -> AsyncIterator[ExportRow]:
        return stream_submissions(
            store, self.flow.id, contacts=self.contacts, reports=self.reports, **self._filters()
        )

    async def count(self, store: Store) -> int:
        """How many submissions the export will hold (for the progress bar)."""
        return await count_submissions(store, self.flow.id, **self._filters())

    def header(self) -> list[str]:
        return [*self.fixed_columns, *(q.question_key for q in self.questions)]

    def contact_details(self, row: ExportRow) -> list[str]:
        return [row.address or "", row.name or ""] if self.contacts else []

    def report(self, row: ExportRow) -> list[Any]:
        return [row.report_status or "", bool(row.liaison)] if self.reports else []

    def fixed(self, row: ExportRow) -> list[Any]:
        return [
            row.id,
            row.contact,
            *self.contact_details(row),
            row.flow_id,
            row.flow_version,
            row.status,
            row.channel,
            row.language or "",
            row.territory or "",
            row.folio or "",
            *self.report(row),
            _time(row.started_at),
            _time(row.completed_at),
        ]

    def cell(self, state: State, value: Any) -> Any:
        """An answer as a reader wants it: labels in the export's language, numbers as numbers."""
        if value is None:
            return ""
        return state.kind.export_cell(state, value, self.language, self.codes)

    def cells(self, row: ExportRow) -> list[Any]:
        answers = [
            self.cell(q, row.answers.get(q.question_key, (None,))[0]) for q in self.questions
        ]
        return [neutralise(v) for v in (*self.fixed(row), *answers)]


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


class Progress:
    """A progress bar on stderr while a long export runs in a terminal; silent otherwise, so
    a redirected stderr or a piped export never carries it."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.shown = self.stream.isatty()
        self.count = 0
        self.bar: tqdm[Any] | None = None

    def start(self, total: int) -> None:
        if self.shown:
            self.bar = tqdm(
                total=total, file=self.stream, desc="exporting", unit=" submissions", leave=True
            )

    def step(self) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update()

    def done(self) -> None:
        if self.bar is not None:
            # Submissions that came or went since the count: the bar still ends at what was written.
            self.bar.total = self.count
            self.bar.refresh()
            self.bar.close()


async def write_export(
    store: Store,
    export: Export,
    fmt: str,
    out: IO[bytes],
    *,
    long: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write the export to a binary stream. Returns how many submissions it holds."""
    writers: dict[str, Callable[..., Awaitable[None]]] = {
        "csv": _csv,
        "xlsx": _xlsx,
        "jsonl": _jsonl,
        "geojson": _geojson,
    }
    writer = writers[fmt]
    progress = progress or Progress(io.StringIO())
    if progress.shown:  # counting costs a query: only for a bar someone will see
        progress.start(await export.count(store))
    if fmt == "csv":
        await writer(store, export, out, progress, long=long)
    else:
        await writer(store, export, out, progress)
    progress.done()
    return progress.count


async def _csv(
    store: Store, export: Export, out: IO[bytes], progress: Progress, *, long: bool
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    out.write("\ufeff".encode())  # the byte-order mark: Excel then reads UTF-8 accents right

    def flush() -> None:
        out.write(buffer.getvalue().encode("utf-8"))
        buffer.seek(0)
        buffer.truncate()

    if long:
        writer.writerow(
            [
                "submission",
                "contact",
                *(CONTACT_DETAILS if export.contacts else ()),
                "flow",
                "version",
                "territory",
                "question",
                "answer",
                "code",
                "raw_text",
                "answered_at",
            ]
        )
    else:
        writer.writerow(export.header())
    async for row in export.rows(store):
        if long:
            for state in export.questions:
                if state.question_key not in row.answers:
                    continue
                value, raw, when = row.answers[state.question_key]
                code = value if not isinstance(value, dict | list) else json.dumps(value)
                writer.writerow(
                    [
                        neutralise(v)
                        for v in (
                            row.id,
                            row.contact,
                            *export.contact_details(row),
                            row.flow_id,
                            row.flow_version,
                            row.territory or "",
                            state.question_key,
                            export.cell(state, value),
                            code,
                            raw or "",
                            _time(when),
                        )
                    ]
                )
        else:
            writer.writerow(export.cells(row))
        progress.step()
        if buffer.tell() > 64 * 1024:
            flush()
    flush()


async def _jsonl(store: Store, export: Export, out: IO[bytes], progress: Progress) -> None:
    async for row in export.rows(store):
        record = dict(zip(export.fixed_columns, export.fixed(row), strict=True))
        record["answers"] = {q: value for q, (value, _, _) in row.answers.items()}
        out.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        progress.step()


async def _geojson(store: Store, export: Export, out: IO[bytes], progress: Progress) -> None:
    """One point feature per location answer with a pin, readable as a layer in QGIS."""
    out.write(b'{"type": "FeatureCollection", "features": [\n')
    first = True
    async for row in export.rows(store):
        progress.step()
        for state in export.questions:
            value = row.answers.get(state.question_key, (None,))[0]
            if not (isinstance(value, dict) and "latitude" in value):
                continue
            properties = dict(zip(export.fixed_columns, export.fixed(row), strict=True))
            properties |= {"question": state.question_key, "label": value.get("label") or ""}
            if export.category is not None:  # a report's: what it is about, as a label
                chosen = row.answers.get(CATEGORY, (None,))[0]
                properties[CATEGORY] = export.cell(export.category, chosen)
            feature = {
                "type": "Feature",
                "geometry": {
                    "type": "Point",
                    "coordinates": [value["longitude"], value["latitude"]],
                },
                "properties": properties,
            }
            out.write((b"" if first else b",\n") + json.dumps(feature, ensure_ascii=False).encode())
            first = False
    out.write(b"\n]}\n")


async def _xlsx(store: Store, export: Export, out: IO[bytes], progress: Progress) -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)  # rows go to disk as they come: memory stays flat
    sheet = book.create_sheet("submissions")
    sheet.append(export.header())
    async for row in export.rows(store):
        sheet.append(export.cells(row))
        progress.step()
    columns = book.create_sheet("columns")
    columns.append(
        [
            "column",
            "type",
            *(f"question ({lang})" for lang in LANGUAGES),
            *(f"choices ({lang})" for lang in LANGUAGES),
        ]
    )
    for name in export.fixed_columns:
        kind = (
            "contact details"
            if name in CONTACT_DETAILS
            else "report"
            if name in REPORT_COLUMNS
            else "submission"
        )
        columns.append([name, kind])
    for state in export.questions:
        choices = [
            "; ".join(f"{c.key} = {c.label.get_text(lang)}" for c in state.choices)
            for lang in LANGUAGES
        ]
        columns.append(
            [
                state.question_key,
                state.kind.name,
                *(neutralise(state.text.get_text(lang)) for lang in LANGUAGES),
                *choices,
            ]
        )
    book.save(out)
