"""Accounts keep the identity mode their first sync chose (X-GUID, OBJECTID, Gmail's ids or the content hash).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("identity_mode", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "identity_mode")
