"""`message`: says its text and moves on, waiting for nothing."""

from consulta.flows.kinds.base import Kind

__all__ = ["Message"]


class Message(Kind):
    name = "message"
    waits = False
