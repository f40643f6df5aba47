"""schema.gmail's pure pieces: how labels are kept on a place and compared, and the system labels' roles."""

from __future__ import annotations

import pytest

from schema.gmail import label_role, labels_text, place_key


@pytest.mark.parametrize(
    ("labels", "stored"),
    [
        ((), ""),
        (("Work", "\\Inbox", "Work"), "Work\n\\Inbox"),
        (("Muy Importante", "A"), "A\nMuy Importante"),  # a label may hold spaces: one per line
    ],
)
def test_labels_are_stored_sorted_once_each(labels: tuple[str, ...], stored: str) -> None:
    assert labels_text(labels) == stored


@pytest.mark.parametrize(
    ("flags", "labels", "key"),
    [
        ("\\Seen", "", "\\Seen"),  # elsewhere than Gmail, what the folder sync always compared
        ("\\Seen", "Work", "\\Seen\nWork"),
        ("", "Work", "\nWork"),  # no flags, a label: not the same as the flag "Work"
    ],
)
def test_place_key_compares_labels_beside_flags(flags: str, labels: str, key: str) -> None:
    assert place_key(flags, labels) == key


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("\\Inbox", "inbox"),
        ("\\Sent", "sent"),
        ("\\Draft", "drafts"),
        ("\\Starred", "flagged"),
        ("\\Important", "important"),
        ("\\Trash", "trash"),
        ("\\Spam", "junk"),
        ("Work", None),
        ("\\Seen", None),
    ],
)
def test_system_labels_have_their_folders_role(name: str, role: str | None) -> None:
    assert label_role(name) == role
