"""A Gmail mailbox for the sync tests and the bench: messages with several labels each, in threads of four."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.gmailstore import GmailStore, Mail

USER_LABELS = ("Work", "Travel", "Receipts", "Family")
START = datetime(2026, 11, 1, tzinfo=UTC)


def message(n: int, *, size: int = 1200) -> bytes:
    """Message n; every fourth starts a thread the next three reply to."""
    head = n - n % 4
    reply = f"In-Reply-To: <g{head}@gmail.test>\r\nReferences: <g{head}@gmail.test>\r\n" if n != head else ""
    subject = f"{'Re: ' if n != head else ''}topic {head}"
    body = (f"line {n} of the conversation about topic {head}\r\n" * (size // 48 + 1))[:size]
    date = f"{(START + timedelta(minutes=n)):%a, %d %b %Y %H:%M:%S +0000}"
    return (
        f"From: Friend {n % 13} <friend{n % 13}@example.test>\r\nTo: me@gmail.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <g{n}@gmail.test>\r\n{reply}Date: {date}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def labels_of(n: int) -> set[str]:
    labels = {USER_LABELS[n % 4], USER_LABELS[(n // 4 + 1) % 4]}
    if n % 3 == 0:
        labels.add("\\Inbox")
    if n % 5 == 0:
        labels.add("\\Important")
    if n % 7 == 0:
        labels.add("\\Sent")
    return labels


def flags_of(n: int) -> set[str]:
    flags = {"\\Seen"} if n % 2 else set()
    if n % 11 == 0:
        flags.add("\\Flagged")
    return flags


def seed(store: GmailStore, count: int, *, size: int = 1200) -> list[Mail]:
    return [
        store.add(
            message(n, size=size), labels=labels_of(n), flags=flags_of(n), internaldate=START + timedelta(minutes=n)
        )
        for n in range(count)
    ]
