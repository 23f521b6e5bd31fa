"""`end`: says its text and ends the flow (the submission is complete)."""

from consulta.flows.kinds.base import Kind

__all__ = ["End"]


class End(Kind):
    name = "end"
    waits = False
    ends = True
