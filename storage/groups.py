"""Neighbourhood group chats (each with its territory and language) and the native polls
posted to them, whose votes are recorded as answers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select

from consulta.storage.models import Answer, Group, Poll, Submission, utcnow
from consulta.storage.store import Store
from consulta.storage.turns import InboundRecord, record_in

__all__ = ["GroupInfo", "Groups", "PollInfo"]


@dataclass(frozen=True)
class GroupInfo:
    id: int
    channel: str
    address: str
    title: str | None
    territory: str | None
    language: str | None
    active: bool


@dataclass(frozen=True)
class PollInfo:
    id: int
    group_id: int
    flow_id: str
    flow_version: int
    question: str
    state: str
    keys: list[str]
    multiple: bool
    territory: str | None


_GROUP_COLUMNS = (
    Group.id,
    Group.channel,
    Group.address,
    Group.title,
    Group.territory,
    Group.language,
    Group.active,
)


class Groups:
    """Neighbourhood group chats and the polls posted to them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def seen(self, channel: str, address: str, title: str | None, active: bool) -> None:
        """The bot was added to (or removed from) a group."""
        stmt = self.store.statements.insert(Group).values(
            channel=channel, address=address, title=title, active=active, added_at=utcnow()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["channel", "address"],
            set_={"active": active, "title": func.coalesce(stmt.excluded.title, Group.title)},
        )
        async with self.store.engine.begin() as conn:
            await conn.execute(stmt)

    async def register(
        self, channel: str, address: str, territory: str, language: str | None
    ) -> GroupInfo:
        """Staff give a group its territory (and the language to post in)."""
        stmt = self.store.statements.insert(Group).values(
            channel=channel,
            address=address,
            territory=territory,
            language=language,
            active=True,
            added_at=utcnow(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["channel", "address"],
            set_={"territory": territory, "language": language},
        )
        async with self.store.engine.begin() as conn:
            await conn.execute(stmt)
        found = await self.get(channel, address)
        assert found is not None
        return found

    async def get(self, channel: str, address: str) -> GroupInfo | None:
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_GROUP_COLUMNS).where(
                        Group.channel == channel, Group.address == address
                    )
                )
            ).one_or_none()
        return GroupInfo(*row) if row else None

    async def all(self, channel: str) -> list[GroupInfo]:
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(*_GROUP_COLUMNS).where(Group.channel == channel).order_by(Group.id)
            )
            return [GroupInfo(*r) for r in rows]

    async def save_poll(
        self,
        channel: str,
        provider_id: str,
        group: GroupInfo,
        flow_id: str,
        flow_version: int,
        question: str,
        state: str,
        keys: list[str],
        multiple: bool,
    ) -> None:
        async with self.store.engine.begin() as conn:
            await conn.execute(
                insert(Poll).values(
                    channel=channel,
                    provider_id=provider_id,
                    group_id=group.id,
                    flow_id=flow_id,
                    flow_version=flow_version,
                    question=question,
                    state=state,
                    choices={"keys": keys},
                    multiple=multiple,
                    sent_at=utcnow(),
                )
            )

    async def poll(self, channel: str, provider_id: str) -> PollInfo | None:
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        Poll.id,
                        Poll.group_id,
                        Poll.flow_id,
                        Poll.flow_version,
                        Poll.question,
                        Poll.state,
                        Poll.choices,
                        Poll.multiple,
                        Group.territory,
                    )
                    .join(Group, Group.id == Poll.group_id)
                    .where(Poll.channel == channel, Poll.provider_id == provider_id)
                )
            ).one_or_none()
        if row is None:
            return None
        return PollInfo(
            row[0], row[1], row[2], row[3], row[4], row[5], list(row[6]["keys"]), row[7], row[8]
        )

    async def record_vote(
        self,
        poll: PollInfo,
        channel: str,
        voter: str,
        value: Any,
        provider_id: str,
        name: str | None = None,
    ) -> bool:
        """A resident's vote, durably and once per provider id, as the answer to the poll's
        question in a submission of its own (one per poll and voter). False: a redelivery."""
        async with self.store.engine.begin() as conn:
            # Recorded as processed in the same transaction that applies it: a vote is never
            # mistaken by the inbox for a message to run through a flow.
            (recorded,) = await record_in(
                self.store.statements,
                self.store.pseudonym,
                conn,
                [
                    InboundRecord(
                        channel,
                        voter,
                        provider_id,
                        None,
                        {"poll": poll.id, "vote": value},
                        name,
                        status="processed",
                    )
                ],
            )
            contact_id, message_id = recorded.contact_id, recorded.message_id
            if message_id is None:
                return False
            digest = hashlib.sha256(f"poll:{poll.id}:{contact_id}".encode()).hexdigest()[:32]
            now = utcnow()
            submission = self.store.statements.insert(Submission).values(
                id=digest,
                contact_id=contact_id,
                flow_id=poll.flow_id,
                flow_version=poll.flow_version,
                status="complete",
                language=None,
                channel=channel,
                territory=poll.territory,
                folio=None,
                cursor={},
                started_at=now,
                updated_at=now,
                completed_at=now,
            )
            submission = submission.on_conflict_do_update(
                index_elements=["id"], set_={"updated_at": now, "completed_at": now}
            )
            answer = self.store.statements.insert(Answer).values(
                submission_id=digest,
                question=poll.question,
                state=poll.state,
                raw_text=None,
                value=value,
                answered_at=now,
            )
            answer = answer.on_conflict_do_update(
                index_elements=["submission_id", "question"],
                set_={"value": answer.excluded.value, "answered_at": now},
            )
            await conn.execute(submission)
            await conn.execute(answer)
        return True
