"""The conversation engine, without storage: every question kind, branching, retries,
commands, expiry and resume, language choice."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consulta.flows.check import load_library
from consulta.flows.engine import (
    CompleteSubmission,
    Conversation,
    DeclineSubmission,
    Engine,
    ForgetMe,
    Location,
    Media,
    Message,
    OptOut,
    RecordConsent,
    Resident,
    SaveAnswer,
    SetLanguage,
    SetProfile,
    ShowMyData,
    ShowReports,
    StartSubmission,
    reports_asked,
)
from consulta.flows.i18n import t
from consulta.flows.model import Transition, load_flow

FIXTURES = Path(__file__).parent.parent / "fixtures" / "flows"

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def make_engine(**kwargs: Any) -> Engine:
    flows = {}
    for path in sorted(FIXTURES.glob("*.yaml")):
        flow = load_flow(path)
        flows[flow.id] = flow
    counter = iter(range(1, 1000))
    return Engine(flows, new_id=lambda: f"s{next(counter)}", new_folio=lambda: "FOLIO123", **kwargs)


@dataclass
class Chat:
    """A resident talking to the engine; effects are applied to the resident as the bot would."""

    engine: Engine = field(default_factory=make_engine)
    conv: Conversation = field(default_factory=Conversation)
    language: str | None = "es"
    profile: dict[str, Any] = field(default_factory=dict)
    completed: frozenset[str] = frozenset()
    now: datetime = NOW
    effects: list[Any] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    last: list[Any] = field(default_factory=list)

    def send(self, text: str | None = None, **kwargs: Any) -> str:
        outcome = self.engine.handle(
            self.conv,
            Resident(self.language, self.profile, self.completed),
            Message(text=text, **kwargs),
            self.now,
        )
        self.conv = outcome.conversation
        self.effects.extend(outcome.effects)
        self.last = outcome.replies
        for effect in outcome.effects:
            if isinstance(effect, SetLanguage):
                self.language = effect.language
            if isinstance(effect, SetProfile):
                self.profile[effect.field] = effect.value
        texts = [p.text for p in outcome.replies]
        self.replies.extend(texts)
        return "\n---\n".join(texts)

    def answers(self) -> dict[str, Any]:
        return {e.question: e.value for e in self.effects if isinstance(e, SaveAnswer)}


def started(chat: Chat, flow: str = "kinds") -> Chat:
    """A resident who opened `flow` and said yes to its consent question."""
    chat.send(start=flow)
    chat.send("sí")
    return chat


def test_a_whole_flow_with_every_kind_of_question() -> None:
    chat = started(Chat())
    assert chat.replies[0] == "Hola"  # a message waits for nothing
    assert chat.replies[1] == "¿Aceptas?\n\n1. Sí\n2. No"
    assert "Edad" in chat.replies[2] and "1. Joven\n2. Mayor" in chat.replies[2]
    assert [o.payload for o in chat.last[-1].options] == ["age:young", "age:older"]
    chat.send("2")
    chat.send("1, 3")
    chat.send("Arbolito")  # parks chosen → parks_detail
    chat.send("sí")
    chat.send("4")
    chat.send("12")
    chat.send(location=Location(19.43, -99.13, "Zócalo"))
    reply = chat.send(media=(Media("media/x.jpg", "image/jpeg"),))
    assert reply == "Gracias"
    assert chat.answers() == {
        "consent": True,
        "age": "older",
        "likes": ["water", "parks"],
        "parks_detail": "Arbolito",
        "agree": True,
        "score": 4,
        "count": 12,
        "place": {"latitude": 19.43, "longitude": -99.13, "label": "Zócalo"},
        "pic": {"media": "media/x.jpg", "content_type": "image/jpeg"},
    }
    assert isinstance(chat.effects[0], StartSubmission)
    assert isinstance(chat.effects[-1], CompleteSubmission)
    assert not chat.conv.active


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("1", "young"),
        ("JÓVEN", "young"),
        ("  mayor ", "older"),
        ("older", "older"),
        ("Âgé", "older"),
    ],
)
def test_single_choice_is_matched_forgivingly(typed: str, expected: str) -> None:
    chat = started(Chat())
    chat.send(typed)
    assert chat.answers()["age"] == expected


@pytest.mark.parametrize("word", ["si", "Sí", "yes", "OUI", "ok", "claro", "1", "d'accord"])
def test_yes_words_of_three_languages(word: str) -> None:
    assert (
        Engine._parse(
            make_engine(), make_engine().flows["kinds"].state("agree"), Message(text=word)
        )
        is True
    )


@pytest.mark.parametrize("word", ["no", "NON", "nope", "2", "nel"])
def test_no_words_of_three_languages(word: str) -> None:
    engine = make_engine()
    assert engine._parse(engine.flows["kinds"].state("agree"), Message(text=word)) is False


def test_multiple_choice_separators_and_limit() -> None:
    chat = started(Chat())
    chat.send("1")
    reply = chat.send("1 2 3")  # max_choices is 2
    assert reply == t("es", "reprompt-multiple", max=3)
    chat.send("agua y luz")
    assert chat.answers()["likes"] == ["water", "light"]
    assert chat.conv.state == "agree"


def test_branching_on_a_scale_answer() -> None:
    chat = started(Chat())
    for answer in ("1", "1", "si", "2"):
        chat.send(answer)
    assert chat.conv.state == "why_low"


def test_branching_to_the_end_on_no() -> None:
    chat = started(Chat())
    for answer in ("1", "1", "no"):
        chat.send(answer)
    assert not chat.conv.active
    assert isinstance(chat.effects[-1], CompleteSubmission)


def test_a_wrong_answer_gets_a_reprompt_then_the_flow_moves_on() -> None:
    chat = started(Chat())
    assert chat.send("7") == t("es", "reprompt-choice", max=2)
    assert chat.send("quién sabe") == t("es", "reprompt-choice", max=2)
    reply = chat.send("tal vez")  # the third miss: retries (2) exhausted, skip
    assert t("es", "moving-on") in reply
    assert chat.conv.state == "likes"
    assert "age" not in chat.answers()


def test_retries_exhausted_can_end_the_flow_politely() -> None:
    chat = started(Chat())
    for answer in ("1", "1", "si", "5"):
        chat.send(answer)
    assert chat.send("muchos") == t("es", "reprompt-number", min=0, max=20)
    assert chat.send("cien") == t("es", "ended-after-retries")
    assert not chat.conv.active


def test_text_length_and_number_bounds() -> None:
    chat = started(Chat())
    chat.send("1")
    chat.send("3")
    assert chat.send("a" * 11) == t("es", "reprompt-text-too-long", max=10)
    chat.send("corto")
    chat.send("si")
    chat.send("5")
    assert chat.send("21") == t("es", "reprompt-number", min=0, max=20)


def test_location_typed_and_photo_skipped_or_refused() -> None:
    chat = started(Chat())
    for answer in ("1", "1", "si", "5", "3"):
        chat.send(answer)
    chat.send("Calle Hidalgo esquina Juárez")
    assert chat.answers()["place"] == {"text": "Calle Hidalgo esquina Juárez"}
    assert chat.last[-1].expects == "photo"
    assert chat.send(media=(Media("m/v.ogg", "audio/ogg"),)) == t("es", "media-not-understood")
    assert chat.send("foto") == t("es", "reprompt-photo")
    chat.send("0")
    assert "pic" not in chat.answers()
    assert not chat.conv.active


def test_location_question_offers_a_native_button() -> None:
    chat = started(Chat())
    for answer in ("1", "1", "si", "5", "3"):
        chat.send(answer)
    assert chat.last[-1].expects == "location"
    assert chat.send("1") == t("es", "reprompt-location")  # a bare digit is no place


def test_help_repeats_the_question() -> None:
    chat = started(Chat())
    reply = chat.send("ayuda")
    assert reply.startswith(t("es", "help")) and "Edad" in reply
    assert chat.conv.state == "age"


def test_back_goes_to_the_previous_question_and_replaces_its_answer() -> None:
    chat = started(Chat())
    chat.send("1")
    assert "Edad" in chat.send("atrás")
    chat.send("2")
    assert chat.answers()["age"] == "older"
    assert chat.conv.state == "likes"


def test_back_on_the_first_question() -> None:
    chat = Chat()
    chat.send(start="kinds")
    assert chat.send("back").startswith(t("es", "back-unavailable"))


def test_back_to_consent_then_no_keeps_nothing() -> None:
    chat = started(Chat())
    chat.send("1")
    assert "Edad" in chat.send("atrás")
    assert "¿Aceptas?" in chat.send("atrás")  # the consent question came first
    chat.send("no")
    assert DeclineSubmission("s1") in chat.effects and not chat.conv.active


def test_restart_starts_a_new_submission() -> None:
    chat = started(Chat())
    chat.send("1")
    first = chat.conv.submission
    chat.send("reiniciar")
    assert chat.conv.submission != first and chat.conv.state == "consent"
    chat.send("sí")
    # The age group is already known, so it is carried over, not re-asked — once they agree.
    assert chat.conv.state == "likes"
    assert SaveAnswer(chat.conv.submission, "age", "age", None, "young") in chat.effects


def test_stop_opts_out_and_forgets_the_conversation() -> None:
    chat = started(Chat())
    assert chat.send("STOP") == t("es", "stopped")
    assert isinstance(chat.effects[-1], OptOut)
    assert not chat.conv.active


def test_language_command_switches_and_reasks_in_the_new_language() -> None:
    chat = started(Chat())
    assert chat.send("idioma") == t("es", "language-menu")
    reply = chat.send("3")
    assert chat.language == "fr"
    assert reply.startswith(t("fr", "language-set")) and "Âge" in reply


def test_an_idle_conversation_offers_to_resume() -> None:
    chat = started(Chat())
    chat.send("1")
    chat.now = NOW + timedelta(hours=25)
    assert chat.send("hola") == t("es", "resume-offer", title="Prueba")
    assert "Gustos" in chat.send("1")
    chat.send("1")
    assert chat.answers()["likes"] == ["water"]


def test_an_idle_conversation_can_start_over() -> None:
    chat = started(Chat())
    chat.send("1")
    first = chat.conv.submission
    chat.now = NOW + timedelta(days=3)
    chat.send("hola")
    chat.send("2")
    assert chat.conv.submission != first and chat.conv.state == "consent"


def test_profile_questions_are_skipped_when_known() -> None:
    chat = started(Chat(profile={"age_group": "young"}))
    assert chat.conv.state == "likes"
    assert chat.answers()["age"] == "young"


def test_profile_answers_are_saved_on_the_contact() -> None:
    chat = started(Chat())
    chat.send("2")
    assert SetProfile("age_group", "older") in chat.effects


def test_new_resident_language_detected_from_a_greeting() -> None:
    chat = Chat(language=None)
    chat.send("hello")
    assert chat.language == "en"
    assert chat.replies[0].startswith("Notice")  # the default flow, in English


def test_new_resident_unsure_language_gets_the_menu() -> None:
    chat = Chat(language=None)
    assert chat.send("1") == t("es", "language-menu")
    reply = chat.send("2")
    assert chat.language == "en"
    assert reply.startswith(t("en", "language-set"))
    assert "Notice https://example.org/privacy" in reply


def test_a_finished_survey_is_not_restarted_by_a_thank_you() -> None:
    chat = Chat(completed=frozenset({"consented"}))
    assert chat.send("gracias") == t("es", "already-done", title="Reporte")
    assert not chat.conv.active
    chat.send("reiniciar")
    assert chat.conv.flow == "consented"


def test_a_keyword_starts_its_flow_in_its_language() -> None:
    chat = Chat(language=None)
    chat.send("essai")
    assert chat.language == "fr" and chat.conv.flow == "kinds"
    assert chat.replies[0] == "Bonjour"


def test_starting_the_same_flow_again_offers_to_resume() -> None:
    chat = started(Chat())
    chat.send("1")
    assert chat.send(start="kinds") == t("es", "resume-offer", title="Prueba")
    assert "Gustos" in chat.send("1")
    assert chat.answers()["age"] == "young"


def test_a_deep_link_to_another_flow_switches() -> None:
    chat = started(Chat())
    chat.send("1")
    chat.send(start="reporte")
    assert chat.conv.flow == "consented"


def test_a_deep_link_presets_the_territory() -> None:
    chat = Chat()
    chat.send(start="kinds_centro")
    assert chat.conv.territory == "centro"
    assert StartSubmission("s1", "kinds", 1, "es", "centro", None) in chat.effects


def test_a_stale_button_does_not_answer_a_later_question() -> None:
    chat = started(Chat())
    chat.send(payload="age:young")
    assert chat.conv.state == "likes"
    assert chat.send(payload="age:older") == t("es", "reprompt-multiple", max=3)
    assert chat.conv.retries == 0
    assert chat.answers()["age"] == "young"


def test_consent_is_recorded_with_the_notice_version_and_a_report_gets_a_folio() -> None:
    chat = Chat()
    reply = chat.send(start="")
    assert "Aviso https://example.org/privacy" in reply
    chat.send("si")
    assert RecordConsent("s1", "consented", True, "v7") in chat.effects
    assert chat.send("Fuga de agua") == "Folio FOLIO123"


def test_declined_consent_ends_politely_with_nothing_more_asked() -> None:
    chat = Chat()
    chat.send(start="")
    assert chat.send("no") == t("es", "consent-declined")
    assert RecordConsent("s1", "consented", False, "v7") in chat.effects
    assert not chat.conv.active


def test_an_edited_flow_never_mixes_versions() -> None:
    chat = started(Chat())
    chat.conv.version = 0  # the conversation began on an older version
    reply = chat.send("1")
    assert reply.startswith(t("es", "restarting"))
    assert chat.conv.version == 1 and chat.conv.submission == "s2"
    assert "age" not in chat.answers()


def test_conversation_round_trips_as_small_json() -> None:
    chat = started(Chat())
    chat.send("1")
    data = chat.conv.to_dict()
    assert Conversation.from_dict(data) == chat.conv
    assert len(str(data)) < 300


def test_a_resident_asks_what_is_held_about_them() -> None:
    chat = started(Chat())
    reply = chat.send("mis datos")
    assert ShowMyData() in chat.effects and "Edad" in reply  # then the question again


@pytest.mark.parametrize(("answer", "everything"), [("1", False), ("2", True)])
def test_forgetting_asks_for_confirmation_first(answer: str, everything: bool) -> None:
    chat = started(Chat(language="en"))
    assert chat.send("delete my data") == t("en", "forget-confirm")
    assert [o.payload for o in chat.last[0].options] == [
        "forget:keep", "forget:all", "forget:cancel"]  # fmt: skip
    assert not any(isinstance(e, ForgetMe) for e in chat.effects)
    chat.send(answer)
    assert ForgetMe(answers=everything) in chat.effects and not chat.conv.active


def test_anything_but_yes_keeps_everything() -> None:
    chat = started(Chat(language="fr"))
    chat.send("supprimer mes données")
    reply = chat.send("non")
    assert reply.startswith(t("fr", "forget-cancelled")) and "Âge" in reply
    assert not any(isinstance(e, ForgetMe) for e in chat.effects)


# --- consent: nothing kept without a yes (the "quizás" bug) ---------------------------------


def _kept(chat: Chat) -> list[Any]:
    return [e for e in chat.effects if isinstance(e, SaveAnswer | SetProfile)]


@pytest.mark.parametrize("maybe", [["quizás", "mmm no sé", "a lo mejor"], ["tal vez"] * 3])
def test_consent_is_never_skipped_no_clear_yes_ends_the_flow(maybe: list[str]) -> None:
    chat = Chat()
    chat.send(start="kinds")
    assert chat.send(maybe[0]) == t("es", "reprompt-yes-no")
    assert chat.send(maybe[1]) == t("es", "reprompt-yes-no")
    assert chat.send(maybe[2]) == t("es", "consent-unclear")  # retries (2) spent: no skipping
    assert not chat.conv.active
    assert _kept(chat) == []
    assert RecordConsent("s1", "kinds", False, "k1") in chat.effects
    assert DeclineSubmission("s1") in chat.effects
    assert not any(isinstance(e, CompleteSubmission) for e in chat.effects)


def test_on_fail_skip_on_consent_still_ends_the_flow() -> None:
    """`flows check` refuses such a flow; the engine holds the line even if one slips by."""
    engine = make_engine()
    kinds = engine.flows["kinds"]
    states = dict(kinds.states)
    states["consent"] = replace(states["consent"], on_fail="skip", retries=0)
    engine.flows["kinds"] = replace(kinds, states=states)
    chat = Chat(engine=engine)
    chat.send(start="kinds")
    assert chat.send("quizás") == t("es", "consent-unclear")
    assert _kept(chat) == [] and not chat.conv.active


def test_no_answer_is_kept_before_consent_even_in_an_unchecked_flow() -> None:
    engine = make_engine()
    kinds = engine.flows["kinds"]
    # A flow that asks the age group before consent (`flows check` refuses it).
    states = dict(kinds.states)
    states["hello"] = replace(states["hello"], next=(Transition("age"),))
    states["age"] = replace(states["age"], next=(Transition("consent"),))
    states["consent"] = replace(states["consent"], next=(Transition("likes"),))
    engine.flows["kinds"] = replace(kinds, states=states)
    chat = Chat(engine=engine)
    chat.send(start="kinds")
    chat.send("1")  # the age group, asked too early: not kept
    assert chat.conv.state == "consent" and _kept(chat) == []
    chat.send("no")
    assert _kept(chat) == [] and DeclineSubmission("s1") in chat.effects


def test_a_no_says_the_flows_own_words_when_it_has_them() -> None:
    engine = Engine(load_library())  # the shipped priorities survey branches "no" to an end
    chat = Chat(engine=engine)
    chat.send("hola")
    assert chat.send("no") == engine.flows["priorities"].state("declined").text["es"]
    assert _kept(chat) == [] and not chat.conv.active


# --- broadcast invitations ------------------------------------------------------------------


def invited(chat: Chat, flow: str = "kinds", at: datetime = NOW) -> Chat:
    """A resident a broadcast asked the first question of `flow` at `at`."""
    original = chat.engine.handle

    def handle(conv: Conversation, resident: Resident, *args: Any) -> Any:
        invitation = replace(resident, invitation=flow, invited_at=at.timestamp())
        return original(conv, invitation, *args)

    chat.engine.handle = handle  # type: ignore[method-assign]
    return chat


def test_an_invitation_says_what_starting_the_survey_says() -> None:
    engine = make_engine()
    said = [p.text for p in engine.invitation(engine.flows["kinds"], "en")]
    fresh = Chat(engine=make_engine(), language="en")
    fresh.send(start="kinds")
    assert said == fresh.replies
    assert said[-1].startswith("Do you agree?")


def test_the_answer_to_an_invitation_answers_its_first_question() -> None:
    chat = invited(Chat(language="es"))
    reply = chat.send("1")  # the consent question the broadcast asked
    assert "Edad" in reply and "Hola" not in reply  # not asked again: on to the next question
    assert chat.answers() == {"consent": True}
    assert isinstance(chat.effects[0], StartSubmission) and chat.effects[0].flow == "kinds"


def test_declining_an_invitation_keeps_nothing_but_the_refusal() -> None:
    chat = invited(Chat(language="fr"))
    chat.send("non")
    assert any(isinstance(e, DeclineSubmission) for e in chat.effects)
    assert chat.answers() == {}
    assert not chat.conv.active


def test_an_invitation_in_no_known_language_is_answered_in_the_default_one() -> None:
    chat = invited(Chat(language=None))
    reply = chat.send("1")
    assert "Edad" in reply
    assert chat.language == "es"


def test_a_keyword_or_a_survey_already_done_outranks_an_invitation() -> None:
    chat = invited(Chat(), flow="kinds")
    chat.send("reporte")
    assert chat.conv.flow == "consented"  # the keyword's flow, not the invitation's
    done = invited(Chat(completed=frozenset({"kinds"})))
    done.send("1")
    assert done.conv.flow != "kinds"


def test_an_invitation_newer_than_the_survey_a_resident_left_is_what_they_answer() -> None:
    chat = Chat()
    chat.send(start="consented")  # in another survey, left at its first question…
    chat.now = NOW + timedelta(hours=2)
    invited(chat, at=NOW + timedelta(hours=1))  # …then invited to this one
    assert "Edad" in chat.send("1")
    assert chat.conv.flow == "kinds"
    chat.send("2")  # from now on they are in it: the invitation is not taken up again
    assert chat.answers()["age"] == "older"


def test_an_invitation_older_than_their_last_message_does_not_pull_them_out() -> None:
    chat = Chat()
    chat.send(start="consented")
    invited(chat, at=NOW - timedelta(hours=1))
    chat.now = NOW + timedelta(minutes=1)
    chat.send("1")
    assert chat.conv.flow == "consented"


@pytest.mark.parametrize(
    ("text", "asked"),
    [
        ("mis reportes", (True, None)),
        ("My reports", (True, None)),
        ("mes signalements", (True, None)),
        ("estado K7M2QX9L", (True, "K7M2QX9L")),
        ("Status #k7m2qx9l", (True, "K7M2QX9L")),
        ("statut du signalement EAJVNYGE", (True, "EAJVNYGE")),
        ("estado del reporte 23456789", (True, "23456789")),
        ("estado", (False, None)),
        ("status update please", (False, None)),
        ("estado K7M2QX9O", (False, None)),  # no O in a folio
    ],
)
def test_residents_ask_about_their_reports(text: str, asked: tuple[bool, str | None]) -> None:
    assert reports_asked(text) == asked
    if asked[0]:
        chat = Chat()
        chat.send(text)
        assert any(isinstance(e, ShowReports) and e.folio == asked[1] for e in chat.effects)
