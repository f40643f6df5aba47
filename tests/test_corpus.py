"""mime against real mail (see tests/corpus.py), checked against the stdlib's own reading.

The reference is Python's `email` package with `policy=email.policy.default`, whose header parser
follows RFC 5322/2047/2231 closely. Where its answer is not better than ours we say so, narrowly:

* it keeps no display name for `addr (Full Name)`; we take the comment, as mail clients do;
* it spells an empty `<>` address as "<>"; we give "";
* undeclared 8-bit header bytes it decodes as UTF-8 with U+FFFD; we fall back to cp1252, so values
  where it produced U+FFFD or surrogates are not compared.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage, Message
from email.utils import getaddresses

import pytest

from inboxql.mailgen import generate
from mime import ParsedMessage, extract_part, parse_message
from mime.defects import MALFORMING_DEFECTS
from mime.headers import plain_addresses
from tests.corpus import corpus_messages, split_mbox

pytestmark = pytest.mark.slow

ADDRESS_FIELDS = {
    "from": "from_",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "reply-to": "reply_to",
    "sender": "sender",
}
OUR_DEFECTS_FOR_EXCEPTIONS = {"UnparsableMessage", "HeaderParseError", "PartDecodeError"}


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, bytes]]:
    return corpus_messages()


@pytest.fixture(scope="module")
def parsed(corpus: list[tuple[str, bytes]]) -> dict[str, ParsedMessage]:
    return {name: parse_message(raw) for name, raw in corpus}


def test_corpus_is_large_enough(corpus: list[tuple[str, bytes]]) -> None:
    assert len(corpus) >= 300
    assert len({name for name, _ in corpus}) == len(corpus)
    assert sum(name.startswith("notmuch/") for name, _ in corpus) >= 250


def test_every_message_parses_without_internal_errors(parsed: dict[str, ParsedMessage]) -> None:
    # parse_message cannot raise; an exception inside it would show up as one of these defects.
    broken = {name: p.defects for name, p in parsed.items() if OUR_DEFECTS_FOR_EXCEPTIONS & set(p.defects)}
    assert broken == {}


def test_flags_some_but_not_most_as_malformed(parsed: dict[str, ParsedMessage]) -> None:
    malformed = [name for name, p in parsed.items() if p.malformed]
    assert 5 <= len(malformed) <= len(parsed) // 5
    assert all(MALFORMING_DEFECTS & set(parsed[name].defects) for name in malformed)


def test_structural_defects_agree_with_the_stdlib_feedparser(
    corpus: list[tuple[str, bytes]], parsed: dict[str, ParsedMessage]
) -> None:
    # Our splitter replaces the feedparser for speed; it must see the same breakage.
    ours_only = {"CharsetMismatch", "UnknownCharset"}
    disagreements = {}
    for name, raw in corpus:
        expected: set[str] = set()
        for part in email.message_from_bytes(raw, policy=email.policy.compat32).walk():
            if not part.is_multipart():
                part.get_payload(decode=True)  # base64 defects are found while decoding
            expected |= {type(defect).__name__ for defect in part.defects}
        found = set(parsed[name].defects) - ours_only
        if found != expected:
            disagreements[name] = (sorted(expected), sorted(found))
    assert disagreements == {}


def test_most_messages_have_the_basics(parsed: dict[str, ParsedMessage]) -> None:
    notmuch = [p for name, p in parsed.items() if name.startswith("notmuch/lkml/")]
    assert all(p.from_ and p.date and p.message_id for p in notmuch)
    assert sum(bool(p.references) for p in notmuch) > len(notmuch) // 2
    # The rest are encrypted, attachment-only or empty (checked by hand).
    assert sum(bool(p.snippet) for p in parsed.values()) > len(parsed) * 0.85


def test_attachments_can_be_extracted(corpus: list[tuple[str, bytes]], parsed: dict[str, ParsedMessage]) -> None:
    checked = 0
    for name, raw in corpus:
        for attachment in parsed[name].attachments:
            extracted = extract_part(raw, attachment.part_id)
            assert extracted is not None, (name, attachment)
            data, content_type, filename = extracted
            assert (content_type, filename) == (attachment.content_type, attachment.filename)
            if not content_type.startswith("message/"):
                assert len(data) == attachment.size, (name, attachment)
            checked += 1
    assert checked >= 50


def _norm(value: object) -> str:
    return " ".join(str(value).split())


def _lossy(value: str) -> bool:
    return "\ufffd" in value or any("\ud800" <= char <= "\udfff" for char in value)


def _reference_filenames(message: Message) -> list[str]:
    """Filenames of the leaf parts, not descending into attached messages (as ours does not)."""
    names: list[str] = []
    stack = [message]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            stack.extend(child for child in payload if isinstance(child, Message))
            continue
        filename = part.get_filename()
        if filename:
            names.append(_norm(filename))
    return sorted(names)


def _disagreements(raw: bytes, ours: ParsedMessage) -> list[str]:
    try:
        reference = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(reference, EmailMessage)
        problems: list[str] = []
        subject = reference.get("subject")
        expected = _norm(subject) if subject is not None else ""
        if not _lossy(expected) and expected != ours.subject:
            problems.append(f"subject {expected!r} != {ours.subject!r}")
        for field, attribute in ADDRESS_FIELDS.items():
            headers = reference.get_all(field) or []
            raw_text = " ".join(v for k, v in reference.raw_items() if k.lower() == field)
            expected_pairs = [
                (_norm(a.display_name), "" if a.addr_spec == "<>" else a.addr_spec)
                for header in headers
                for a in header.addresses
            ]
            ours_pairs = [(a.name, a.address) for a in getattr(ours, attribute)]
            if any(_lossy(name) for name, _ in expected_pairs):
                continue
            if len(expected_pairs) == len(ours_pairs):
                ours_pairs = [
                    (ref_name, ref_address)
                    if (ref_name, ref_address) == (name, address)
                    or (not ref_name and ref_address == address and f"({name})" in _norm(raw_text))
                    else (name, address)
                    for (ref_name, ref_address), (name, address) in zip(expected_pairs, ours_pairs, strict=True)
                ]
            if expected_pairs != ours_pairs:
                problems.append(f"{field} {expected_pairs!r} != {ours_pairs!r}")
        expected_names = _reference_filenames(reference)
        ours_names = sorted(a.filename for a in ours.attachments if a.filename)
        if not any(map(_lossy, expected_names)) and expected_names != ours_names:
            problems.append(f"filenames {expected_names!r} != {ours_names!r}")
        return problems
    except Exception:
        return []  # the reference itself fails on this message: nothing to compare with


def test_decoded_headers_agree_with_the_stdlib(
    corpus: list[tuple[str, bytes]], parsed: dict[str, ParsedMessage]
) -> None:
    disagreements = {}
    for name, raw in corpus:
        problems = _disagreements(raw, parsed[name])
        if problems:
            disagreements[name] = problems
    assert disagreements == {}


def _address_headers(raw: bytes) -> list[str]:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    values = []
    for field in ADDRESS_FIELDS:
        for value in message.get_all(field) or []:
            if isinstance(value, str) and value.isascii():
                values.append(re.sub(r"\r?\n", "", value))
    return values


def test_address_fast_path_agrees_with_getaddresses(corpus: list[tuple[str, bytes]]) -> None:
    samples = [raw for _, raw in corpus] + list(generate(300, seed=3))
    fast = 0
    for raw in samples:
        for value in _address_headers(raw):
            pairs = plain_addresses(value)
            if pairs is None:
                continue
            fast += 1
            expected = [(_norm(n), a) for n, a in getaddresses([value]) if n or a]
            assert pairs == expected, value
    assert fast >= 500


def test_split_mbox_keeps_from_lines_inside_open_multiparts() -> None:
    mbox = (
        b"From a@example.com Sat Feb  5 09:19:10 2022\n"
        b"Subject: one\nContent-Type: multipart/mixed; boundary=x\n\n"
        b"--x\nContent-Type: text/x-diff\n\n"
        b"From fc88cba7 Mon Sep 17 00:00:00 2001\nFrom: git\n\n--x--\n\n"
        b"From b@example.com Sat Feb  5 10:00:00 2022\n"
        b"Subject: two\n\nplain body\n\n"
        b"From c@example.com Sat Feb  5 11:00:00 2022\n"
        b"Subject: three\n\nbody\n"
    )
    messages = split_mbox(mbox)
    assert [parse_message(m).subject for m in messages] == ["one", "two", "three"]
    assert b"From fc88cba7" in messages[0]
