"""Write-back: the action queue, idempotency keys of mutations, and read-only API tokens.

Tokens that exist before this revision may write (the server default), as they could read everything their
accounts hold already; `inboxql token create --read-only` makes tokens that may not.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = mysql.DATETIME(fsp=6)


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("read_only", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "actions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("folder_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", TIMESTAMP, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_index("ix_actions_account_state", "actions", ["account_id", "state", "id"])
    op.create_table(
        "mutation_keys",
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(128, collation="ascii_bin"), nullable=False),
        sa.Column("mutation", sa.String(64), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_id", "key"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_index("ix_mutation_keys_created", "mutation_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("mutation_keys")
    op.drop_table("actions")
    op.drop_column("api_tokens", "read_only")
