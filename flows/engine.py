"""The conversation engine: one resident message in, effects and replies out — no I/O.

The caller (``bot.inbox``) persists the effects, in order and in one transaction, *before*
anything is sent, then stores the new `Conversation` and queues the replies. Keeping the engine
pure makes every rule here testable without a database or a channel.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from consulta.flows.i18n import t
from consulta.flows.kinds import Invalid, Reply
from consulta.flows.kinds.yes_no import YES
from consulta.flows.language import detect_language, parse_language_choice
from consulta.flows.model import LANGUAGES, Condition, Flow, State
from consulta.flows.normalise import normalise

__all__ = [
    # effects
    "CompleteSubmission",
    "Conversation",
    "DeclineSubmission",
    "Engine",
    "Location",
    "Media",
    "Message",
    "OptOut",
    "Option",
    "Outcome",
    "Prompt",
    "RecordConsent",
    "Resident",
    "SaveAnswer",
    "SetLanguage",
    "SetProfile",
    "ShowMyData",
    "StartSubmission",
    "declined_target",
]

# --- what comes in -----------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    label: str | None = None


@dataclass(frozen=True)
class Media:
    ref: str  # where the bot keeps it (or the provider URL until it is fetched)
    content_type: str

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


@dataclass(frozen=True)
class Message:
    """What a resident sent, as the engine needs it."""

    text: str | None = None
    payload: str | None = None  # a button press: "state:choice"
    location: Location | None = None
    media: tuple[Media, ...] = ()
    start: str | None = None  # a deep link ("prioridades_centro"), "" for a bare /start
    language: str | None = None  # an explicit pick (e.g. `consulta chat --lang fr`)
    language_hint: str | None = None  # what the channel knows (Telegram's language_code)


@dataclass(frozen=True)
class Resident:
    """What the engine may know of the contact."""

    language: str | None = None
    profile: Mapping[str, Any] = field(default_factory=dict)
    completed: frozenset[str] = frozenset()  # flows this resident has finished before
    # A survey whose first question a broadcast asked them (still fresh), and when (POSIX time):
    # their next message answers it, unless they wrote since (then they are elsewhere).
    invitation: str | None = None
    invited_at: float = 0.0


@dataclass
class Conversation:
    """The small per-contact state kept between messages (JSON-serialisable)."""

    flow: str | None = None
    version: int | None = None
    state: str | None = None
    submission: str | None = None
    folio: str | None = None
    territory: str | None = None
    retries: int = 0
    history: list[str] = field(default_factory=list)
    pending: str | None = None  # "language" or "resume": a menu awaits an answer
    pending_start: str | None = None  # what to start once the language is chosen
    updated: float = 0.0  # POSIX time of the last message

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["history"] = list(self.history)
        return {k: v for k, v in data.items() if v not in (None, [], 0, 0.0)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Conversation:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    @property
    def active(self) -> bool:
        return self.flow is not None or self.pending is not None


# --- what goes out -----------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    payload: str
    label: str


@dataclass(frozen=True)
class Prompt:
    text: str
    options: tuple[Option, ...] = ()  # channels with buttons show these; digits always work
    expects: str | None = None  # "location" or "photo": a channel may offer a native button


@dataclass(frozen=True)
class StartSubmission:
    submission: str
    flow: str
    version: int
    language: str
    territory: str | None
    folio: str | None


@dataclass(frozen=True)
class SaveAnswer:
    submission: str
    question: str
    state: str
    raw: str | None
    value: Any


@dataclass(frozen=True)
class CompleteSubmission:
    submission: str


@dataclass(frozen=True)
class DeclineSubmission:
    """The resident did not say yes to the consent question: the submission keeps nothing but
    the refusal (its answers, if any were given before going back to consent, are dropped)."""

    submission: str


@dataclass(frozen=True)
class SetProfile:
    field: str
    value: Any


@dataclass(frozen=True)
class SetLanguage:
    language: str


@dataclass(frozen=True)
class RecordConsent:
    submission: str
    flow: str
    given: bool
    notice_version: str | None


@dataclass(frozen=True)
class OptOut:
    pass


@dataclass(frozen=True)
class ShowMyData:
    """Tell the resident all that is held about them (the engine cannot see the store)."""


@dataclass(frozen=True)
class ForgetMe:
    """Forget the resident, once their confirmation has been answered; `answers` too?"""

    answers: bool


@dataclass(frozen=True)
class ShowReports:
    """Tell the resident what became of their reports — all of them (the latest few), or the
    one with `folio` if it is theirs (the engine cannot see the store)."""

    folio: str | None = None


Effect = (
    StartSubmission | SaveAnswer | CompleteSubmission | SetProfile | SetLanguage | RecordConsent
) | (DeclineSubmission | OptOut | ShowMyData | ShowReports | ForgetMe)


@dataclass
class Outcome:
    conversation: Conversation
    effects: list[Effect] = field(default_factory=list)
    replies: list[Prompt] = field(default_factory=list)


# --- words residents use -----------------------------------------------------------------

COMMANDS: dict[str, frozenset[str]] = {
    "help": frozenset({"help", "ayuda", "aide", "auxilio", "socorro"}),
    "back": frozenset({"back", "atras", "regresar", "volver", "anterior", "retour", "precedent"}),
    "restart": frozenset(
        {"restart", "reiniciar", "empezar de nuevo", "recommencer", "start over", "reset"}
    ),
    "stop": frozenset(
        {"stop", "alto", "parar", "baja", "detener", "arret", "arreter", "unsubscribe"}
    ),
    "language": frozenset({"language", "idioma", "langue", "lang", "lengua"}),
    # Residents' data rights (ARCO): see what is held, and have it forgotten.
    "mydata": frozenset(
        {
            "mis datos",
            "my data",
            "mes donnees",
            "mis datos personales",
            "my personal data",
            "mes donnees personnelles",
        }
    ),
    "forget": frozenset(
        {
            "borrar mis datos",
            "borra mis datos",
            "eliminar mis datos",
            "olvidame",
            "delete my data",
            "forget me",
            "supprimer mes donnees",
            "oubliez moi",
            "effacer mes donnees",
        }
    ),
}
SKIP = frozenset({"0", "saltar", "omitir", "skip", "passer", "sauter", "ninguno", "none", "aucun"})
CONTINUE = frozenset({"continuar", "seguir", "continue", "continuer", "reprendre"})


# "estado K7M2QX9A", "status #K7M2QX9A", "statut du signalement K7M2QX9A" (normalised text).
REPORT_STATUS = re.compile(
    r"^(?:estado|estatus|status|statut|folio)(?: (?:de|del|du|of|mi|my|mon))?"
    r"(?: (?:reporte|report|signalement|folio))? ?([2-9a-hj-np-z]{8})$"  # `new_folio`'s
)
MY_REPORTS = frozenset(
    {"mis reportes", "mis reportes por favor", "my reports", "mes signalements", "mes rapports"}
)


def reports_asked(text: str | None) -> tuple[bool, str | None]:
    """Whether a message asks about the resident's reports, and which folio if one."""
    norm = normalise(text)
    if norm in MY_REPORTS:
        return True, None
    found = REPORT_STATUS.match(norm)
    return (True, found.group(1).upper()) if found else (False, None)


