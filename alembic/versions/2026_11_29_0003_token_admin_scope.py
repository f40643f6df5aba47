"""The admin scope of API tokens: an admin token may also manage its accounts' webhooks.

Tokens that exist before this revision are not admin (the server default fills the new column), so no
token gains a power on upgrade.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column("api_tokens", "admin")
