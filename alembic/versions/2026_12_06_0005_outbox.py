"""Sending: SMTP submission settings on accounts and the outbox.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = mysql.DATETIME(fsp=6)


def upgrade() -> None:
    op.add_column("accounts", sa.Column("smtp_host", sa.String(255), nullable=True))
    op.add_column("accounts", sa.Column("smtp_port", sa.Integer(), nullable=True))
    op.add_column("accounts", sa.Column("smtp_security", sa.String(16), nullable=True))
    op.add_column("accounts", sa.Column("smtp_username", sa.String(320), nullable=True))
    op.add_column("accounts", sa.Column("smtp_password", sa.LargeBinary(2048), nullable=True))
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("message", mysql.LONGBLOB(), nullable=False),
        sa.Column("sent_copy", mysql.LONGBLOB(), nullable=False),
        sa.Column("envelope_from", sa.String(320), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("message_id_header", sa.String(191), nullable=False),
        sa.Column("mirror_message_id", sa.BigInteger(), nullable=True),
        sa.Column("reply_to_message_id", sa.BigInteger(), nullable=True),
        sa.Column("send_at", TIMESTAMP, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", TIMESTAMP, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("smtp_response", sa.String(512), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_index("ix_outbox_account_state", "outbox", ["account_id", "state", "send_at"])


def downgrade() -> None:
    op.drop_table("outbox")
    for column in ("smtp_password", "smtp_username", "smtp_security", "smtp_port", "smtp_host"):
        op.drop_column("accounts", column)
