"""broadcasts, their recipients, and the survey a broadcast invited a resident to

A broadcast is a message or a survey invitation sent to an audience; its recipients are
materialised when it starts (one row each, with state and the provider's message id), claimed by
one sender at a time, and updated by delivery callbacks. A contact remembers the survey it was
invited to, so its next message answers that survey's first question.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 14:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("invited_flow", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("invited_at", When, nullable=True))
    op.create_table(
        "broadcasts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("flow_id", sa.String(length=64), nullable=True),
        sa.Column("texts", sa.JSON(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("send_at", When, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("started_at", When, nullable=True),
        sa.Column("finished_at", When, nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_table(
        "broadcast_recipients",
        sa.Column("id", BigId, nullable=False),
        sa.Column("broadcast_id", BigId, nullable=False),
        sa.Column("contact_id", BigId, nullable=True),
        sa.Column("group_id", BigId, nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("provider_id", sa.String(length=64), nullable=True),
        sa.Column("window_closes_at", When, nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", When, nullable=True),
        sa.Column("sent_at", When, nullable=True),
        sa.Column("updated_at", When, nullable=False),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_broadcast_recipients_broadcast_id_broadcasts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_broadcast_recipients_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_broadcast_recipients_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcast_recipients")),
        sa.UniqueConstraint("broadcast_id", "contact_id", name="uq_broadcast_recipients_contact"),
        sa.UniqueConstraint("broadcast_id", "group_id", name="uq_broadcast_recipients_group"),
    )
    op.create_index(
        "ix_broadcast_recipients_next",
        "broadcast_recipients",
        ["broadcast_id", "state", "window_closes_at", "id"],
    )
    op.create_index(
        op.f("ix_broadcast_recipients_provider_id"), "broadcast_recipients", ["provider_id"]
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_broadcast_recipients_provider_id"), table_name="broadcast_recipients")
    op.drop_index("ix_broadcast_recipients_next", table_name="broadcast_recipients")
    op.drop_table("broadcast_recipients")
    op.drop_table("broadcasts")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("invited_at")
        batch.drop_column("invited_flow")
