"""A fleet of sync processes: lease epochs for fencing, pinning to a process group, process heartbeats and the
history of each account's lease hand-overs.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("lease_epoch", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("accounts", sa.Column("lease_group", sa.String(length=64), nullable=True))
    op.create_table(
        "sync_processes",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("group_name", sa.String(length=64), nullable=True),
        sa.Column("started_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("heartbeat_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("draining", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("owner"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_table(
        "lease_grants",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("taken_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("commits", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_commit_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "epoch"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )


def downgrade() -> None:
    op.drop_table("lease_grants")
    op.drop_table("sync_processes")
    op.drop_column("accounts", "lease_group")
    op.drop_column("accounts", "lease_epoch")