def command_of(text: str | None) -> str | None:
    norm = normalise(text)
    if not norm:
        return "help" if (text or "").strip() == "?" else None
    for name, spellings in COMMANDS.items():
        if norm in spellings:
            return name
    return None


def new_folio() -> str:
    """A short report number residents can read out: 8 characters, no 0/O or 1/I."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(8))


_SKIPPED = object()  # an optional question the resident skipped


# --- the engine --------------------------------------------------------------------------


class Engine:
    """Runs flows. `handle` is the only entry point; it never raises on resident input."""

    def __init__(
        self,
        flows: Mapping[str, Flow],
        *,
        default_language: str = "es",
        idle_timeout: timedelta = timedelta(hours=24),
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        new_folio: Callable[[], str] = new_folio,
    ) -> None:
        self.flows = dict(flows)
        self.default_language = default_language
        self.idle_timeout = idle_timeout
        self._new_id = new_id
        self._new_folio = new_folio
        defaults = [f for f in self.flows.values() if f.default] or sorted(
            self.flows.values(), key=lambda f: f.id
        )
        self.default_flow = defaults[0] if defaults else None

    # public -------------------------------------------------------------------------------

    def handle(
        self, conversation: Conversation, resident: Resident, message: Message, now: datetime
    ) -> Outcome:
        turn = _Turn(self, replace(conversation, history=list(conversation.history)), resident)
        if message.language in LANGUAGES:
            turn.set_language(message.language)
        self._dispatch(turn, message, now)
        turn.conv.updated = now.timestamp()
        return Outcome(turn.conv, turn.effects, turn.replies)

    def flow_for_start(self, code: str | None) -> tuple[Flow | None, str | None]:
        """The flow and territory a deep-link payload (``code_territory``) names."""
        if not code:
            return self.default_flow, None
        name, _, territory = code.partition("_")
        for flow in self.flows.values():
            if name in (flow.deep_link, flow.id):
                return flow, territory or None
        return self.default_flow, territory or None

    def flow_for_keyword(self, text: str | None) -> tuple[Flow | None, str | None]:
        norm = normalise(text)
        if not norm:
            return None, None
        for flow in self.flows.values():
            for lang, keywords in flow.keywords.items():
                if norm in {normalise(k) for k in keywords}:
                    return flow, lang
        return None, None

    # dispatch -----------------------------------------------------------------------------

    def _dispatch(self, turn: _Turn, msg: Message, now: datetime) -> None:
        conv = turn.conv
        command = command_of(msg.text) if not msg.payload else None
        if command:
            if not turn.lang:
                turn.set_language(detect_language(msg.text) or msg.language_hint or None)
            getattr(self, f"_command_{command}")(turn)
            return
        asked, folio = reports_asked(msg.text) if not msg.payload else (False, None)
        if asked:
            if not turn.lang:
                turn.set_language(detect_language(msg.text) or msg.language_hint or None)
            turn.lang = turn.lang or self.default_language
            turn.effects.append(ShowReports(folio))
            self._reprompt_current(turn)
            return
        if conv.pending == "language":
            self._answer_language_menu(turn, msg)
            return
        if conv.pending == "forget":
            self._answer_forget(turn, msg)
            return
        if msg.start is not None:
            flow, territory = self.flow_for_start(msg.start)
            if not self._ensure_language(turn, msg, start=msg.start):
                return
            if flow is not None and self._in_progress(conv, flow):
                # Pressing Start again (or scanning the same poster) must not wipe a survey.
                self._offer_resume(turn, flow)
                return
            self._start(turn, flow, territory)
            return
        if conv.pending == "resume":
            self._answer_resume(turn, msg)
            return
        keyword_flow, keyword_lang = (None, None) if conv.flow else self.flow_for_keyword(msg.text)
        invited = self._invited(turn, conv, keyword_flow)
        if invited is not None:
            self._accept_invitation(turn, invited, msg, now)
            return
        if keyword_lang and not turn.lang:
            turn.set_language(keyword_lang)
        if not self._ensure_language(turn, msg, start=keyword_flow.id if keyword_flow else None):
            return
        if conv.flow is None:
            flow = keyword_flow or self.default_flow
            if keyword_flow is None and flow is not None and flow.id in turn.completed:
                # "gracias" after the survey is not a wish to take it again.
                turn.reply(t(turn.lang, "already-done", title=flow.title.get_text(turn.lang)))
                return
            self._start(turn, flow, None)
            return
        flow = self.flows.get(conv.flow)
        state = flow.states.get(conv.state or "") if flow else None
        if flow is None or flow.version != conv.version or state is None:
            # The flow was edited or withdrawn under this conversation: never mix versions.
            turn.reply(t(turn.lang, "restarting"))
            self._start(turn, flow or self.default_flow, conv.territory)
            return
        if conv.updated and now.timestamp() - conv.updated > self.idle_timeout.total_seconds():
            self._offer_resume(turn, flow)
            return
        self._answer(turn, flow, state, msg, now.date())

    def invitation(self, flow: Flow, lang: str) -> list[Prompt]:
        """What a broadcast says to invite a resident to `flow`: what starting it would say (its
        opening messages and its first question, the consent one) in `lang`."""
        turn = _Turn(self, Conversation(), Resident(language=lang))
        self._start(turn, flow, None)
        return turn.replies

    def _invited(self, turn: _Turn, conv: Conversation, keyword: Flow | None) -> Flow | None:
        """The survey a broadcast invited them to, when the invitation is the last thing they
        were asked: newer than their last message, and not outranked by a keyword."""
        flow = self.flows.get(turn.invitation or "")
        if flow is None or keyword is not None or flow.id in turn.completed:
            return None
        if conv.flow is not None and turn.invited_at <= conv.updated:
            return None  # they have written since: that survey is where they are
        return flow

    def _accept_invitation(self, turn: _Turn, flow: Flow, msg: Message, now: datetime) -> None:
        """The resident answers the question a broadcast asked them: start the survey without
        saying it again, and take their message as the answer to where it stands."""
        # The invitation went out in their language, or in the default one when none was known.
        turn.set_language(turn.lang or self.default_language)
        said = len(turn.replies)
        self._start(turn, flow, None)
        del turn.replies[said:]
        state = flow.states.get(turn.conv.state or "")
        if turn.conv.flow is None or state is None:  # a flow that asks nothing: it has ended
            return
        self._answer(turn, flow, state, msg, now.date())

    @staticmethod
    def _in_progress(conv: Conversation, flow: Flow) -> bool:
        return conv.flow == flow.id and conv.version == flow.version and conv.state in flow.states

    def _ensure_language(self, turn: _Turn, msg: Message, start: str | None) -> bool:
        """Settle the resident's language, or ask with the three-language menu."""
        if turn.lang:
            return True
        lang = detect_language(msg.text) or (
            msg.language_hint if msg.language_hint in LANGUAGES else None
        )
        if lang:
            turn.set_language(lang)
            return True
        turn.conv.pending = "language"
        turn.conv.pending_start = start if start is not None else msg.start
        turn.reply(t(self.default_language, "language-menu"), options=self._language_options())
        return False

    @staticmethod
    def _language_options() -> tuple[Option, ...]:
        names = {"es": "Español", "en": "English", "fr": "Français"}
        return tuple(Option(f"language:{lang}", names[lang]) for lang in LANGUAGES)

    # commands -----------------------------------------------------------------------------

    def _command_help(self, turn: _Turn) -> None:
        turn.lang = turn.lang or self.default_language
        turn.reply(t(turn.lang, "help"))
        self._reprompt_current(turn)

    def _command_back(self, turn: _Turn) -> None:
        turn.lang = turn.lang or self.default_language
        conv, flow = turn.conv, self.flows.get(turn.conv.flow or "")
        if flow is None or not conv.history:
            turn.reply(t(turn.lang, "back-unavailable"))
            self._reprompt_current(turn)
            return
        self._enter(turn, flow, conv.history.pop(), ask=True)

    def _command_restart(self, turn: _Turn) -> None:
        turn.lang = turn.lang or self.default_language
        flow = self.flows.get(turn.conv.flow or "") or self.default_flow
        turn.reply(t(turn.lang, "restarting"))
        self._start(turn, flow, turn.conv.territory)

    def _command_stop(self, turn: _Turn) -> None:
        turn.lang = turn.lang or self.default_language
        turn.reply(t(turn.lang, "stopped"))
        turn.effects.append(OptOut())
        turn.conv = Conversation()

    def _command_mydata(self, turn: _Turn) -> None:
        turn.lang = turn.lang or self.default_language
        turn.effects.append(ShowMyData())
        self._reprompt_current(turn)

    def _command_forget(self, turn: _Turn) -> None:
        turn.lang = turn.lang or self.default_language
        turn.conv.pending = "forget"
        turn.reply(
            t(turn.lang, "forget-confirm"),
            options=(
                Option("forget:keep", t(turn.lang, "forget-keep-answers")),
                Option("forget:all", t(turn.lang, "forget-everything")),
                Option("forget:cancel", t(turn.lang, "forget-cancel")),
            ),
        )

    def _answer_forget(self, turn: _Turn, msg: Message) -> None:
        turn.lang = turn.lang or self.default_language
        norm = normalise(msg.text)
        choice = (msg.payload or "").removeprefix("forget:") or {"1": "keep", "2": "all"}.get(norm)
        turn.conv.pending = None
        if choice in ("keep", "all"):
            turn.effects.append(ForgetMe(answers=choice == "all"))
            done = (
                t(turn.lang, "forget-done-all") if choice == "all" else t(turn.lang, "forget-done")
            )
            turn.reply(done)
            turn.conv = Conversation()
            return
        turn.reply(t(turn.lang, "forget-cancelled"))  # anything else keeps everything as it was
        self._reprompt_current(turn)

    def _command_language(self, turn: _Turn) -> None:
        turn.conv.pending = "language"
        turn.reply(
            t(turn.lang or self.default_language, "language-menu"), options=self._language_options()
        )

    def _answer_language_menu(self, turn: _Turn, msg: Message) -> None:
        conv = turn.conv
        payload = (msg.payload or "").removeprefix("language:")
        lang = payload if payload in LANGUAGES else parse_language_choice(msg.text)
        if lang is None:
            turn.reply(t(self.default_language, "language-menu"), options=self._language_options())
            return
        turn.set_language(lang)
        conv.pending = None
        turn.reply(t(lang, "language-set"))
        if conv.flow:
            self._reprompt_current(turn)
            return
        start, conv.pending_start = conv.pending_start, None
        flow, territory = self.flow_for_start(start)
        self._start(turn, flow, territory)

    # resume after a long pause --------------------------------------------------------------

    def _offer_resume(self, turn: _Turn, flow: Flow) -> None:
        turn.conv.pending = "resume"
        turn.reply(
            t(turn.lang, "resume-offer", title=flow.title.get_text(turn.lang)),
            options=(
                Option("resume:continue", t(turn.lang, "choice-continue")),
                Option("resume:restart", t(turn.lang, "choice-start-over")),
            ),
        )

    def _answer_resume(self, turn: _Turn, msg: Message) -> None:
        conv = turn.conv
        norm = normalise(msg.text)
        flow = self.flows.get(conv.flow or "")
        if flow is None or flow.version != conv.version:
            conv.pending = None
            self._start(turn, flow or self.default_flow, conv.territory)
            return
        if msg.payload == "resume:continue" or norm == "1" or norm in CONTINUE or norm in YES:
            conv.pending = None
            self._reprompt_current(turn)
        elif msg.payload == "resume:restart" or norm == "2" or command_of(norm) == "restart":
            conv.pending = None
            self._start(turn, flow, conv.territory)
        else:
            self._offer_resume(turn, flow)

    # moving through a flow ------------------------------------------------------------------

    def _start(self, turn: _Turn, flow: Flow | None, territory: str | None) -> None:
        if flow is None:
            turn.reply(t(turn.lang, "not-understood"))
            return
        sid = self._new_id()
        folio = self._new_folio() if flow.is_report else None
        turn.conv = Conversation(
            flow=flow.id, version=flow.version, submission=sid, folio=folio, territory=territory
        )
        turn.effects.append(
            StartSubmission(sid, flow.id, flow.version, turn.lang, territory, folio)
        )
        self._enter(turn, flow, flow.start)

    def _enter(self, turn: _Turn, flow: Flow, name: str | None, ask: bool = False) -> None:
        """Arrive at a state: say it, and move on through states that wait for nothing."""
        for _ in range(len(flow.states) + 1):  # a cycle of non-waiting states cannot hang us
            state = flow.states.get(name or "")
            if state is None:  # `flows check` rules this out; end politely if it happens
                self._finish(turn)
                return
            turn.conv.state, turn.conv.retries = state.name, 0
            if state.kind.ends:
                turn.reply(self._render(turn, flow, state.text))
                self._finish(turn)
                return
            if not state.kind.waits:
                turn.reply(self._render(turn, flow, state.text))
                name = self._next(state, None, turn.profile)
                continue
            known = turn.profile.get(state.profile) if state.profile else None
            if known is not None and not ask:
                turn.save_answer(flow, state, None, known)
                name = self._next(state, known, turn.profile)
                continue
            turn.replies.append(self._prompt(turn, flow, state))
            return
        self._finish(turn)

    def _finish(self, turn: _Turn) -> None:
        if turn.conv.submission:
            turn.effects.append(CompleteSubmission(turn.conv.submission))
        turn.conv = Conversation()

    def _reprompt_current(self, turn: _Turn) -> None:
        flow = self.flows.get(turn.conv.flow or "")
        state = flow.states.get(turn.conv.state or "") if flow else None
        if flow and state:
            turn.replies.append(self._prompt(turn, flow, state))

    @staticmethod
    def _next(state: State, value: Any, profile: Mapping[str, Any]) -> str | None:
        for transition in state.next:
            if transition.when is None or _holds(transition.when, value, profile):
                return transition.goto
        return None

    # answering ----------------------------------------------------------------------------

    def _answer(self, turn: _Turn, flow: Flow, state: State, msg: Message, today: date) -> None:
        conv = turn.conv
        try:
            value = self._parse(state, msg, today)
        except Invalid as problem:
            if problem.counts:
                conv.retries += 1
            if conv.retries > state.retries:
                if state.kind.consent:
                    # Consent is never skipped, whatever `on_fail` says: no clear yes is a no.
                    self._decline(turn, flow, state, unclear=True)
                    return
                if state.on_fail == "end":
                    turn.reply(t(turn.lang, "ended-after-retries"))
                    turn.conv = Conversation()
                    return
                turn.reply(t(turn.lang, "moving-on"))
                conv.history.append(state.name)
                self._enter(turn, flow, self._next(state, None, turn.profile))
                return
            turn.reply(problem.text(turn.lang))
            return
        if state.kind.consent and value is not True:
            self._decline(turn, flow, state)
            return
        conv.history.append(state.name)
        if value is not _SKIPPED:
            turn.save_answer(flow, state, _raw(msg), value)
            if state.kind.consent:
                turn.effects.append(
                    RecordConsent(conv.submission or "", flow.id, True, state.notice_version)
                )
        self._enter(
            turn, flow, self._next(state, None if value is _SKIPPED else value, turn.profile)
        )

    def _decline(self, turn: _Turn, flow: Flow, state: State, *, unclear: bool = False) -> None:
        """End the flow keeping nothing but the refusal. A flow whose "no" leads straight to an
        end says its own words; an answer that never became a yes or a no gets ours."""
        submission = turn.conv.submission or ""
        turn.effects.append(RecordConsent(submission, flow.id, False, state.notice_version))
        texts = [] if unclear else _declined_texts(flow, state)
        for text in texts:
            turn.reply(self._render(turn, flow, text))
        if not texts:
            turn.reply(
                t(turn.lang, "consent-unclear") if unclear else t(turn.lang, "consent-declined")
            )
        if submission:
            turn.effects.append(DeclineSubmission(submission))
        turn.conv = Conversation()

    def _parse(self, state: State, msg: Message, today: date | None = None) -> Any:
        """What the state's kind reads in the message, after what every question shares: a
        stale button, media that is no picture, 0 to skip an optional question."""
        text, norm = (msg.text or "").strip(), normalise(msg.text)
        if msg.payload:
            target, _, key = msg.payload.partition(":")
            if target != state.name:  # a stale button from an earlier question
                raise state.kind.reprompt(state).uncounted()
            norm, text = key, key
        if msg.media and not any(m.is_image for m in msg.media) and not text:
            raise Invalid("media-not-understood", counts=False)
        if state.optional and norm in SKIP and not msg.location and not msg.media:
            return _SKIPPED
        return state.kind.parse(state, Reply(text, norm, msg.location, msg.media, today))

    # rendering ------------------------------------------------------------------------------

    def _render(self, turn: _Turn, flow: Flow, text: Mapping[str, str]) -> str:
        body = text.get(turn.lang) or text.get(self.default_language) or ""
        return body.replace("{folio}", turn.conv.folio or "").replace(
            "{privacy_url}", flow.privacy_url or ""
        )

    def _prompt(self, turn: _Turn, flow: Flow, state: State) -> Prompt:
        ask = state.kind.prompt(state, turn.lang)
        lines = [self._render(turn, flow, state.text), *ask.lines]
        options = tuple(Option(f"{state.name}:{key}", label) for key, label in ask.choices)
        if state.optional:
            lines.append(t(turn.lang, "hint-skip"))
        return Prompt("\n\n".join(line for line in lines if line), options, ask.expects)


