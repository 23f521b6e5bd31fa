"""The per-contact serial inbox: record every message durably first, then run one resident's
messages through the engine strictly one at a time and in order, even across processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from consulta.adapters.message import Attachment, Button, Channel, Inbound, Outbound
from consulta.bot.metrics import Metrics
from consulta.bot.outbound import INBOUND_AT, Outbox
from consulta.flows.engine import (
    CompleteSubmission,
    Conversation,
    DeclineSubmission,
    Effect,
    Engine,
    ForgetMe,
    Location,
    Media,
    Message,
    OptOut,
    Prompt,
    RecordConsent,
    Resident,
    SaveAnswer,
    SetLanguage,
    SetProfile,
    ShowMyData,
    ShowReports,
    StartSubmission,
)
from consulta.flows.i18n import t
from consulta.flows.reports import STATUS_LABELS
from consulta.storage.data_rights import DataRights
from consulta.storage.errors import is_unavailable
from consulta.storage.liaisons import Liaisons
from consulta.storage.media import MediaStore
from consulta.storage.models import utcnow
from consulta.storage.records import ContactInfo, InboxView
from consulta.storage.reports import Reports
from consulta.storage.state import Held, StateStore
from consulta.storage.store import Store
from consulta.storage.territories import Territories
from consulta.storage.turns import Changes

__all__ = ["Inbox", "Received"]

log = logging.getLogger(__name__)

LANGUAGE_NAMES = {"es": "Español", "en": "English", "fr": "Français"}
FLOOD_BACKLOG = 20  # a resident with more messages waiting than this is flooding…
FLOOD_PAUSE = 0.02  # …and is handled at most 50 messages a second
MY_REPORTS_SHOWN = 5  # "my reports" lists the latest few…
HISTORY_SHOWN = 3  # …each with its last changes
# Answers naming a place, matched to a territory by name (a pin is placed by its outline).
PLACE_QUESTIONS = frozenset({"neighbourhood", "municipality", "colonia"})
# A broadcast's survey invitation is answered within this; later, a message starts afresh.
INVITATION_TTL = timedelta(days=7)


@dataclass(frozen=True)
class Received:
    contact_id: int | None
    message_id: int | None  # None: a duplicate of a message already recorded

    @property
    def duplicate(self) -> bool:
        return self.message_id is None


def to_message(inbound: Inbound) -> Message:
    place = inbound.place
    return Message(
        text=inbound.text,
        payload=inbound.payload,
        location=Location(place.latitude, place.longitude, place.label) if place else None,
        media=tuple(Media(a.url, a.content_type) for a in inbound.attachments),
        start=inbound.start,
        language=inbound.language,
        language_hint=inbound.language_hint,
    )


def to_outbound(contact: ContactInfo, prompt: Prompt, language: str | None) -> Outbound:
    return Outbound(
        channel=contact.channel,
        address=contact.address,
        text=prompt.text,
        buttons=tuple(Button(o.payload, o.label) for o in prompt.options),
        expects=prompt.expects,
        language=language,
        last_inbound_at=contact.last_inbound_at.timestamp() if contact.last_inbound_at else None,
        button_label=_button_label(prompt, language or "es"),
    )


def _button_label(prompt: Prompt, language: str) -> str | None:
    if prompt.options:
        return t(language, "button-choose")
    if prompt.expects == "location":
        return t(language, "button-share-location")
    return None


def apply_effect(tx: Changes, effect: Effect) -> None:
    match effect:
        case StartSubmission():
            tx.start_submission(
                effect.submission,
                effect.flow,
                effect.version,
                effect.language,
                effect.territory,
                effect.folio,
            )
        case SaveAnswer():
            tx.save_answer(
                effect.submission, effect.question, effect.state, effect.raw, effect.value
            )
        case CompleteSubmission():
            tx.complete_submission(effect.submission)
        case DeclineSubmission():
            tx.decline_submission(effect.submission)
        case SetProfile():
            tx.set_profile(effect.field, effect.value)
        case SetLanguage():
            tx.set_language(effect.language)
        case RecordConsent():
            tx.record_consent(effect.submission, effect.flow, effect.given, effect.notice_version)
        case OptOut():
            tx.opt_out()


class Inbox:
    def __init__(
        self,
        store: Store,
        states: StateStore,
        engine: Engine,
        outbox: Outbox,
        clock: Callable[[], datetime] = utcnow,
        media: MediaStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store, self.states, self.engine, self.outbox = store, states, engine, outbox
        self.territories: Territories | None = None  # the catalogue answers are placed in
        self.clock = clock
        self.media = media
        self.metrics = metrics if metrics is not None else outbox.metrics
        self.channels: dict[str, Channel] = {}

    async def receive(self, inbound: Inbound) -> Received:
        """Record a message durably (once per provider id). Nothing is processed yet."""
        contact_id, message_id = await self.store.record_inbound(
            inbound.channel,
            inbound.address,
            inbound.provider_id,
            inbound.text,
            inbound.to_dict(),
            name=inbound.name,
            extra=inbound.extra or None,
        )
        return Received(contact_id, message_id)

    async def process(self, contact_id: int) -> int:
        """Handle every recorded, unhandled message of one contact, in order. Returns how many."""
        handled = 0
        async with self.states.hold(contact_id) as held:
            if held is None:  # another live process holds them, and will look again for us
                return 0
            present = True
            while present:
                while True:
                    view = await self.store.inbox(contact_id)
                    if view.next is None:
                        break
                    message_id, payload = view.next
                    present = await self._handle(held, view, message_id, Inbound.from_dict(payload))
                    handled += 1
                    if not present or view.waiting <= 1:
                        break
                    # The next message builds on `held.state`; written back when letting go
                    # (each turn's cursor is in the database already, should we die first).
                    if view.waiting > FLOOD_BACKLOG:
                        # Nobody types this fast: a script, or a phone stuck resending. Its
                        # backlog is worked through at a pace that leaves the batches to the
                        # other residents (measured: python -m benchmarks.faults --case flood).
                        await asyncio.sleep(FLOOD_PAUSE)
                if await held.done():
                    break
                # Another process received a message of theirs while we held them: look again.
        return handled

    async def handle(self, inbound: Inbound) -> Received:
        """Record and process at once (terminal, simulator, tests)."""
        received = await self.receive(inbound)
        if received.contact_id is not None:
            await self.process(received.contact_id)
        return received

    async def _known_territories(self, effects: list[Effect]) -> list[Effect]:
        """A deep link's territory that the catalogue does not know is ignored (and said)."""
        if self.territories is None or not any(
            isinstance(e, StartSubmission) and e.territory for e in effects
        ):
            return effects
        known = await self.territories.known()
        kept: list[Effect] = []
        for effect in effects:
            if isinstance(effect, StartSubmission) and effect.territory and known:
                if effect.territory not in known:
                    log.info(
                        "a link named territory %r, which the catalogue lacks: ignored",
                        effect.territory[:64],
                    )
                    effect = replace(effect, territory=None)
            kept.append(effect)
        return kept

    async def _liaisons_territory(
        self, contact: ContactInfo, finished: Conversation, places: dict[str, str]
    ) -> None:
        """A liaison's report that nothing placed (no pin, no known place) is placed in their
        territory."""
        flow = self.engine.flows.get(finished.flow or "")
        if flow is None or not flow.is_report or not finished.submission:
            return
        liaison = await Liaisons(self.store.engine).liaison_for(contact.channel, contact.address)
        if liaison is not None:
            places.setdefault(finished.submission, liaison.territory)

    async def _places(self, effects: list[Effect]) -> dict[str, str]:
        """The territory each answer places its submission in: a pin inside a territory's
        outline, or a typed place or neighbourhood whose name matches one (a submission that
        already has one, from a deep link or a group, keeps it)."""
        if self.territories is None:
            return {}
        found: dict[str, str] = {}
        for effect in effects:
            if not isinstance(effect, SaveAnswer) or effect.submission in found:
                continue
            value, code = effect.value, None
            try:
                if isinstance(value, dict) and "latitude" in value and "longitude" in value:
                    code = await self.territories.locate(value["latitude"], value["longitude"])
                elif isinstance(value, dict) and isinstance(value.get("text"), str):
                    code = await self.territories.match(value["text"])
                elif effect.question in PLACE_QUESTIONS and isinstance(value, str):
                    code = await self.territories.match(value)
            except Exception as exc:  # a catalogue that cannot be read places nothing
                if not is_unavailable(exc):
                    raise
            if code is not None:
                found[effect.submission] = code
        return found

    async def _keep_photos(self, channel_name: str, effects: list[Effect]) -> list[Effect]:
        """Download the photos that became answers — so only with the resident's consent, which
        the engine requires before any answer — with the channel's credentials, so answers
        point to our copy."""
        channel = self.channels.get(channel_name)
        if channel is None or self.media is None:
            return effects
        kept: list[Effect] = []
        for effect in effects:
            value = effect.value if isinstance(effect, SaveAnswer) else None
            if (
                isinstance(effect, SaveAnswer)
                and isinstance(value, dict)
                and isinstance(value.get("media"), str)
            ):
                ref, content_type = value["media"], str(value.get("content_type") or "")
                if not self.media.holds(ref):
                    try:
                        data = await channel.fetch_media(Attachment(ref, content_type))
                        saved = await self.media.save(data, content_type)
                        effect = replace(effect, value={**value, "media": saved})
                    except Exception as exc:
                        # Keep the provider's reference: the answer is still recorded, and
                        # staff can fetch it later; a resident is never asked twice for a photo.
                        log.warning(
                            "could not keep a photo from %s: %s", channel_name, type(exc).__name__
                        )
            kept.append(effect)
        return kept

    async def _handle(self, held: Held, view: InboxView, message_id: int, inbound: Inbound) -> bool:
        """Run one message through the engine and write all it changed. False: the resident
        had themselves forgotten, so nothing of theirs is left to handle."""
        contact, contact_id = view.contact, view.contact.id
        turns = self.metrics.turns
        # Carried by the turn's first reply, for the sender to measure the reply's latency.
        inbound_at = _posix(view.received_at)
        data = held.state
        if data is None:  # this process restarted, or Redis was flushed: the durable copy
            data = await self.store.open_cursor(contact_id)
        before = Conversation.from_dict(data)
        completed = view.completed if not before.flow else ()
        try:
            outcome = self.engine.handle(
                before,
                Resident(
                    contact.language,
                    contact.profile,
                    frozenset(completed),
                    invitation=_fresh_invitation(contact, self.clock()),
                    invited_at=_posix(contact.invited_at) or 0.0,
                ),
                to_message(inbound),
                self.clock(),
            )
        except Exception:
            # A bug must not wedge this resident's inbox: log (no address), apologise, move on.
            log.exception("engine failed on message %s of contact %s", message_id, contact.pid)
            known = contact.language or self.engine.default_language
            sorry = Prompt(t(known, "not-understood"))
            async with self.store.changes(contact) as tx:
                tx.mark_processed(message_id)
                self._queue(tx, contact, sorry, known, inbound_at)
            turns.labels("failed").inc()
            await self._send_soon(contact, tx.outbound_ids)
            return True
        after = outcome.conversation
        effects = await self._keep_photos(inbound.channel, outcome.effects)
        # The language this turn settled on, which the contact row shows only from now on.
        language = next(
            (e.language for e in reversed(outcome.effects) if isinstance(e, SetLanguage)),
            contact.language,
        )
        replies = list(outcome.replies)
        if any(isinstance(e, ShowMyData) for e in outcome.effects):
            shown_in = language or self.engine.default_language
            replies.insert(0, Prompt(await self._my_data(contact, shown_in)))
        asked = next((e for e in outcome.effects if isinstance(e, ShowReports)), None)
        if asked is not None:
            shown_in = language or self.engine.default_language
            replies.insert(0, Prompt(await self._my_reports(contact, shown_in, asked.folio)))
        forget = next((e for e in outcome.effects if isinstance(e, ForgetMe)), None)
        effects = await self._known_territories(effects)
        places = await self._places(effects)
        if before.flow and any(isinstance(e, CompleteSubmission) for e in effects):
            await self._liaisons_territory(contact, before, places)
        async with self.store.changes(contact) as tx:
            for effect in effects:
                apply_effect(tx, effect)
                if isinstance(effect, RecordConsent) and effect.given and inbound.name:
                    tx.set_name(inbound.name)  # the name the channel shows: only with consent
            if before.submission and before.submission != after.submission:
                tx.save_cursor(before.submission, {})  # left behind: not to be resumed
            if after.submission:
                tx.save_cursor(after.submission, after.to_dict())
            for submission, territory in places.items():
                tx.place(submission, territory)
            tx.mark_processed(message_id)
            for prompt in replies:
                self._queue(tx, contact, prompt, language, inbound_at)
                inbound_at = None  # the first reply only
        turns.labels("handled").inc()
        ids = tx.outbound_ids
        held.state = after.to_dict() if after.active else {}  # idle, and known to be
        if forget is not None:
            # The confirmation must reach them before their address is gone — after whatever
            # was still on its way to them, since their replies keep their order.
            await self.outbox.deliver_all(await self.store.replies.unsent(contact.id))
            await DataRights(self.store).forget(contact, answers=forget.answers, media=self.media)
            held.state = None
            log.info("contact %s forgotten at their request", contact.pid)
            return False
        await self._send_soon(contact, ids)
        return True

    async def tell(self, contact_id: int, text: str, *, template: str | None = None) -> list[int]:
        """A message to a resident outside any turn of theirs (a report's news), queued in the
        message log like a reply and sent after theirs; outside WhatsApp's window only by
        `template`. Nothing for a resident who opted out."""
        contact = await self.store.contact(contact_id)
        if contact.opted_out:
            return []
        outbound = replace(to_outbound(contact, Prompt(text), contact.language), template=template)
        async with self.store.changes(contact) as tx:
            tx.queue_outbound(contact.channel, outbound.text, outbound.to_dict())
        await self._send_soon(contact, tx.outbound_ids)
        return tx.outbound_ids

    async def _send_soon(self, contact: ContactInfo, ids: list[int]) -> None:
        """Queue a turn's replies. They are already in the message log, queued: if the queue
        (Redis) is away, they are queued again from there once it is back."""
        try:
            await self.outbox.enqueue(ids)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("replies to contact %s wait for the outbound queue", contact.pid)

    async def _my_reports(self, contact: ContactInfo, language: str, folio: str | None) -> str:
        """Their reports (the latest few, or the one asked for if it is theirs), each with its
        status and the notes of its last changes — short enough for a phone."""
        reports = Reports(self.store.engine, self.engine.default_language)
        mine = await reports.all(contact_id=contact.id, limit=None if folio else MY_REPORTS_SHOWN)
        if folio is not None:
            mine = [r for r in mine if r.folio == folio]
            if not mine:
                return t(language, "report-not-yours", folio=folio)
        if not mine:
            return t(language, "my-reports-none")
        history = await reports.history([r.folio for r in mine])
        lines = [t(language, "my-reports")] if folio is None else []
        for report in mine:
            status = t(language, STATUS_LABELS.get(report.status, report.status))
            what = self._category(report.flow_id, report.category, language)
            lines.append(f"{report.folio} · {what} · {status} ({report.received_at:%d/%m})")
            for change in history.get(report.folio, [])[-HISTORY_SHOWN:]:
                note = f": {change.note}" if change.note else ""
                label = t(language, STATUS_LABELS.get(change.status, change.status))
                lines.append(f"  {change.at:%d/%m} {label}{note}")
        return "\n".join(lines)

    def _category(self, flow_id: str, key: str | None, language: str) -> str:
        flow = self.engine.flows.get(flow_id)
        state = flow.states.get("category") if flow else None
        for choice in state.choices if state else ():
            if choice.key == key:
                return choice.label.get_text(language)
        return key or "—"

    async def _my_data(self, contact: ContactInfo, language: str) -> str:
        described = await DataRights(self.store).describe(contact)
        profile = ", ".join(f"{k}: {v}" for k, v in described["profile"].items()) or "—"
        return t(
            language,
            "my-data",
            name=described["name"] or "—",
            language=LANGUAGE_NAMES.get(described["language"] or "", "—"),
            profile=profile,
            submissions=len(described["submissions"]),
            answers=sum(len(s["answers"]) for s in described["submissions"]),
        )

    @staticmethod
    def _queue(
        tx: Changes,
        contact: ContactInfo,
        prompt: Prompt,
        language: str | None,
        inbound_at: float | None = None,
    ) -> None:
        outbound = to_outbound(contact, prompt, language)
        payload = outbound.to_dict()
        if inbound_at is not None:
            payload[INBOUND_AT] = inbound_at
        tx.queue_outbound(contact.channel, outbound.text, payload)


def _fresh_invitation(contact: ContactInfo, now: datetime) -> str | None:
    """The survey a broadcast invited the contact to, unless the invitation is stale."""
    sent = _posix(contact.invited_at)
    if contact.invited_flow is None or sent is None:
        return None
    fresh = now.timestamp() - sent <= INVITATION_TTL.total_seconds()
    return contact.invited_flow if fresh else None


def _posix(moment: datetime | None) -> float | None:
    """POSIX time of a database timestamp (SQLite's come back naive, in UTC)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
