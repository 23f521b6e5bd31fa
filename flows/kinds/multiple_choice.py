"""`multiple_choice`: one or more of the state's choices ("1, 3", "agua y luz"), at most
`max_choices`; kept as a list of keys."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from consulta.flows.i18n import t
from consulta.flows.kinds.base import Ask, Invalid, Reply
from consulta.flows.kinds.single_choice import SingleChoice, match_choice
from consulta.flows.normalise import normalise

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["MultipleChoice"]

_SEPARATORS = re.compile(r"\s*(?:,|;|\by\b|\band\b|\bet\b|\s)\s*")


class MultipleChoice(SingleChoice):
    name = "multiple_choice"
    multiple = True
    profile = False

    def parse(self, state: State, reply: Reply) -> Any:
        norm = normalise(reply.text)  # a pressed button's key too
        single = match_choice(state, norm)
        if single is not None:
            return [single]
        keys: list[str] = []
        for token in _SEPARATORS.split(norm):
            if not token:
                continue
            key = match_choice(state, token)
            if key is None:
                raise self.reprompt(state)
            if key not in keys:
                keys.append(key)
        if not keys or (state.max_choices and len(keys) > state.max_choices):
            raise self.reprompt(state)
        return keys

    def prompt(self, state: State, lang: str) -> Ask:
        ask = super().prompt(state, lang)
        return Ask(lines=(*ask.lines, t(lang, "hint-multiple")), choices=ask.choices)

    def reprompt(self, state: State) -> Invalid:
        return Invalid("reprompt-multiple", max=len(state.choices))
