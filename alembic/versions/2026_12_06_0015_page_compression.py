"""The tables that grow with the mail are page compressed (MariaDB's PAGE_COMPRESSED=1).

InnoDB writes 16 KiB pages. Those of these tables are mostly text (bodies, JSON states, addresses) or padding
around compressed blobs: a blob stored off-page takes whole pages, and a row of 5 KiB leaves a third of its
page empty. A page-compressed table compresses each page as it writes it and punches the unused end of the page
out of the file (the file system keeps it sparse), so the bytes on disk are what the pages hold, compressed.
Rows, queries and the FULLTEXT index (its tables follow their table) stay as they were; the server decompresses
a page when it reads it from disk, not on every read from its buffer pool. BENCHMARKS.md (Storage) has what it
saved on the 10,000-message mailbox.

Each ALTER rebuilds its table in place, so on a large mirror the upgrade takes about as long as copying these
tables once; reads go on meanwhile, and writes too except to messages (rebuilding a FULLTEXT index takes a
shared lock). MySQL has no PAGE_COMPRESSED: there the migration changes nothing.

What it needs of the server: its innodb_compression_algorithm (zlib by default; "none" turns compression off)
and a file system that punches holes (ext4, XFS, Btrfs); elsewhere the pages are written whole, as before.
The files are sparse: `ls` shows the uncompressed size, `du` what they take, and a copy made without regard
for holes takes the uncompressed size.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 14:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# schema.models.GROWING_TABLE_ARGS: the same tables.
TABLES = (
    "mime_blobs",
    "mime_blob_chunks",
    "messages",
    "attachments",
    "message_places",
    "message_labels",
    "threads",
    "thread_refs",
    "change_log",
)


def _page_compressed(on: bool) -> None:
    if not op.get_bind().dialect.is_mariadb:  # type: ignore[attr-defined]
        return
    for name in TABLES:
        op.execute(f"ALTER TABLE `{name}` PAGE_COMPRESSED={int(on)}")


def upgrade() -> None:
    _page_compressed(True)


def downgrade() -> None:
    _page_compressed(False)
