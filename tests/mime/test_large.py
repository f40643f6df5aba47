"""A large attachment is measured, not decoded: its size is exact and the parse holds few copies of it."""

from __future__ import annotations

import base64
import random
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

import mime.entity
from mime import parse_message
from mime.entity import _decode_base64, base64_size

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def with_attachment(payload: bytes) -> bytes:
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        b"Subject: large\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="a.bin"\r\n\r\n' + encoded + b"--b--\r\n"
    )


def test_a_large_attachment_is_sized_exactly_without_copies_of_it() -> None:
    payload = random.Random(1).randbytes(8 << 20)
    raw = with_attachment(payload)
    tracemalloc.start()
    try:
        parsed = parse_message(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(a.filename, a.size) for a in parsed.attachments] == [("a.bin", len(payload))]
    assert parsed.text_body == "See the attachment."
    # The raw message is the caller's; the parse may copy the attachment's part once or twice, not decode it and
    # copy it per level of the MIME tree (it peaked at 4.7x the message before).
    assert peak < 2.5 * len(raw)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=80).map(base64.encodebytes),
        st.lists(st.sampled_from(list(_ALPHABET + b"= \r\n\t!*"))).map(bytes),
    ),
    st.integers(min_value=1, max_value=9),
)
def test_measured_base64_is_decoded_base64s_length_with_the_same_defects(data: bytes, chunk: int) -> None:
    expected: list[str] = []
    size = len(_decode_base64(data, expected))
    measured: list[str] = []
    saved = mime.entity._MEASURE_BYTES
    mime.entity._MEASURE_BYTES = chunk  # small chunks: quanta and padding across their edges
    try:
        assert (base64_size(data, measured), measured) == (size, expected)
    finally:
        mime.entity._MEASURE_BYTES = saved
