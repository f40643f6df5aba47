"""`ix_messages_thread` holds no flag column again: (thread_id, orphaned_at), as before 0017 plus orphaned_at.

Migration 0017 made it cover (thread_id, orphaned_at, unread, starred) for the thread flag counts, when every thread
whose members' flags changed was counted over its members. Since, a thread moves its counts by what its members'
flags did (schema.aggregates: only a lost star has a thread of several members counted; a label change lists its
labels, which this index and message_labels answer), so the counts seldom run; but every UPDATE of a message's
unread or starred also rewrote its entry of this index, on a page of its own for each thread, and (the index serving
the foreign key to threads) had InnoDB check each rewritten entry against its thread's row. On the 100,000-message
bench mailbox with the shared server's 128 MiB buffer pool that UPDATE took 140-560 ms of a pass after 1,000 flag
changes, 8-65 ms without the flags in the index; but the thread rows it read for the key are then read by the
threads' lock instead (5-16 -> 100-185 ms), so the pass's three statements on messages and threads went from 310-555
ms (median of nine passes 460) to 225-520 ms (370): about 100 ms saved, within the noise of whole passes on a loaded
machine. With a 2 GiB pool the UPDATE went from 17-44 to 8-9 ms (bench.resync_bench, old and new code alternated,
load 1-9).

One ALTER drops the old index and adds the new one, so the foreign key on thread_id always has an index; it is
built in place while reads and writes go on.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 13:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE messages DROP INDEX ix_messages_thread, ADD INDEX ix_messages_thread (thread_id, orphaned_at)"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE messages DROP INDEX ix_messages_thread,"
        " ADD INDEX ix_messages_thread (thread_id, orphaned_at, unread, starred)"
    )
