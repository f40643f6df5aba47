"""The folder sync's pure decisions, as tables."""

from __future__ import annotations

import pytest

from synccore.planning import (
    ReconcilePlan,
    clean_flags,
    flags_text,
    nothing_changed,
    plan_batches,
    plan_reconcile,
    status_unchanged,
    too_large,
    uidvalidity_changed,
)

Local = dict[int, tuple[str, str]]
Remote = dict[int, tuple[str, str | None]]


@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        pytest.param({}, {}, ReconcilePlan(), id="nothing-anywhere"),
        pytest.param(
            {1: ("\\Seen", "a"), 2: ("", "b")},
            {1: ("\\Seen", "a"), 2: ("", "b")},
            ReconcilePlan(),
            id="in-step",
        ),
        pytest.param(
            {},
            {3: ("", None), 1: ("", None), 7: ("\\Seen", None)},
            ReconcilePlan(new=[7, 3, 1]),
            id="new-uids-newest-first",
        ),
        pytest.param(
            {5: ("", "e"), 2: ("", "b"), 9: ("", "i")},
            {2: ("", "b")},
            ReconcilePlan(removed=[5, 9]),
            id="vanished-uids-sorted",
        ),
        pytest.param(
            {4: ("", "d"), 1: ("\\Seen", "a"), 2: ("\\Seen", "b")},
            {4: ("\\Flagged", "d"), 1: ("", "a"), 2: ("\\Seen", "b")},
            ReconcilePlan(flag_changes=[1, 4]),
            id="flag-changes-sorted",
        ),
        pytest.param(
            {1: ("", "a")},
            {1: ("", "z")},
            ReconcilePlan(new=[1], removed=[1]),
            id="other-identity-under-same-uid-is-replaced",
        ),
        pytest.param(
            {1: ("\\Seen", "a")},
            {1: ("", "z")},
            ReconcilePlan(new=[1], removed=[1]),
            id="replaced-uid-is-not-also-a-flag-change",
        ),
        pytest.param(
            {1: ("", "a")},
            {1: ("\\Seen", None)},
            ReconcilePlan(flag_changes=[1]),
            id="unknown-remote-identity-trusts-the-uid",
        ),
        pytest.param(
            {1: ("", "a"), 2: ("", "b"), 3: ("", "c")},
            {2: ("\\Seen", "b"), 3: ("", "x"), 4: ("", None), 10: ("", None)},
            ReconcilePlan(new=[10, 4, 3], removed=[1, 3], flag_changes=[2]),
            id="everything-at-once",
        ),
    ],
)
def test_plan_reconcile(local: Local, remote: Remote, expected: ReconcilePlan) -> None:
    assert plan_reconcile(local, remote) == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], ()),
        (["\\Seen"], ("\\Seen",)),
        (["\\Seen", "\\Recent"], ("\\Seen",)),
        (["\\RECENT", "\\recent"], ()),
        (["\\Seen", "\\Seen", "\\Flagged"], ("\\Flagged", "\\Seen")),
        (["\\Seen", "$Label1", "\\Answered"], ("$Label1", "\\Answered", "\\Seen")),
        (["Work", "work"], ("Work", "work")),
    ],
)
def test_clean_flags_drops_session_flags_dedups_and_sorts(flags: list[str], expected: tuple[str, ...]) -> None:
    assert clean_flags(flags) == expected


def test_flags_text_is_clean_flags_joined() -> None:
    assert flags_text(["\\Seen", "\\Recent", "$A", "\\Seen"]) == "$A \\Seen"
    assert flags_text([]) == ""


@pytest.mark.parametrize(
    ("stored", "reported", "expected"),
    [
        (None, 1, False),  # never selected before: nothing to compare
        (1, 1, False),
        (1, 2, True),
        (3857529045, 3857529045, False),
        (3857529045, 1, True),
    ],
)
def test_uidvalidity_changed(stored: int | None, reported: int, expected: bool) -> None:
    assert uidvalidity_changed(stored, reported) is expected


