"""What the operator status page shows of a sync: a folder's message count on the server (from SELECT or STATUS,
recorded before the first batch, so an initial sync reads "x of N" from its start), and when the last error of a
folder and of an account was recorded.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("folders", sa.Column("server_count", sa.Integer(), nullable=True))
    op.add_column("folders", sa.Column("sync_error_at", mysql.DATETIME(fsp=6), nullable=True))
    op.add_column("accounts", sa.Column("sync_error_at", mysql.DATETIME(fsp=6), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "sync_error_at")
    op.drop_column("folders", "sync_error_at")
    op.drop_column("folders", "server_count")
