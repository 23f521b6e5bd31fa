"""the territories catalogue

Colonias, municipalities and other areas staff import from GeoJSON or CSV: a code (what deep
links, groups, reports and answers name), a name (what residents type), the code of the area it
is in, and a GeoJSON Polygon or MultiPolygon (none for a CSV import) that pins are located in.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "territories",
        sa.Column("id", BigId, nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("parent", sa.String(length=64), nullable=True),
        sa.Column("geometry", sa.JSON(), nullable=True),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_territories")),
        sa.UniqueConstraint("code", name=op.f("uq_territories_code")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("territories")