class _Turn:
    """What one message does: the conversation as it becomes, effects and replies so far."""

    def __init__(self, engine: Engine, conv: Conversation, resident: Resident) -> None:
        self.engine, self.conv = engine, conv
        self.lang: str = resident.language if resident.language in LANGUAGES else ""
        self.profile: dict[str, Any] = dict(resident.profile)
        self.completed = resident.completed
        self.invitation, self.invited_at = resident.invitation, resident.invited_at
        self.effects: list[Effect] = []
        self.replies: list[Prompt] = []

    def set_language(self, lang: str | None) -> None:
        if lang in LANGUAGES and lang != self.lang:
            self.lang = lang
            self.effects.append(SetLanguage(lang))

    def set_profile(self, name: str, value: Any) -> None:
        self.profile[name] = value
        self.effects.append(SetProfile(name, value))

    def save_answer(self, flow: Flow, state: State, raw: str | None, value: Any) -> None:
        """Keep an answer (and the profile field it fills) — never before the flow's consent
        question has had its yes, even in a flow that `flows check` would refuse."""
        if not (state.kind.consent or self.consented(flow)):
            return
        self.effects.append(
            SaveAnswer(self.conv.submission or "", state.question_key, state.name, raw, value)
        )
        if state.profile:
            self.set_profile(state.profile, value)

    def consented(self, flow: Flow) -> bool:
        """Whether this submission may keep answers: a flow without a consent question keeps
        them (`flows check` refuses such a flow); otherwise its yes is in the history."""
        asks = [name for name, s in flow.states.items() if s.kind.consent]
        return not asks or any(name in self.conv.history for name in asks)

    def reply(self, text: str, options: tuple[Option, ...] = ()) -> None:
        self.replies.append(Prompt(text, options))


