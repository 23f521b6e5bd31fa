"""`yes_no`: 1 or 2, or a yes or a no in any of the three languages ("sí", "ok", "oui",
"nel"…); kept as true or false."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from consulta.flows.i18n import t
from consulta.flows.kinds.base import Ask, Invalid, Kind, Reply
from consulta.flows.normalise import normalise

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["NO", "YES", "YesNo", "parse_yes_no"]

YES = frozenset(
    {
        "si",
        "s",
        "yes",
        "y",
        "yeah",
        "yep",
        "sure",
        "ok",
        "okay",
        "oui",
        "ouais",
        "claro",
        "vale",
        "dale",
        "sale",
        "va",
        "de acuerdo",
        "acepto",
        "i agree",
        "agree",
        "d accord",
        "daccord",
        "bien sur",
        "por supuesto",
        "correcto",
        "true",
    }
)
NO = frozenset(
    {
        "no",
        "n",
        "nope",
        "nah",
        "non",
        "nel",
        "negativo",
        "no acepto",
        "i disagree",
        "jamais",
        "pas d accord",
        "false",
    }
)


def parse_yes_no(text: str | None) -> bool | None:
    norm = normalise(text)
    if norm in ("1",) or norm in YES:
        return True
    if norm in ("2",) or norm in NO:
        return False
    return None


class YesNo(Kind):
    name = "yes_no"
    summarised = True

    def parse(self, state: State, reply: Reply) -> Any:
        answer = parse_yes_no(reply.norm)
        if answer is None:
            raise self.reprompt(state)
        return answer

    def prompt(self, state: State, lang: str) -> Ask:
        yes, no = t(lang, "yes"), t(lang, "no")
        return Ask(lines=(f"1. {yes}\n2. {no}",), choices=(("1", yes), ("2", no)))

    def reprompt(self, state: State) -> Invalid:
        return Invalid("reprompt-yes-no")

    def labels(self, state: State, lang: str) -> Mapping[str, str]:
        return {"True": t(lang, "yes"), "False": t(lang, "no")}  # the summary counts str(value)

    def export_cell(self, state: State, value: Any, lang: str, codes: bool) -> Any:
        if codes:
            return "yes" if value else "no"
        return t(lang, "yes") if value else t(lang, "no")
