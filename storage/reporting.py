"""Participation figures for the planning team's dashboard: totals, breakdowns and answer
distributions, with small groups of residents suppressed so no one can be singled out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select

from consulta.storage.models import Answer, Submission
from consulta.storage.store import Store

__all__ = ["summary"]


SUPPRESS_BELOW = 5  # a breakdown cell under this many residents shows as "<5"
BREAKDOWN_QUESTIONS = ("gender", "age_group", "sector")


def _suppressed(counts: Mapping[Any, int]) -> dict[str, int | str]:
    return {str(k): (n if n >= SUPPRESS_BELOW else f"<{SUPPRESS_BELOW}") for k, n in counts.items()}


async def summary(
    store: Store,
    flow_id: str,
    choice_questions: Sequence[str],
    channels_excluded: Sequence[str] = ("simulator",),
) -> dict[str, Any]:
    """Participation figures for a dashboard: totals, breakdowns and answer distributions,
    with every breakdown cell under SUPPRESS_BELOW residents shown as "<5"."""
    flow = [Submission.flow_id == flow_id, Submission.channel.not_in(list(channels_excluded))]
    where = [*flow, Submission.status != "declined"]  # a refusal is counted, never broken down
    async with store.engine.connect() as conn:
        totals = dict(
            (
                await conn.execute(
                    select(Submission.status, func.count()).where(*flow).group_by(Submission.status)
                )
            ).all()
        )
        breakdowns: dict[str, dict[str, int | str]] = {}
        for name, column in (
            ("channel", Submission.channel),
            ("language", Submission.language),
            ("territory", Submission.territory),
        ):
            counts = (
                await conn.execute(
                    select(column, func.count(func.distinct(Submission.contact_id)))
                    .where(*where)
                    .group_by(column)
                )
            ).all()
            breakdowns[name] = _suppressed({k or "unknown": n for k, n in counts})
        distributions: dict[str, Counter[str]] = {}
        profile: dict[str, Counter[str]] = {q: Counter() for q in BREAKDOWN_QUESTIONS}
        wanted = {*choice_questions, *BREAKDOWN_QUESTIONS}
        answers = await conn.stream(
            select(Answer.question, Answer.value)
            .join(Submission, Submission.id == Answer.submission_id)
            .where(*where, Answer.question.in_(list(wanted)))
        )
        async for question, value in answers:
            values = value if isinstance(value, list) else [value]
            target = distributions.setdefault(question, Counter())
            for v in values:
                if v is not None:
                    target[str(v)] += 1
                    if question in profile:
                        profile[question][str(v)] += 1
    declined = totals.pop("declined", 0)
    started = sum(totals.values())
    completed = totals.get("complete", 0)
    for question in BREAKDOWN_QUESTIONS:
        breakdowns[question] = _suppressed(profile[question])
    return {
        "flow": flow_id,
        "started": started,
        "completed": completed,
        "completion_rate": round(completed / started, 3) if started else None,
        "declined": declined,
        "breakdowns": breakdowns,
        "answers": {q: _suppressed(distributions.get(q, Counter())) for q in choice_questions},
    }
