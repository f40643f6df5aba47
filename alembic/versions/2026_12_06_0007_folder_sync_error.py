"""Folders keep the error of their last failed sync (a folder the server refuses to SELECT, say), which the API
shows, while the other folders of the account go on syncing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("folders", sa.Column("sync_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("folders", "sync_error")
