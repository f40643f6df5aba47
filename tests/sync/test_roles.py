"""Folder roles: RFC 6154 SPECIAL-USE flags first, well-known (and localized) names as the fallback."""

from __future__ import annotations

import pytest

from synccore.roles import assign_roles, folder_role


@pytest.mark.parametrize("name", ["INBOX", "Inbox", "inbox", "iNbOx"])
def test_inbox_in_any_case_is_the_inbox(name: str) -> None:
    # RFC 3501 §5.1: INBOX is case-insensitive.
    assert folder_role(name, ()) == "inbox"


@pytest.mark.parametrize(
    ("name", "flags", "expected"),
    [
        ("Trash", ["\\Sent"], "sent"),
        ("Papierkorb", ["\\Archive"], "archive"),
        ("Whatever", ["\\HasNoChildren", "\\Junk"], "junk"),
        ("Stuff", ["\\drafts"], "drafts"),
        ("[Gmail]/All Mail", ["\\All", "\\HasNoChildren"], "all"),
        ("[Gmail]/Starred", ["\\Flagged"], "flagged"),
        ("[Gmail]/Important", ["\\Important"], "important"),
    ],
)
def test_special_use_flags_win_over_names(name: str, flags: list[str], expected: str) -> None:
    assert folder_role(name, flags, "/") == expected


@pytest.mark.parametrize(
    ("name", "delimiter", "expected"),
    [
        ("Sent", "/", "sent"),
        ("Sent Items", "/", "sent"),
        ("Gesendete Elemente", "/", "sent"),
        ("Éléments envoyés", "/", "sent"),
        ("Отправленные", "/", "sent"),
        ("送信済み", "/", "sent"),
        ("INBOX.Sent", ".", "sent"),
        ("[Gmail]/Sent Mail", "/", "sent"),
        ("Entwürfe", "/", "drafts"),
        ("Brouillons", "/", "drafts"),
        ("Papierkorb", "/", "trash"),
        ("Corbeille", "/", "trash"),
        ("Deleted Items", "/", "trash"),
        ("Spam", "/", "junk"),
        ("Courrier indésirable", "/", "junk"),
        ("Archiv", "/", "archive"),
        ("Projects", "/", None),
        ("Sent/2019", "/", None),
    ],
)
def test_localized_names_give_roles_without_special_use(name: str, delimiter: str, expected: str | None) -> None:
    assert folder_role(name, (), delimiter) == expected


def test_a_role_taken_by_a_flag_is_not_given_again_by_a_name() -> None:
    roles = assign_roles(
        [
            ("Sent", frozenset(), "/"),  # listed before the flagged folder: order must not matter
            ("INBOX", frozenset(), "/"),
            ("Sent Items", frozenset({"\\Sent"}), "/"),
            ("Trash", frozenset(), "/"),
        ]
    )
    assert roles == {"Sent": None, "INBOX": "inbox", "Sent Items": "sent", "Trash": "trash"}


def test_two_names_for_one_role_give_it_once() -> None:
    roles = assign_roles([("Trash", frozenset(), "/"), ("Deleted Items", frozenset(), "/")])
    assert roles == {"Trash": "trash", "Deleted Items": None}


def test_the_inbox_keeps_its_role_in_a_listing_in_any_case() -> None:
    roles = assign_roles([("inbox", frozenset({"\\HasNoChildren"}), "/"), ("Drafts", frozenset({"\\Drafts"}), "/")])
    assert roles == {"inbox": "inbox", "Drafts": "drafts"}
