"""Webhook claims: an attempt claims its hook in a short transaction and posts after the commit.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhooks", sa.Column("claim", sa.String(32), nullable=True))
    op.add_column("webhooks", sa.Column("claimed_until", mysql.DATETIME(fsp=6), nullable=True))


def downgrade() -> None:
    op.drop_column("webhooks", "claimed_until")
    op.drop_column("webhooks", "claim")
