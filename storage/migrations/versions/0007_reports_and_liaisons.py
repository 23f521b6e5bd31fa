"""reports' status changes, and community liaisons

Every change of a report's status is kept (who, when, the note the reporter is told, the folio
it duplicates); a report's status is its latest change's, "received" before any. Liaisons are
the community promoters staff register by phone number or Telegram chat id, with their
territory and language.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 12:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "report_changes",
        sa.Column("id", BigId, nullable=False),
        sa.Column("submission_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("duplicate_of", sa.String(length=16), nullable=True),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_report_changes_submission_id_submissions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_changes")),
    )
    op.create_index("ix_report_changes_submission", "report_changes", ["submission_id", "id"])
    op.create_table(
        "liaisons",
        sa.Column("id", BigId, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("territory", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=True),
        sa.Column("added_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_liaisons")),
        sa.UniqueConstraint("address", name=op.f("uq_liaisons_address")),
    )
    op.create_index(op.f("ix_liaisons_territory"), "liaisons", ["territory"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_liaisons_territory"), table_name="liaisons")
    op.drop_table("liaisons")
    op.drop_index("ix_report_changes_submission", table_name="report_changes")
    op.drop_table("report_changes")
