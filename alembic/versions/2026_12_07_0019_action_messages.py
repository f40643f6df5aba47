"""A flag change of many messages is one action: `action_messages` names its messages.

A mutation that changed the flags of 1,000 messages queued 1,000 actions, each with its payload, its change-log
entry and its entry in the mutation's answer, and the executor read, recorded and logged each again
(BENCHMARKS.md, write-back (b)). Now it queues one action whose payload lists the places it changed; the
messages it is about are rows here, so the folder sync still finds every message a pending action protects
(schema.actions.pending_messages). An action about one message keeps naming it in `actions.message_id`.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 06:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "action_messages",
        sa.Column("action_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(["action_id"], ["actions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("action_id", "message_id"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
        mysql_engine="InnoDB",
    )
    op.create_index("ix_action_messages_message", "action_messages", ["message_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_action_messages_message", table_name="action_messages")
    op.drop_table("action_messages")
