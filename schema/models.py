"""The tables of the mirror (SQLAlchemy 2, typed). MariaDB/MySQL with utf8mb4.

Identity of a message survives moves: ``messages`` holds one row per message as a user sees it, and
``message_places`` holds where the server keeps it (folder, uidvalidity, uid, flags, modseq). A move changes a
place, never the message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BINARY,
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.mysql import DATETIME, LONGBLOB, MEDIUMBLOB, MEDIUMTEXT
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}

# The tables that grow with the mail (bodies, blobs, states, places) are page compressed (MariaDB): each 16 KiB
# page is compressed as it is written and its unused end punched out of the file, so what they take on disk is
# what their pages hold, compressed, and not the padding around off-page blobs or half-full pages (migration
# 0015; BENCHMARKS.md, Storage). Reads from the buffer pool are unchanged.
GROWING_TABLE_ARGS: dict[str, Any] = {**TABLE_ARGS, "mysql_page_compressed": "1"}


def table(model: type[Base]) -> Table:
    """The Core table of a model: statements on it skip the ORM's bulk paths (which drop NULL keys and then
    split a multi-row INSERT into one statement per shape of row)."""
    found = model.__table__
    assert isinstance(found, Table)
    return found


def utcnow() -> datetime:
    """Naive UTC, as stored in DATETIME columns."""
    return datetime.now(UTC).replace(tzinfo=None)


Timestamp = DATETIME(fsp=6)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    imap_host: Mapped[str] = mapped_column(String(255))
    imap_port: Mapped[int] = mapped_column(Integer)
    # "tls" (implicit, imaps://), "starttls", or "none" (loopback or explicitly allowed only)
    imap_security: Mapped[str] = mapped_column(String(16))
    imap_username: Mapped[str] = mapped_column(String(320))
    imap_password: Mapped[bytes | None] = mapped_column(LargeBinary(2048))  # sealed by schema.crypto; None: OAuth2
    tls_ca_file: Mapped[str | None] = mapped_column(String(1024))
    # SMTP submission (sending): host and port, "starttls", "tls" or "none"; the IMAP login unless set.
    smtp_host: Mapped[str | None] = mapped_column(String(255))
    smtp_port: Mapped[int | None] = mapped_column(Integer)
    smtp_security: Mapped[str | None] = mapped_column(String(16))
    smtp_username: Mapped[str | None] = mapped_column(String(320))
    smtp_password: Mapped[bytes | None] = mapped_column(LargeBinary(2048))  # sealed by schema.crypto
    # OAuth2 logins (oauth/): the provider's name and the sealed refresh token instead of a password; the access
    # token is cached sealed with its expiry, so every process of the account shares one.
    oauth2_provider: Mapped[str | None] = mapped_column(String(64))
    oauth2_refresh_token: Mapped[bytes | None] = mapped_column(LargeBinary(4096))
    oauth2_access_token: Mapped[bytes | None] = mapped_column(LargeBinary(4096))
    oauth2_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # pending -> syncing -> ready; auth_failed stops retries until credentials change, needs_consent (an OAuth2
    # grant refused) until the user consents again
    sync_state: Mapped[str] = mapped_column(String(32), default="pending")
    sync_error: Mapped[str | None] = mapped_column(Text)
    # When sync_error was last recorded (None while there is none): the operator status page shows it.
    sync_error_at: Mapped[datetime | None] = mapped_column(Timestamp)
    capabilities: Mapped[str | None] = mapped_column(Text)
    # How the account's messages are known (synccore.identity.IdentityMode): fixed by the first sync, so that a
    # server that starts offering OBJECTID later does not give every message a new identity.
    identity_mode: Mapped[str | None] = mapped_column(String(16))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Raised each time the lease changes hands: a unit of work of the sync core commits only while the epoch it
    # was given is still the account's (schema.leases, fencing).
    lease_epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The process group the account is pinned to (`inboxql sync --group G`); None: any process without a group.
    lease_group: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class SyncProcess(Base):
    """A running `inboxql sync`: its heartbeat says it is alive, and the live ones of a group share its accounts."""

    __tablename__ = "sync_processes"
    __table_args__ = TABLE_ARGS

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    group_name: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    heartbeat_at: Mapped[datetime] = mapped_column(Timestamp)
    # `inboxql fleet drain OWNER`: the process hands its accounts over and exits.
    draining: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class LeaseGrant(Base):
    """Each time an account's lease changed hands: who took it (the epoch), and the units of work it committed.
    Fencing makes one epoch's commits end before the next epoch begins (schema.leases)."""

    __tablename__ = "lease_grants"
    __table_args__ = TABLE_ARGS

    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    taken_at: Mapped[datetime] = mapped_column(Timestamp)
    commits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_commit_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ChangeSeq(Base):
    """The per-account change counter. Locking its row orders commits (see schema.changelog)."""

    __tablename__ = "change_seq"
    __table_args__ = TABLE_ARGS

    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class ChangeLog(Base):
    __tablename__ = "change_log"
    __table_args__ = (Index("ix_change_log_created", "created_at"), GROWING_TABLE_ARGS)

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    object_type: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(BigInteger)
    op: Mapped[str] = mapped_column(String(8))
    # The object's logged state after the change (None for a delete): folding the log rebuilds the mirror.
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Folder(Base):
    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_folders_name"), TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(512, collation="utf8mb4_bin"))
    delimiter: Mapped[str | None] = mapped_column(String(8))
    role: Mapped[str | None] = mapped_column(String(16))
    attributes: Mapped[str] = mapped_column(String(512), default="")
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uidnext: Mapped[int | None] = mapped_column(BigInteger)
    highestmodseq: Mapped[int | None] = mapped_column(BigInteger)
    # initial | follow | resync
    sync_state: Mapped[str] = mapped_column(String(16), default="initial")
    # Initial sync goes newest first: every UID in [sync_low_uid, sync_top_uid] is mirrored.
    sync_low_uid: Mapped[int | None] = mapped_column(BigInteger)
    sync_top_uid: Mapped[int | None] = mapped_column(BigInteger)
    total_count: Mapped[int] = mapped_column(Integer, default=0)
    unread_count: Mapped[int] = mapped_column(Integer, default=0)
    synced_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Why the last sync of this folder failed (e.g. the server refused SELECT); None once it synced again.
    sync_error: Mapped[str | None] = mapped_column(Text)
    sync_error_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # How many messages the server said the folder holds (EXISTS of the last SELECT, or STATUS before the folder's
    # first one): beside total_count it is the "x of N" of an initial sync. None until the server was asked.
    server_count: Mapped[int | None] = mapped_column(Integer)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_labels_name"), TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255, collation="utf8mb4_bin"))
    # "keyword" (an IMAP keyword on a generic server) or "gmail" (X-GM-LABELS)
    kind: Mapped[str] = mapped_column(String(16), default="keyword")
    # A Gmail system label's role as folders know it (\\Inbox: "inbox", \\Sent: "sent", \\Starred: "flagged", ...)
    role: Mapped[str | None] = mapped_column(String(16))