@pytest.mark.parametrize(
    ("stored_modseq", "stored_uidnext", "modseq", "uidnext", "exists", "local_count", "expected"),
    [
        pytest.param(10, 5, 10, 5, 4, 4, True, id="same-everything"),
        pytest.param(10, 5, 11, 5, 4, 4, False, id="modseq-moved"),
        pytest.param(10, 5, 10, 6, 4, 4, False, id="uidnext-moved"),
        pytest.param(10, 5, 10, 5, 3, 4, False, id="an-expunge"),
        pytest.param(10, 5, 10, 5, 5, 4, False, id="more-on-server"),
        pytest.param(None, 5, None, 5, 4, 4, False, id="no-condstore"),
        pytest.param(10, None, 10, None, 4, 4, False, id="no-stored-uidnext"),
        pytest.param(None, None, None, None, 0, 0, False, id="never-synced"),
    ],
)
def test_nothing_changed(
    stored_modseq: int | None,
    stored_uidnext: int | None,
    modseq: int | None,
    uidnext: int | None,
    exists: int,
    local_count: int,
    expected: bool,
) -> None:
    assert nothing_changed(stored_modseq, stored_uidnext, modseq, uidnext, exists, local_count) is expected


# A folder as its last sync left it: UIDVALIDITY 7, UIDNEXT 101, HIGHESTMODSEQ 500, 90 messages (server and mirror).
AS_LEFT = {"UIDVALIDITY": 7, "UIDNEXT": 101, "HIGHESTMODSEQ": 500, "MESSAGES": 90}


@pytest.mark.parametrize(
    ("cursor", "held", "status", "expected"),
    [
        pytest.param((7, 101, 500, 90), 90, AS_LEFT, True, id="as-left"),
        pytest.param((7, 101, 500, 90), 90, {**AS_LEFT, "UNSEEN": 3}, True, id="more-items-than-asked"),
        pytest.param((7, 101, 500, 90), 90, {**AS_LEFT, "HIGHESTMODSEQ": 501}, False, id="flags-changed"),
        pytest.param((7, 101, 500, 90), 90, {**AS_LEFT, "UIDNEXT": 102, "MESSAGES": 91}, False, id="arrived"),
        pytest.param((7, 101, 500, 90), 90, {**AS_LEFT, "UIDNEXT": 103}, False, id="arrived-and-expunged"),
        pytest.param((7, 101, 500, 90), 90, {**AS_LEFT, "MESSAGES": 89}, False, id="expunged-same-modseq"),
        pytest.param((7, 101, 500, 90), 90, {**AS_LEFT, "UIDVALIDITY": 8}, False, id="new-uidvalidity"),
        pytest.param((7, 101, 500, 90), 89, AS_LEFT, False, id="mirror-holds-fewer"),
        pytest.param((7, 101, 500, 91), 90, AS_LEFT, False, id="server-count-recorded-differs"),
        pytest.param((7, 101, None, 90), 90, AS_LEFT, False, id="no-modseq-recorded"),
        pytest.param((7, 101, 0, 90), 90, {**AS_LEFT, "HIGHESTMODSEQ": 0}, False, id="nomodseq-mailbox"),
        pytest.param((7, None, 500, 90), 90, AS_LEFT, False, id="no-uidnext-recorded"),
        pytest.param((None, 101, 500, 90), 90, AS_LEFT, False, id="no-uidvalidity-recorded"),
        pytest.param((7, 101, 500, None), 90, AS_LEFT, False, id="count-never-recorded"),
        *(
            pytest.param(
                (7, 101, 500, 90), 90, {k: v for k, v in AS_LEFT.items() if k != item}, False, id=f"answer-lacks-{item}"
            )
            for item in AS_LEFT
        ),
    ],
)
def test_status_unchanged(
    cursor: tuple[int | None, int | None, int | None, int | None], held: int, status: dict[str, int], expected: bool
) -> None:
    assert status_unchanged(*cursor, held, status) is expected


MB = 1_000_000


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        pytest.param([], [], id="nothing"),
        pytest.param([(9, 1000), (8, 1000)], [[9, 8]], id="small-mail-one-batch"),
        pytest.param([(9, 3 * MB), (8, 3 * MB), (7, 3 * MB)], [[9, 8], [7]], id="cut-at-the-byte-budget"),
        pytest.param([(9, 1000), (8, 20 * MB), (7, 1000)], [[9], [8], [7]], id="a-large-message-alone"),
        pytest.param([(n, 10) for n in range(5, 0, -1)], [[5, 4], [3, 2], [1]], id="cut-at-the-count"),
        pytest.param([(3, None), (2, None), (1, 7 * MB)], [[3, 2], [1]], id="unknown-size-counts-by-number"),
    ],
)
def test_batches_are_sized_by_bytes_and_count(sizes: list[tuple[int, int | None]], expected: list[list[int]]) -> None:
    assert plan_batches(sizes, budget=6 * MB, most=2) == expected


@pytest.mark.parametrize(("size", "expected"), [(None, False), (100, False), (1000, False), (1001, True)])
def test_too_large_is_strictly_over_the_limit(size: int | None, expected: bool) -> None:
    assert too_large(size, 1000) is expected
