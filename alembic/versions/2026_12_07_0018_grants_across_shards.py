"""Token grants name accounts of any shard: the foreign key from `api_token_accounts` to `accounts` goes.

Tokens and their grants are global, on shard 0 (schema.shards), and an account lives on its shard: a grant of
an account of shard 1 names a row of another database, which no foreign key can hold. `inboxql token create`
checks that each account exists on its shard, and account removal deletes its grants (schema.accounts.remove),
which the key's ON DELETE CASCADE did before. The index on account_id stays (removal finds the grants by it).

The key's name was chosen by the server (the initial migration named none), so it is looked up.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    names = op.get_bind().scalars(
        sa.text(
            "SELECT constraint_name FROM information_schema.referential_constraints"
            " WHERE constraint_schema = DATABASE() AND table_name = 'api_token_accounts'"
            " AND referenced_table_name = 'accounts'"
        )
    )
    for name in list(names):
        op.drop_constraint(name, "api_token_accounts", type_="foreignkey")


def downgrade() -> None:
    # Grants of accounts that no longer exist (or live on another shard) would refuse the key: they go first.
    op.execute("DELETE FROM api_token_accounts WHERE account_id NOT IN (SELECT id FROM accounts)")
    op.create_foreign_key(None, "api_token_accounts", "accounts", ["account_id"], ["id"], ondelete="CASCADE")
