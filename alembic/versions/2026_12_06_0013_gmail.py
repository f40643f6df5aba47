"""Gmail: the X-GM-LABELS of a message's place, and the role of a Gmail system label.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 11:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "message_places",
        sa.Column("labels", sa.Text(collation="utf8mb4_bin"), nullable=False, server_default=""),
    )
    op.add_column("labels", sa.Column("role", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("labels", "role")
    op.drop_column("message_places", "labels")
