"""Telling reporters what became of their report: each status change, in their language, on
their channel — inside WhatsApp's window as text, outside it by the `report_status` template,
else counted as not deliverable (the reply fails as "window"), never silently dropped."""

from __future__ import annotations

from consulta.bot.inbox import Inbox
from consulta.flows.i18n import t
from consulta.flows.reports import STATUS_LABELS
from consulta.storage.reports import Notice

__all__ = ["TEMPLATE", "news", "tell_reporter"]

TEMPLATE = "report_status"  # the TWILIO_TEMPLATES name used outside WhatsApp's window
OPEN311 = "open311"  # the channel of reports posted through Open311: no resident to tell


def news(notice: Notice) -> str:
    """The message: the folio and its new status, the staff's note, the original's folio."""
    lang = notice.language
    lines = [
        t(lang, "report-news", folio=notice.folio, status=t(lang, STATUS_LABELS[notice.status]))
    ]
    if notice.duplicate_of:
        lines.append(t(lang, "report-news-duplicate", original=notice.duplicate_of))
    if notice.note:
        lines.append(t(lang, "report-news-note", note=notice.note))
    return "\n".join(lines)


async def tell_reporter(inbox: Inbox, notice: Notice) -> list[int]:
    """Queue the news for the reporter (after whatever was still on its way to them); the ids
    of the messages queued — none when they opted out, or when the report came through
    Open311 (the system that posted it reads its status there)."""
    if notice.channel == OPEN311:
        return []
    return await inbox.tell(notice.contact_id, news(notice), template=TEMPLATE)
