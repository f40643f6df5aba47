"""Token grants name accounts of any shard, and idempotency keys and uploads live on their account's shard: the
foreign keys from `api_token_accounts` to `accounts` and from `mutation_keys` and `uploads` to `api_tokens` go.

Tokens and their grants are global, on shard 0 (schema.shards), and an account lives on its shard: a grant of
an account of shard 1 names a row of another database, which no foreign key can hold. `inboxql token create`
checks that each account exists on its shard, and account removal deletes its grants (schema.accounts.remove),
which the key's ON DELETE CASCADE did before. The index on account_id stays (removal finds the grants by it).

An idempotency key is written in the transaction of its mutation, on the shard of the account it writes
(gateway.graphql.mutations.writes), so that a retry finds it or finds nothing done; the token it names lives on
shard 0. Account removal deletes the keys of the tokens it revokes on the account's shard too. An upload names
the token that made it as a record only (nothing reads it back).

The keys' names were chosen by the server (the initial migration named none), so they are looked up.

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


FOREIGN_KEYS = (("api_token_accounts", "accounts"), ("mutation_keys", "api_tokens"), ("uploads", "api_tokens"))


def upgrade() -> None:
    for table, referenced in FOREIGN_KEYS:
        names = op.get_bind().scalars(
            sa.text(
                "SELECT constraint_name FROM information_schema.referential_constraints"
                " WHERE constraint_schema = DATABASE() AND table_name = :table AND referenced_table_name = :referenced"
            ),
            {"table": table, "referenced": referenced},
        )
        for name in list(names):
            op.drop_constraint(name, table, type_="foreignkey")


def downgrade() -> None:
    # Grants of accounts that no longer exist (or live on another shard) would refuse the key: they go first.
    op.execute("DELETE FROM api_token_accounts WHERE account_id NOT IN (SELECT id FROM accounts)")
    op.create_foreign_key(None, "api_token_accounts", "accounts", ["account_id"], ["id"], ondelete="CASCADE")
    op.execute("DELETE FROM mutation_keys WHERE token_id NOT IN (SELECT id FROM api_tokens)")
    op.create_foreign_key(None, "mutation_keys", "api_tokens", ["token_id"], ["id"], ondelete="CASCADE")
    op.execute("UPDATE uploads SET token_id = NULL WHERE token_id NOT IN (SELECT id FROM api_tokens)")
    op.create_foreign_key(None, "uploads", "api_tokens", ["token_id"], ["id"], ondelete="SET NULL")
