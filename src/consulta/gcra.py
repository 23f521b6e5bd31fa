"""The arithmetic of a send-rate cap (GCRA, the "generic cell rate algorithm"), shared by the
in-process pacing (`consulta.adapters.delivery.LocalPacing`) and the one every process shares
through Redis (`consulta.storage.limiter.RedisPacing`).

Each sender has a theoretical arrival time `tat`, the moment its bucket would be empty again; a
send may go while `tat - now` stays within `tolerance`, and moves `tat` one `cell` on.
"""

from __future__ import annotations

import random

__all__ = ["HEADROOM", "JITTER", "cell", "retry_delay", "tolerance"]

JITTER = 0.002  # seconds at most added to a reply's wait, so waiters woken together spread out
HEADROOM = 0.96  # sends are spaced for this share of a cap (see `cell`)


def cell(rate: float) -> tuple[float, float]:
    """The interval between sends at `rate`, and how much of a send's lateness the next one may
    make up (`slack`). Sends are spaced for `HEADROOM` of the rate: a sleep that ends a
    millisecond late costs nothing (the next send makes it up), and however the sends' timing
    jitters by up to `slack`, no second ever holds more than the rate.
    """
    interval = 1 / (rate * HEADROOM)
    return interval, min(interval / 4, 1 / HEADROOM - 1)


def tolerance(rate: float, burst: float, bulk: bool) -> float:
    """How far ahead of now (seconds) a sender's `tat` may be for a send to go.

    Replies may use the whole bucket; bulk leaves its last cell free when it has more than one
    (part of one when it has less than two), so that a reply finds room at once.
    """
    interval, _slack = cell(rate)
    room = (burst - 1) * interval
    if bulk:
        room -= interval * min(1.0, burst - 1)
    return room


def retry_delay(wait: float, rate: float, bulk: bool) -> float:
    """How long to sleep before asking again: the wait, and a little jitter — more for bulk,
    whose callers are many and in no hurry."""
    interval = 1 / rate
    if bulk:
        return wait + random.uniform(0, min(interval / 20, 0.25))
    return wait + random.uniform(0, min(interval / 20, JITTER))
