"""OAuth2 logins: an account may hold a sealed refresh token and its provider's name instead of a password.

The access token is cached sealed beside it, with its expiry, so that the sync process, the outbox and a restart
share one token instead of each asking the provider. `imap_password` becomes optional (an OAuth2 account has
none); a downgrade gives such accounts an empty one, which their server will refuse. `oauth2_flows` holds the
consent flow's single-use start links and states (gateway.consent).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import DATETIME

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("accounts", "imap_password", existing_type=sa.LargeBinary(2048), nullable=True)
    op.add_column("accounts", sa.Column("oauth2_provider", sa.String(64), nullable=True))
    op.add_column("accounts", sa.Column("oauth2_refresh_token", sa.LargeBinary(4096), nullable=True))
    op.add_column("accounts", sa.Column("oauth2_access_token", sa.LargeBinary(4096), nullable=True))
    op.add_column("accounts", sa.Column("oauth2_expires_at", DATETIME(fsp=6), nullable=True))
    op.create_table(
        "oauth2_flows",
        sa.Column("key", sa.BINARY(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("expires_at", DATETIME(fsp=6), nullable=False),
        sa.Column("created_at", DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("key"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_index("ix_oauth2_flows_expires", "oauth2_flows", ["expires_at"])


def downgrade() -> None:
    op.drop_table("oauth2_flows")
    op.execute("UPDATE accounts SET imap_password = '' WHERE imap_password IS NULL")
    op.alter_column("accounts", "imap_password", existing_type=sa.LargeBinary(2048), nullable=False)
    for column in ("oauth2_expires_at", "oauth2_access_token", "oauth2_refresh_token", "oauth2_provider"):
        op.drop_column("accounts", column)