class MimeBlob(Base):
    """Raw MIME, content-addressed by the SHA-256 of the raw bytes, stored compressed."""

    __tablename__ = "mime_blobs"
    __table_args__ = (UniqueConstraint("sha256", name="uq_mime_blobs_sha256"), GROWING_TABLE_ARGS)

    # InnoDB clusters rows by primary key: keyed by a random hash, the pages of large rows split and stay
    # half empty; keyed by arrival, they fill up. The hash is a unique secondary key.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sha256: Mapped[bytes] = mapped_column(BINARY(32))
    size: Mapped[int] = mapped_column(Integer)
    codec: Mapped[str] = mapped_column(String(8))  # "zlib" or "raw"
    # The packed bytes, or b"" when they are in `chunks` rows of mime_blob_chunks (a blob larger than one
    # chunk: a single row would outgrow the server's max_allowed_packet, 16 MiB by default on MariaDB).
    data: Mapped[bytes] = mapped_column(LONGBLOB)
    chunks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class MimeBlobChunk(Base):
    """One piece of a large blob's packed bytes (schema.blobs.CHUNK_BYTES each): concatenated in `seq` order they
    are the blob's data."""

    __tablename__ = "mime_blob_chunks"
    __table_args__ = GROWING_TABLE_ARGS

    blob_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("mime_blobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(MEDIUMBLOB)


class SkippedMessage(Base):
    """A message of a folder that the sync left out, and why (larger than the sync downloads, or refused by the
    store even raw): listed by the API so it is never silently missing; its folder syncs on without it."""

    __tablename__ = "skipped_messages"
    __table_args__ = (
        UniqueConstraint("folder_id", "uidvalidity", "uid", name="uq_skipped_messages_uid"),
        Index("ix_skipped_messages_account", "account_id"),
        TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"))
    folder_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("folders.id", ondelete="CASCADE"))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int | None] = mapped_column(BigInteger)  # RFC822.SIZE as the server reported it
    # "too_large": over the size the sync downloads (looked at again on every pass, so a raised limit takes it);
    # "unstorable": the store refused it even raw (not downloaded again under this UIDVALIDITY).
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(1024))
    skipped_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Thread(Base):
    __tablename__ = "threads"
    __table_args__ = (
        Index("ix_threads_account_last", "account_id", "last_message_at", "id"),
        Index("ix_threads_subject", "account_id", "normalized_subject"),
        GROWING_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(Text, default="")
    normalized_subject: Mapped[str] = mapped_column(String(191), default="")
    snippet: Mapped[str] = mapped_column(String(255), default="")
    participants: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    unread_count: Mapped[int] = mapped_column(Integer, default=0)
    starred: Mapped[bool] = mapped_column(Boolean, default=False)
    first_message_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_message_at: Mapped[datetime | None] = mapped_column(Timestamp)
    folder_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    label_ids: Mapped[list[int]] = mapped_column(JSON, default=list)


class ThreadRef(Base):
    """Every Message-ID a thread has seen (its messages' own and the ones they reference): JWZ containers."""

    __tablename__ = "thread_refs"
    __table_args__ = (Index("ix_thread_refs_thread", "thread_id"), GROWING_TABLE_ARGS)

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ref_hash: Mapped[bytes] = mapped_column(BINARY(16), primary_key=True)
    thread_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("threads.id", ondelete="CASCADE"))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("account_id", "identity", name="uq_messages_identity"),
        # No flag column: a flag change's UPDATE would write its entries too (migration 0020 undid 0017's).
        Index("ix_messages_thread", "thread_id", "orphaned_at"),
        Index("ix_messages_account_received", "account_id", "received_at", "id"),
        Index("ix_messages_msgid", "account_id", "message_id_header"),
        Index("ix_messages_blob", "blob_sha256"),
        Index("ix_messages_orphaned", "account_id", "orphaned_at"),
        # Local full-text search over subject, addresses and body text (the gateway's `search`).
        Index("ft_messages_search", "subject", "search_addresses", "text_body", mysql_prefix="FULLTEXT"),
        GROWING_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"))
    # "guid:<X-GUID>", "objectid:<EMAILID>", "gm:<X-GM-MSGID>", or "hash:<sha256(Message-ID, raw)>"
    identity: Mapped[str] = mapped_column(String(128, collation="ascii_bin"))
    thread_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("threads.id"))
    blob_sha256: Mapped[bytes] = mapped_column(BINARY(32))
    size: Mapped[int] = mapped_column(Integer)
    message_id_header: Mapped[str | None] = mapped_column(String(191))
    in_reply_to: Mapped[str | None] = mapped_column(String(255))
    references: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    from_addrs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    to_addrs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    cc_addrs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    bcc_addrs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    reply_to_addrs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # Names and addresses of From, To and Cc as plain text, for the FULLTEXT index (MariaDB cannot index
    # JSON, and JSON would hide non-ASCII names behind escapes).
    search_addresses: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[datetime | None] = mapped_column(Timestamp)
    received_at: Mapped[datetime] = mapped_column(Timestamp)
    snippet: Mapped[str] = mapped_column(String(255), default="")
    text_body: Mapped[str] = mapped_column(MEDIUMTEXT, default="")
    html_body: Mapped[bytes | None] = mapped_column(MEDIUMBLOB)  # zlib-compressed UTF-8
    has_attachments: Mapped[bool] = mapped_column(Boolean, default=False)
    malformed: Mapped[bool] = mapped_column(Boolean, default=False)
    defects: Mapped[str] = mapped_column(String(1024), default="")
    # Aggregates over the places: unread if any copy is unseen, starred if any copy is flagged.
    unread: Mapped[bool] = mapped_column(Boolean, default=True)
    starred: Mapped[bool] = mapped_column(Boolean, default=False)
    answered: Mapped[bool] = mapped_column(Boolean, default=False)
    draft: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when the last place vanished: a move shows up as an expunge here before the arrival there, so
    # the message waits (keeping its id) until a full pass over the folders has not found it again.
    orphaned_at: Mapped[datetime | None] = mapped_column(Timestamp)


