"""SQLAlchemy models: contacts, submissions and their answers, consents, and the message log.

Phone numbers and chat ids live only in `Contact.address`; everything that leaves the store
(exports, logs, dashboard) uses `Contact.pid`, a keyed hash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Answer",
    "Base",
    "Broadcast",
    "BroadcastRecipient",
    "Consent",
    "Contact",
    "Group",
    "Liaison",
    "MessageLog",
    "Poll",
    "ReportChange",
    "StaffMember",
    "Submission",
    "Territory",
    "utcnow",
]

UNFINISHED = "status IN ('received', 'queued', 'sending')"

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy's documented class attribute
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Contact(Base):
    """A resident on one channel."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_contacts_channel_address"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pid: Mapped[str] = mapped_column(String(32), unique=True)  # pseudonymous id
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(64))  # phone or chat id: exported to admins only
    name: Mapped[str | None] = mapped_column(String(128))  # WhatsApp ProfileName etc.
    language: Mapped[str | None] = mapped_column(String(2))
    profile: Mapped[dict[str, Any]] = mapped_column(default=dict)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)  # channel facts (WaId…)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_inbound_at: Mapped[datetime | None]  # opens WhatsApp's 24-hour window
    # The survey a broadcast invited them to, and when: their next message answers its first
    # question (the invitation was that question) unless they are already in a survey.
    invited_flow: Mapped[str | None] = mapped_column(String(64))
    invited_at: Mapped[datetime | None]


class Submission(Base):
    """One run of a flow by a resident: a survey response or a neighbourhood report."""

    __tablename__ = "submissions"
    __table_args__ = (
        Index("ix_submissions_flow_status", "flow_id", "status"),
        Index("ix_submissions_contact_status", "contact_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    flow_id: Mapped[str] = mapped_column(String(64))
    flow_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="partial")  # partial | complete
    language: Mapped[str | None] = mapped_column(String(2))
    channel: Mapped[str] = mapped_column(String(16))
    territory: Mapped[str | None] = mapped_column(String(64))
    folio: Mapped[str | None] = mapped_column(String(16), unique=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)  # where the resident is
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class Answer(Base):
    """The latest answer to one question of a submission (going back replaces it)."""

    __tablename__ = "answers"
    __table_args__ = (
        UniqueConstraint("submission_id", "question", name="uq_answers_submission_question"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    question: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(64))
    raw_text: Mapped[str | None] = mapped_column(Text)
    value: Mapped[Any] = mapped_column(JSON)
    answered_at: Mapped[datetime] = mapped_column(default=utcnow)


class Consent(Base):
    """A resident's yes or no to a privacy notice, with its version and time."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    submission_id: Mapped[str | None] = mapped_column(String(32))
    flow_id: Mapped[str] = mapped_column(String(64))
    given: Mapped[bool] = mapped_column(Boolean)
    notice_version: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageLog(Base):
    """Every inbound and outbound message: the inbox, the outbox, dedup and audit.

    Inbound: received → processed. Outbound: queued → sending (claimed by one process, until
    `claimed_until` or its death) → sent → delivered/read, or failed.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "direction", "provider_id", name="uq_messages_provider"),
        Index("ix_messages_inbox", "contact_id", "direction", "status", "id"),
        Index(  # what the sweeper looks for: work a crashed process left
            "ix_messages_unfinished",
            "direction",
            "status",
            "id",
            postgresql_where=text(UNFINISHED),
            sqlite_where=text(UNFINISHED),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    channel: Mapped[str] = mapped_column(String(16))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    provider_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    body: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the whole internal message
    error: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))  # outbound "sending": who
    claimed_until: Mapped[datetime | None]  # …and until when, unless they die first


class Group(Base):
    """A neighbourhood group chat the bot is a member of, and the territory staff gave it."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_groups_channel_address"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(64))  # the group's chat id
    title: Mapped[str | None] = mapped_column(String(255))
    territory: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(2))
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # the bot is still in it
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Poll(Base):
    """A native poll posted to a group: one question of a flow, its choices in order."""

    __tablename__ = "polls"
    __table_args__ = (UniqueConstraint("channel", "provider_id", name="uq_polls_provider"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    provider_id: Mapped[str] = mapped_column(String(64))  # the channel's poll id
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    flow_id: Mapped[str] = mapped_column(String(64))
    flow_version: Mapped[int] = mapped_column(Integer)
    question: Mapped[str] = mapped_column(String(64))  # the answer's question key
    state: Mapped[str] = mapped_column(String(64))
    choices: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"keys": [...]} in order
    multiple: Mapped[bool] = mapped_column(Boolean, default=False)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)


class StaffMember(Base):
    """A member of the planning team with a bearer token (stored hashed, shown once)."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | analyst
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Broadcast(Base):
    """A message or a survey's invitation staff send to an audience, now or at a time.

    `status`: scheduled → sending → done, or paused (and back) or cancelled. The audience is kept
    as the filters staff gave; its recipients are materialised when sending starts.
    """

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # flow | message
    flow_id: Mapped[str | None] = mapped_column(String(64))
    texts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"es": …, "en": …, "fr": …}
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the filters, as given
    template: Mapped[str | None] = mapped_column(String(64))  # outside WhatsApp's window
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    send_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]  # when the recipients were materialised
    finished_at: Mapped[datetime | None]
    recipients: Mapped[int] = mapped_column(Integer, default=0)


class BroadcastRecipient(Base):
    """One resident (or one Telegram group) a broadcast goes to, and what became of it.

    `state`: queued → sending (claimed by `claimed_by`) → sent → delivered → read, or failed
    (`reason`: the provider's error) or skipped (`reason`: outside window, opted out, …).
    """

    __tablename__ = "broadcast_recipients"
    __table_args__ = (
        UniqueConstraint("broadcast_id", "contact_id", name="uq_broadcast_recipients_contact"),
        UniqueConstraint("broadcast_id", "group_id", name="uq_broadcast_recipients_group"),
        Index("ix_broadcast_recipients_next", "broadcast_id", "state", "window_closes_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(2))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    reason: Mapped[str | None] = mapped_column(String(255))
    provider_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # When WhatsApp's 24-hour window closes for them (None: no window): soonest first.
    window_closes_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Territory(Base):
    """A colonia, municipality or other area of the catalogue: deep links, groups, reports and
    answers name one by `code`; a pin finds its own by `geometry` (GeoJSON, lon/lat), when it
    has one (a CSV import gives none)."""

    __tablename__ = "territories"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    parent: Mapped[str | None] = mapped_column(String(64))  # the code of the area it is in
    geometry: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # Polygon | MultiPolygon
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReportChange(Base):
    """One change of a report's status, by whom and when, with the note the reporter is told.

    A report (a submission with a folio) is "received" until its first change; after that its
    status is its latest change's (storage/reports.py says which changes are allowed).
    """

    __tablename__ = "report_changes"
    __table_args__ = (Index("ix_report_changes_submission", "submission_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[str | None] = mapped_column(String(16))  # the original's folio
    by: Mapped[str] = mapped_column(String(128))  # a staff member's name, or "system"
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Liaison(Base):
    """A community liaison staff registered: recognised by their address on any channel (or on
    `channel` only), their reports tagged as a liaison's and placed in their territory."""

    __tablename__ = "liaisons"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str | None] = mapped_column(String(16))  # None: any channel
    address: Mapped[str] = mapped_column(String(64), unique=True)  # E.164 phone or chat id
    name: Mapped[str] = mapped_column(String(128))
    territory: Mapped[str] = mapped_column(String(64), index=True)
    language: Mapped[str | None] = mapped_column(String(2))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
