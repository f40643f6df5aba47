"""Ids and cursors keep their wire format: clients hold them across releases (gateway.ids)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from gateway.ids import decode_page_cursor, encode_page_cursor, from_global, to_global


def test_global_ids_are_unpadded_base64url_of_type_and_number() -> None:
    assert to_global("Thread", 6030) == "VGhyZWFkOjYwMzA"
    assert from_global("VGhyZWFkOjYwMzA") == ("Thread", 6030)
    for pk in (1, 62, 63, 999, 2**40, 2**63 - 1):  # every padding length, and ids whose base64 holds - and _
        gid = to_global("Message", pk)
        assert gid == base64.urlsafe_b64encode(f"Message:{pk}".encode()).rstrip(b"=").decode()
        assert from_global(gid) == ("Message", pk)


def test_page_cursors_are_compact_ascii_json_of_the_sort_keys() -> None:
    when = datetime(2026, 10, 31, 5, 56, 1)
    assert encode_page_cursor([when, 6030]) == "W3sidCI6IjIwMjYtMTAtMzFUMDU6NTY6MDEifSw2MDMwXQ"
    values = ["Entwürfe/ünïcode ✓", 12]
    cursor = encode_page_cursor(values)
    text = json.dumps(values, separators=(",", ":"))  # non-ASCII escaped, as cursors always were
    assert cursor == base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    assert decode_page_cursor(cursor, 2) == tuple(values)
    assert decode_page_cursor(encode_page_cursor([when, 7]), 2) == (when, 7)


def test_page_cursors_written_directly_are_the_json_encoders_to_the_byte() -> None:
    # Ints, finite floats and datetimes are written without the encoder; anything else takes it.
    samples: list[list[object]] = [
        [datetime(2026, 10, 31, 5, 56, 1, 250), 6030],
        [datetime(2026, 10, 31, 5, 56, 1, tzinfo=UTC), 2**63 - 1],
        [12.345678901234567, 7],
        [1e-7, 1e22, -0.0, 0.1, 3.0],
        [float("inf"), 1],
        [True, 1],
        ["Entwürfe", 12.5, None],
    ]
    for values in samples:
        text = json.dumps(
            [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in values], separators=(",", ":")
        )
        assert encode_page_cursor(values) == base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode(), values
