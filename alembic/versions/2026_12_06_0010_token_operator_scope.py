"""The operator scope of API tokens (an operator token manages accounts: add, list, remove, set credentials, and
reads no mail), and a name for each token that `inboxql token list` shows.

Tokens that exist before this revision are not operators (the server default fills the new column), so no token
gains a power on upgrade.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("operator", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("api_tokens", sa.Column("name", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("api_tokens", "name")
    op.drop_column("api_tokens", "operator")