class MessagePlace(Base):
    __tablename__ = "message_places"
    __table_args__ = (
        UniqueConstraint("folder_id", "uidvalidity", "uid", name="uq_places_uid"),
        Index("ix_places_message", "message_id"),
        GROWING_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("messages.id", ondelete="CASCADE"))
    folder_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("folders.id", ondelete="CASCADE"))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    # System flags and keywords as the server reports them, sorted, space separated.
    flags: Mapped[str] = mapped_column(String(1024, collation="utf8mb4_bin"), default="")
    modseq: Mapped[int | None] = mapped_column(BigInteger)
    # Gmail's X-GM-LABELS of the message at this place, sorted, one per line ("" elsewhere): schema.gmail.
    labels: Mapped[str] = mapped_column(Text(collation="utf8mb4_bin"), default="", server_default="")


class MessageLabel(Base):
    __tablename__ = "message_labels"
    __table_args__ = (Index("ix_message_labels_label", "label_id"), GROWING_TABLE_ARGS)

    message_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    label_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True)


class Attachment(Base):
    __tablename__ = "attachments"
    __table_args__ = (Index("ix_attachments_message", "message_id"), GROWING_TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("messages.id", ondelete="CASCADE"))
    part_id: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(512))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    content_id: Mapped[str | None] = mapped_column(String(255))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """A gateway API token; only its SHA-256 is stored (see schema.tokens)."""

    __tablename__ = "api_tokens"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    token_hash: Mapped[bytes] = mapped_column(BINARY(32), unique=True)
    # The first characters of the token (prefix included), so an operator can tell tokens apart.
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The admin scope: the token may also manage the webhooks of the accounts it grants, and only of those.
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A read-only token is refused every mutation.
    read_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The operator scope: the token manages accounts (add, list, remove, set credentials) and grants no mail.
    operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What the token is for, as its creator named it (`inboxql token create --name`); shown by `token list`.
    name: Mapped[str | None] = mapped_column(String(64))


