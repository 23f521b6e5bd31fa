"""`single_choice`: one of the state's numbered choices, by its digit, key or label."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from consulta.flows.kinds.base import Ask, Invalid, Kind, Problem, Reply
from consulta.flows.normalise import normalise

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["SingleChoice", "match_choice"]

_INT = re.compile(r"^\d+$")


def match_choice(state: State, answer: str) -> str | None:
    """The key of the choice an answer names: its number, key or label, forgivingly."""
    norm = normalise(answer)  # a pressed button's key too: a key may have capitals
    if _INT.match(norm) and 1 <= int(norm) <= len(state.choices):
        return state.choices[int(norm) - 1].key
    for choice in state.choices:
        if norm == normalise(choice.key) or norm in {normalise(v) for v in choice.label.values()}:
            return choice.key
    return None


class SingleChoice(Kind):
    name = "single_choice"
    chooses = True
    profile = True
    summarised = True

    def parse(self, state: State, reply: Reply) -> Any:
        choice = match_choice(state, reply.norm)
        if choice is None:
            raise self.reprompt(state)
        return choice

    def prompt(self, state: State, lang: str) -> Ask:
        labels = [c.label.get_text(lang) for c in state.choices]
        numbered = "\n".join(f"{i}. {label}" for i, label in enumerate(labels, 1))
        keys = (c.key for c in state.choices)
        return Ask(lines=(numbered,), choices=tuple(zip(keys, labels, strict=True)))

    def reprompt(self, state: State) -> Invalid:
        return Invalid("reprompt-choice", max=len(state.choices))

    def labels(self, state: State, lang: str) -> Mapping[str, str]:
        return {c.key: c.label.get_text(lang) for c in state.choices}

    def export_cell(self, state: State, value: Any, lang: str, codes: bool) -> Any:
        keys = value if isinstance(value, list) else [value]
        if codes:
            return "; ".join(str(k) for k in keys)
        return "; ".join(
            (c.label.get_text(lang) if (c := state.choice(str(k))) else str(k)) for k in keys
        )

    def check(self, state: State, problem: Problem) -> None:
        if not state.choices:
            problem(state.line, f"a {self.name} question needs choices")
        keys = {c.key for c in state.choices}
        for transition in state.next:
            cond = transition.when
            if cond is None:
                continue
            named = ([cond.answer] if cond.answer is not None else []) + list(cond.answer_in or ())
            for value in named:
                if str(value) not in keys:
                    problem(transition.line, f"condition on {value!r}, which is not a choice")
