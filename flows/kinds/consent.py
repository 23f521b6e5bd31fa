"""`consent`: a yes/no that records the resident's consent and the privacy notice's version.

The engine keeps nothing about a resident before its yes, and never skips it: no clear yes
within its retries is a no. `flows check` makes every flow that asks anything ask it first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from consulta.flows.kinds.base import Problem
from consulta.flows.kinds.yes_no import YesNo

if TYPE_CHECKING:
    from consulta.flows.model import State

__all__ = ["Consent"]


class Consent(YesNo):
    name = "consent"
    consent = True
    summarised = False

    def check(self, state: State, problem: Problem) -> None:
        if "on_fail" in state.lines and state.on_fail == "skip":
            problem(
                state.lines["on_fail"],
                "consent cannot be skipped (on_fail: skip); without a yes the flow ends",
            )