class ApiTokenAccount(Base):
    __tablename__ = "api_token_accounts"
    __table_args__ = (Index("ix_api_token_accounts_account", "account_id"), TABLE_ARGS)

    token_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key to `accounts`: grants live on shard 0 and name accounts of any shard (schema.shards);
    # account removal deletes them (schema.accounts.remove).
    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class Webhook(Base):
    """An HTTP endpoint that receives an account's change log, signed (see schema.webhooks)."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_account", "account_id"), Index("ix_webhooks_state", "state"), TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    # Object types ("message"), type.op ("message.create"), or ["*"].
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[bytes] = mapped_column(LargeBinary(1024))  # sealed by schema.crypto
    # The newest change-log seq this hook has been given (or skipped because it did not subscribe to it).
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    # active | disabled
    state: Mapped[str] = mapped_column(String(16), default="active")
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    failing_since: Mapped[datetime | None] = mapped_column(Timestamp)
    # Consecutive failed attempts of the event at the cursor, and when to try it again (backoff survives restarts).
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The attempt in flight (schema.webhooks.claim): its token, and when the claim lapses should its process die
    # before recording the outcome (another process then sends the same event again: at-least-once).
    claim: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Action(Base):
    """The write-back queue: what a mutation asked of the mail server (see schema.actions).

    Written in the transaction that applied the change to the mirror (optimistically); the sync process that
    holds the account's lease performs it on the server, in id order, and marks it done, or failed with the
    server's reason after undoing the mirror's change.
    """

    __tablename__ = "actions"
    __table_args__ = (Index("ix_actions_account_state", "account_id", "state", "id"), TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"))
    # flags | move | expunge | folder_create | folder_rename | folder_delete | draft_save
    kind: Mapped[str] = mapped_column(String(16))
    # pending | done | failed
    state: Mapped[str] = mapped_column(String(12), default="pending")
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    folder_id: Mapped[int | None] = mapped_column(BigInteger)
    # What to do and what to restore on failure: places with their flags before, target folder, names.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ActionMessage(Base):
    """The messages of an action that names several: a flag change of many messages is one action
    (schema.actions.set_flags). An action about one message names it in `actions.message_id` instead. The folder
    sync reads both to leave a pending change alone (schema.actions.pending_messages)."""

    __tablename__ = "action_messages"
    __table_args__ = (Index("ix_action_messages_message", "message_id"), TABLE_ARGS)

    action_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("actions.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class Outbox(Base):
    """A message to send (see schema.outbox): queued -> sending -> sent, or failed, uncertain, cancelled."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_account_state", "account_id", "state", "send_at"), TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(12), default="queued")
    # What is delivered (no Bcc header) and, for the Sent folder, the same with its Bcc header.
    message: Mapped[bytes] = mapped_column(LONGBLOB)
    sent_copy: Mapped[bytes] = mapped_column(LONGBLOB)
    envelope_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    message_id_header: Mapped[str] = mapped_column(String(191))
    # The mirrored message shown in Sent at once (its place waits for the server's UID); the replied message.
    mirror_message_id: Mapped[int | None] = mapped_column(BigInteger)
    reply_to_message_id: Mapped[int | None] = mapped_column(BigInteger)
    send_at: Mapped[datetime] = mapped_column(Timestamp)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(Text)
    # The server's reply to DATA, e.g. "250 2.0.0 Ok: queued as 4XyZ".
    smtp_response: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Upload(Base):
    """A file a client uploaded to attach to a message it sends (see schema.uploads); the bytes are in
    upload_blobs, once per content."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_account", "account_id"),
        Index("ix_uploads_sha256", "sha256"),
        Index("ix_uploads_expires", "expires_at"),
        TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"))
    # The token that uploaded it (kept for audit; the account decides who may use it).
    # The token that uploaded it (a record: nothing checks it). No foreign key: an upload lives on its account's
    # shard, the token on shard 0 (schema.shards).
    token_id: Mapped[int | None] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[bytes] = mapped_column(BINARY(32))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    # Pruned after this: a day after the upload, or after the send that used it last.
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class UploadBlob(Base):
    """Uploaded bytes, content-addressed like mime_blobs but apart from them: those go when no message holds
    them, these when no upload does."""

    __tablename__ = "upload_blobs"
    __table_args__ = (UniqueConstraint("sha256", name="uq_upload_blobs_sha256"), TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sha256: Mapped[bytes] = mapped_column(BINARY(32))
    size: Mapped[int] = mapped_column(BigInteger)
    codec: Mapped[str] = mapped_column(String(8))  # "zlib" or "raw"
    data: Mapped[bytes] = mapped_column(LONGBLOB)
    # Written or written again: pruning spares blobs touched lately (an upload of the same bytes may be on its way).
    touched_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class MutationKey(Base):
    """An idempotency key a client sent with a mutation, and the payload it got: a retry gets the same one."""

    __tablename__ = "mutation_keys"
    __table_args__ = (Index("ix_mutation_keys_created", "created_at"), TABLE_ARGS)

    # No foreign key to `api_tokens`: a key is kept on the shard of the account its mutation wrote, in the same
    # transaction, and tokens live on shard 0 (schema.shards).
    token_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(String(128, collation="ascii_bin"), primary_key=True)
    mutation: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class WebhookDelivery(Base):
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_hook", "webhook_id", "id"), TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhooks.id", ondelete="CASCADE"))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ConsentFlow(Base):
    """One step of an OAuth2 consent flow (gateway.consent): a start link an operator minted, or a `state` sent to
    the provider with its PKCE verifier. Keyed by the SHA-256 of the secret the browser carries (a copy of the
    table opens no flow), used once (taken by deleting it) and only until it expires."""

    __tablename__ = "oauth2_flows"
    __table_args__ = (Index("ix_oauth2_flows_expires", "expires_at"), TABLE_ARGS)

    key: Mapped[bytes] = mapped_column(BINARY(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # "link" or "state"
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


__all__ = [
    "Account",
    "Action",
    "ActionMessage",
    "ApiToken",
    "ApiTokenAccount",
    "Attachment",
    "Base",
    "ChangeLog",
    "ChangeSeq",
    "ConsentFlow",
    "Folder",
    "Label",
    "Message",
    "MessageLabel",
    "MessagePlace",
    "MimeBlob",
    "MimeBlobChunk",
    "MutationKey",
    "Outbox",
    "SkippedMessage",
    "Thread",
    "ThreadRef",
    "Upload",
    "UploadBlob",
    "Webhook",
    "WebhookDelivery",
    "utcnow",
]
