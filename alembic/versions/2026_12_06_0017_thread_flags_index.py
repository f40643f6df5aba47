"""A thread's flag counts are read from an index: `ix_messages_thread` covers the columns they need.

When a message's flags change, its thread's unread count and starred mark are counted again over its members
(schema.aggregates.refresh_thread_flags). With an index on `thread_id` alone that count read every member's row
from the clustered index: rows of several KiB (bodies for search, addresses), so a thread of a thousand messages
cost a thousand row reads, and on a mailbox larger than the server's buffer pool most of them from disk. On the
100,000-message bench mailbox that one statement took ~210 ms of a pass after 1,000 flag changes (BENCHMARKS.md,
Incremental cost). With (thread_id, orphaned_at, unread, starred) it is answered from the index alone, a few
bytes per member; every other use of the old index (thread_id first) is served by the new one as before.

One ALTER drops the old index and adds the new one, so the foreign key on thread_id always has an index; it is
built in place while reads and writes go on.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 18:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE messages DROP INDEX ix_messages_thread,"
        " ADD INDEX ix_messages_thread (thread_id, orphaned_at, unread, starred)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE messages DROP INDEX ix_messages_thread, ADD INDEX ix_messages_thread (thread_id)")