# --- matching helpers --------------------------------------------------------------------


def _holds(cond: Condition, value: Any, profile: Mapping[str, Any]) -> bool:
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        return a == b or str(a) == str(b)

    def has(v: Any) -> bool:
        return any(same(x, v) for x in value) if isinstance(value, list) else same(value, v)

    if cond.answer is not None and not has(cond.answer):
        return False
    if cond.answer_in is not None and not any(has(v) for v in cond.answer_in):
        return False
    numeric = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if cond.at_least is not None and (numeric is None or numeric < cond.at_least):
        return False
    if cond.at_most is not None and (numeric is None or numeric > cond.at_most):
        return False
    return all(str(profile.get(k)) in vs for k, vs in cond.profile.items())


def declined_target(state: State) -> str | None:
    """Where a consent question's explicit branch on "no" leads (None: it has none)."""
    return Engine._next(replace(state, next=tuple(t for t in state.next if t.when)), False, {})


def _declined_texts(flow: Flow, state: State) -> list[Mapping[str, str]]:
    """What the flow says on a "no" to consent, when that leads through messages to an end
    and asks nothing more (`flows check` requires it); else nothing: the engine has its own."""
    texts: list[Mapping[str, str]] = []
    name = declined_target(state)
    for _ in range(len(flow.states)):
        found = flow.states.get(name or "")
        if found is None or found.kind.waits:
            return []
        texts.append(found.text)
        if found.kind.ends:
            return texts
        name = Engine._next(found, None, {})
    return []


def _raw(msg: Message) -> str | None:
    if msg.text:
        return msg.text[:2000]
    if msg.payload:
        return msg.payload
    if msg.location:
        return f"{msg.location.latitude},{msg.location.longitude}"
    return None
