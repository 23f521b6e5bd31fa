"""outbound claims and the sweeper's index

A reply being sent is claimed (status "sending", by `claimed_by` until `claimed_until`), so a
reply is sent by one process, once; a claim whose process died, or whose lease ran out, is taken
over. The sweeper looks for work left behind (inbound "received", outbound "queued"/"sending")
through a small partial index instead of the whole message log. The status column widens to
fit every status Twilio reports.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("status IN ('received', 'queued', 'sending')")


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("messages") as batch:
        # Twilio's "partially_delivered" is 19 characters.
        batch.alter_column("status", type_=sa.String(length=32), existing_type=sa.String(16))
        batch.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_messages_unfinished",
        "messages",
        ["direction", "status", "id"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_messages_unfinished", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
        batch.alter_column("status", type_=sa.String(length=16), existing_type=sa.String(32))
