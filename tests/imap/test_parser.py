"""The pure protocol layer: framing, tokenizing, typed responses, uid sets, modified UTF-7, quoting."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synccore.imap import (
    AppendUid,
    Capability,
    Continuation,
    CopyUid,
    Enabled,
    ESearch,
    Exists,
    Expunge,
    FetchItem,
    Flags,
    Literal,
    Mailbox,
    MailboxStatus,
    ProtocolError,
    Recent,
    ResponseCode,
    ResponseReader,
    Search,
    StatusResponse,
    Unknown,
    Vanished,
    astring,
    decode_mailbox,
    encode_mailbox,
    format_uid_set,
    parse_internaldate,
    parse_stream,
    parse_uid_set,
    parser,
)
from synccore.imap.command import encode_command
from synccore.imap.responses import Response

# A body holding every byte value, CRLFs, and text that looks like IMAP syntax: it must come back
# untouched, and must not confuse the framer (a literal marker inside a literal is just data).
NASTY_BODY = bytes(range(256)) + b'\r\n) {5}\r\n* 3 EXISTS\r\n"\\' + b"\r\n"


def one(data: bytes) -> tuple[str | None, Response]:
    responses = parse_stream([data])
    assert len(responses) == 1, responses
    return responses[0]


def untagged(data: bytes) -> Response:
    tag, resp = one(data)
    assert tag is None
    return resp


def fetch(data: bytes) -> FetchItem:
    resp = untagged(data)
    assert isinstance(resp, FetchItem)
    return resp


# ---------------------------------------------------------------------------------------- framing


def fetch_with_body(body: bytes) -> bytes:
    return b"* 7 FETCH (UID 42 BODY[] {%d}\r\n%s FLAGS (\\Seen))\r\nA1 OK done\r\n" % (len(body), body)


@pytest.mark.parametrize("body", [b"", b"x", NASTY_BODY, b"\r\n" * 50, b"{3}\r\n"])
def test_literal_split_at_every_position_is_reassembled(body: bytes) -> None:
    data = fetch_with_body(body)
    for cut in range(len(data) + 1):
        reader = ResponseReader()
        raws = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert [r.literals for r in raws] == [[body], []], cut
        assert raws[0].lines == [b"* 7 FETCH (UID 42 BODY[] ", b" FLAGS (\\Seen))"]
        assert raws[1].lines == [b"A1 OK done"]
        assert reader.pending == 0


def test_byte_at_a_time_feed_gives_the_same_responses() -> None:
    data = fetch_with_body(NASTY_BODY) + b"* 8 EXISTS\r\n"
    reader = ResponseReader()
    raws = [raw for i in range(len(data)) for raw in reader.feed(data[i : i + 1])]
    assert len(raws) == 3
    assert raws[0].literals == [NASTY_BODY]


def test_binary_literal8_is_framed_like_a_literal() -> None:
    # RFC 3516 §4.2: BINARY[] answers with ~{n}, and the data may hold NUL.
    body = b"\x00\x01\x02\r\n\x00"
    item = fetch(b"* 1 FETCH (UID 5 BINARY[] ~{%d}\r\n%s)\r\n" % (len(body), body))
    assert item.body == body
    assert item.sections == {"BINARY[]": body}


def test_large_literal_in_small_chunks_is_linear() -> None:
    # A 3 MB attachment arriving in 64-byte pieces: a framer that re-copied or re-scanned its buffer
    # per chunk would take minutes (47k chunks x MBs); linear framing takes well under a second.
    body = bytes(range(256)) * (3 * 4096)
    data = fetch_with_body(body)
    reader = ResponseReader()
    start = time.perf_counter()
    raws = [raw for i in range(0, len(data), 64) for raw in reader.feed(data[i : i + 64])]
    elapsed = time.perf_counter() - start
    assert raws[0].literals == [body]
    assert elapsed < 5, elapsed


def test_ten_thousand_fetch_responses_parse_without_recursion() -> None:
    # aioimaplib recursed once per line and died on a 10k-message FETCH (FIELD-NOTES).
    body = b"Subject: x\r\n\r\nhello\r\n"
    one_msg = b"* %d FETCH (UID %d FLAGS (\\Seen) MODSEQ (9) BODY[] {%d}\r\n%s)\r\n"
    data = b"".join(one_msg % (i, i, len(body), body) for i in range(1, 10_001))
    parsed = parse_stream([data[i : i + 65536] for i in range(0, len(data), 65536)])
    uids = [resp.uid for _, resp in parsed if isinstance(resp, FetchItem)]
    assert uids == list(range(1, 10_001))


def test_line_without_end_is_rejected_once_too_long() -> None:
    reader = ResponseReader()
    with pytest.raises(ProtocolError):
        reader.feed(b"* " + b"x" * (2 << 20))


@pytest.mark.parametrize(
    ("marker", "refused"),
    [
        (b"{1024}", False),
        (b"~{1024}", False),
        (b"{1025}", True),
        (b"~{1025}", True),
        (b"{99999999999999999999}", True),
    ],
)
def test_a_literal_over_the_limit_is_refused_before_it_is_buffered(marker: bytes, refused: bool) -> None:
    reader = ResponseReader(max_literal=1024)
    line = b"* 1 FETCH (UID 1 BODY[] " + marker + b"\r\n"
    if refused:
        with pytest.raises(ProtocolError, match="over the limit"):
            reader.feed(line)
    else:
        assert reader.feed(line + b"x" * 1024 + b")\r\n")[0].literals == [b"x" * 1024]


# ---------------------------------------------------------------------------------- status lines


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"* OK [UIDVALIDITY 3857529045] UIDs valid", ResponseCode("UIDVALIDITY", 3857529045)),
        (b"* OK [UIDNEXT 4392] Predicted next UID", ResponseCode("UIDNEXT", 4392)),
        (b"* OK [HIGHESTMODSEQ 715194045007] Highest", ResponseCode("HIGHESTMODSEQ", 715194045007)),
        (b"* OK [NOMODSEQ] Sorry, this mailbox format doesn't support modsequences", ResponseCode("NOMODSEQ")),
        (
            b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited",
            ResponseCode("PERMANENTFLAGS", ("\\Deleted", "\\Seen", "\\*")),
        ),
        (b"* OK [CAPABILITY IMAP4rev1 IDLE] ready", ResponseCode("CAPABILITY", ("IMAP4REV1", "IDLE"))),
        (b"A3 OK [APPENDUID 38505 3955] APPEND completed", ResponseCode("APPENDUID", AppendUid(38505, (3955,)))),
        (
            b"A4 OK [COPYUID 38505 304,319:320 3956:3958] Done",
            ResponseCode("COPYUID", CopyUid(38505, (304, 319, 320), (3956, 3957, 3958))),
        ),
        (b"A5 OK [MODIFIED 7,9] Conditional STORE failed", ResponseCode("MODIFIED", (7, 9))),
        (b"A6 NO [TRYCREATE] Mailbox doesn't exist", ResponseCode("TRYCREATE")),
        (b"* OK [CLOSED] Previous mailbox closed", ResponseCode("CLOSED")),
        (b'A7 NO [BADCHARSET ("UTF-8" KOI8-R)] nope', ResponseCode("BADCHARSET", ("UTF-8", "KOI8-R"))),
        (b"A8 OK [READ-WRITE] Select completed", ResponseCode("READ-WRITE")),
        (b"* NO [ALERT] Disk almost full", ResponseCode("ALERT")),
        (b"* OK [X-UNKNOWN some text] hi", ResponseCode("X-UNKNOWN", "some text")),
    ],
)
def test_reads_response_codes(line: bytes, expected: ResponseCode) -> None:
    _, resp = one(line + b"\r\n")
    assert isinstance(resp, StatusResponse)
    assert resp.code == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"A1 OK LOGIN completed", ("A1", StatusResponse("A1", "OK", None, "LOGIN completed"))),
        (
            b"A2 NO [AUTHENTICATIONFAILED] Bad",
            ("A2", StatusResponse("A2", "NO", ResponseCode("AUTHENTICATIONFAILED"), "Bad")),
        ),
        (b"A3 BAD Error in IMAP command", ("A3", StatusResponse("A3", "BAD", None, "Error in IMAP command"))),
        (b"* BYE Logging out", (None, StatusResponse(None, "BYE", None, "Logging out"))),
        (b"* PREAUTH welcome", (None, StatusResponse(None, "PREAUTH", None, "welcome"))),
        # free text is not tokenized: quotes and brackets in it are fine
        (b'* OK Still here "unbalanced (', (None, StatusResponse(None, "OK", None, 'Still here "unbalanced ('))),
        (b"+ idling", (None, Continuation(b"idling"))),
        (b"+ ", (None, Continuation(b""))),
    ],
)
def test_reads_status_and_continuations(line: bytes, expected: tuple[str | None, Response]) -> None:
    assert one(line + b"\r\n") == expected


# --------------------------------------------------------------------------------------- untagged


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"* 23 EXISTS", Exists(23)),
        (b"* 5 RECENT", Recent(5)),
        (b"* 44 EXPUNGE", Expunge(44)),
        (b"* VANISHED (EARLIER) 1:3,5", Vanished([1, 2, 3, 5], earlier=True)),
        (b"* VANISHED 405,407", Vanished([405, 407], earlier=False)),
        (b"* FLAGS (\\Answered \\Flagged $Forwarded)", Flags(("\\Answered", "\\Flagged", "$Forwarded"))),
        (b"* CAPABILITY IMAP4rev1 IDLE condstore", Capability(frozenset({"IMAP4REV1", "IDLE", "CONDSTORE"}))),
        (b"* ENABLED CONDSTORE QRESYNC", Enabled(frozenset({"CONDSTORE", "QRESYNC"}))),
        (b"* SEARCH 2 84 882", Search([2, 84, 882])),
        (b"* SEARCH", Search([])),
        (b"* SEARCH 2 5 (MODSEQ 917162500)", Search([2, 5], modseq=917162500)),
        (
            b'* ESEARCH (TAG "A282") UID MIN 2 COUNT 3 ALL 2,10:11',
            ESearch("A282", True, [2, 10, 11], min=2, count=3),
        ),
        (b'* ESEARCH (TAG "A3") UID', ESearch("A3", True, [])),
        (
            b'* STATUS "Sent Items" (MESSAGES 231 UIDNEXT 44292)',
            MailboxStatus("Sent Items", b"Sent Items", {"MESSAGES": 231, "UIDNEXT": 44292}),
        ),
        (b'* ID ("name" "Dovecot")', Unknown("ID", [[b"name", b"Dovecot"]])),
    ],
)
def test_reads_untagged_responses(line: bytes, expected: Response) -> None:
    assert untagged(line + b"\r\n") == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
            Mailbox("Sent", b"Sent", "/", frozenset({"\\HasNoChildren", "\\Sent"})),
        ),
        (b'* LIST () "/" "Sent Items"', Mailbox("Sent Items", b"Sent Items", "/", frozenset())),
        (b'* LIST () "." "a \\"b\\" c"', Mailbox('a "b" c', b'a "b" c', ".", frozenset())),
        (b"* LIST (\\Noselect) NIL INBOX", Mailbox("INBOX", b"INBOX", None, frozenset({"\\Noselect"}))),
        (b'* LIST () "/" {7}\r\nline\x0dxx', Mailbox("line\rxx", b"line\rxx", "/", frozenset())),
        (b'* LIST () "/" Entw&APw-rfe', Mailbox("Entwürfe", b"Entw&APw-rfe", "/", frozenset())),
        (b'* LIST () "/" "[Gmail]/All Mail"', Mailbox("[Gmail]/All Mail", b"[Gmail]/All Mail", "/", frozenset())),
        (b'* LIST () "\\\\" Work', Mailbox("Work", b"Work", "\\", frozenset())),
        (  # RFC 5258 extended data after the name is ignored
            b'* LIST (\\Subscribed) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))',
            Mailbox("Foo", b"Foo", "/", frozenset({"\\Subscribed"})),
        ),
        (  # not modified UTF-7 (a UTF8=ACCEPT server): shown as UTF-8, raw kept for sending back
            b'* LIST () "/" "Caf\xc3\xa9 &"',
            Mailbox("Café &", b"Caf\xc3\xa9 &", "/", frozenset()),
        ),
    ],
)
def test_reads_list_names_quoted_atom_or_literal(data: bytes, expected: Mailbox) -> None:
    assert untagged(data + b"\r\n") == expected


def test_reads_every_fetch_item_we_model() -> None:
    body = b"From: a@b\r\nSubject: caf\xe9\r\n\r\n\x00\xff)"
    header = b"Subject: x\r\n\r\n"
    data = (
        b'* 12 FETCH (UID 4827313 FLAGS (\\Seen $Label1) MODSEQ (624140003) INTERNALDATE " 7-Jul-2024 02:44:25 -0700"'
        b" RFC822.SIZE 44827 X-GUID 8b6f9e0b58d2fa65 EMAILID (M6d99ac3275bb4e) THREADID (T64b478a75b7ea9)"
        b" X-GM-MSGID 1278455344230334865 X-GM-THRID 1266894439832287888"
        b' X-GM-LABELS ("\\\\Inbox" "\\\\Important" "[Gmail]/Starred" Work "A b" &AOk-t&AOk-)'
        b' BODY[HEADER] {%d}\r\n%s BODY[] {%d}\r\n%s PREVIEW "hi")\r\n'
    ) % (len(header), header, len(body), body)
    assert fetch(data) == FetchItem(
        seq=12,
        uid=4827313,
        flags=("\\Seen", "$Label1"),
        modseq=624140003,
        internaldate=datetime(2024, 7, 7, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7))),
        size=44827,
        body=body,
        x_guid="8b6f9e0b58d2fa65",
        email_id="M6d99ac3275bb4e",
        thread_id="T64b478a75b7ea9",
        gm_msgid=1278455344230334865,
        gm_thrid=1266894439832287888,
        gm_labels=("\\Inbox", "\\Important", "[Gmail]/Starred", "Work", "A b", "été"),
        sections={"BODY[HEADER]": header, "BODY[]": body},
        extra={"PREVIEW": b"hi"},
    )


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        (b"* 1 FETCH (THREADID NIL)", "thread_id", None),
        (b"* 1 FETCH (BODY[] NIL)", "body", None),
        (b'* 1 FETCH (BODY[] "")', "body", b""),
        (b'* 1 FETCH (BODY[] "quoted \\"body\\"")', "body", b'quoted "body"'),
        (b"* 1 FETCH (RFC822 {2}\r\nhi)", "body", b"hi"),
        (b"* 1 FETCH (BODY[]<0> {2}\r\nhi)", "body", b"hi"),
        (
            b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT FROM)] {2}\r\nhi)",
            "sections",
            {"BODY[HEADER.FIELDS (SUBJECT FROM)]": b"hi"},
        ),
        (b"* 1 FETCH (X-GM-LABELS ())", "gm_labels", ()),
        (b'* 1 FETCH (X-GM-LABELS ({5}\r\nSt"ff))', "gm_labels", ('St"ff',)),
        (b"* 1 FETCH (FLAGS ())", "flags", ()),
        (b"* 1 FETCH (uid 9)", "uid", 9),
    ],
)
def test_reads_fetch_item_variants(data: bytes, field: str, expected: object) -> None:
    assert getattr(fetch(data + b"\r\n"), field) == expected


_FLAG_WORDS = [b"\\Seen", b"\\Flagged", b"\\Deleted", b"$Label1", b"Junk", b"NIL", b"nil", b"[x]", b'"q"', b"a{b"]
_FETCH_ITEMS = st.one_of(
    st.integers(1, 2**32).map(lambda n: b"UID %d" % n),
    st.lists(st.sampled_from(_FLAG_WORDS), max_size=4).map(lambda w: b"FLAGS (" + b" ".join(w) + b")"),
    st.integers(1, 2**63).map(lambda n: b"MODSEQ (%d)" % n),
    st.sampled_from([b"uid 5", b"MODSEQ 7", b"FLAGS NIL", b"RFC822.SIZE 44", b"UID", b"FLAGS (\\Seen"]),
)


def _parsed(data: bytes) -> object:
    try:
        return parse_stream([data])
    except ProtocolError as exc:
        return ProtocolError, str(exc)


@given(st.integers(1, 10**6), st.lists(_FETCH_ITEMS, min_size=1, max_size=4))
def test_a_flag_fetch_reads_as_the_general_parser_reads_it(seq: int, items: list[bytes]) -> None:
    """The one-regex reading of `FETCH (UID FLAGS MODSEQ)` (a STORE's answer, a flag change told by IDLE) gives
    what the tokenizer and the item loop give, for the shapes it takes and for those it must leave to them."""
    data = b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n"
    quick = _parsed(data)
    taken = parser._quick_fetch
    parser._quick_fetch = lambda seq, tail: None
    try:
        general = _parsed(data)
    finally:
        parser._quick_fetch = taken
    assert quick == general


def test_a_store_answer_takes_the_one_regex_way() -> None:
    tail = b"FETCH (UID 7 MODSEQ (12) FLAGS (\\Seen \\Flagged))"
    assert parser._quick_fetch(5, tail) == FetchItem(5, uid=7, flags=("\\Seen", "\\Flagged"), modseq=12)
    assert parser._quick_fetch(5, b"FETCH (UID 7 BODY[] NIL)") is None


@pytest.mark.parametrize(
    "data",
    [
        b"* 1 FETCH (UID)\r\n",
        b"* 1 FETCH (UID abc)\r\n",
        b"* 1 FETCH (UID 3\r\n",
        b"* 1 FETCH UID 3)\r\n",
        b'* 1 FETCH (INTERNALDATE "yesterday")\r\n',
        b"* VANISHED\r\n",
        b"A1 MAYBE done\r\n",
        b"garbage\r\n",
        b"* OK [UIDVALIDITY 12 unterminated\r\n",
    ],
)
def test_rejects_malformed_responses(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_stream([data])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"17-Jul-1996 02:44:25 -0700", datetime(1996, 7, 17, 9, 44, 25, tzinfo=UTC)),
        (b" 1-Jan-2025 00:00:00 +0000", datetime(2025, 1, 1, tzinfo=UTC)),
        (b"31-dec-2024 23:59:59 +0530", datetime(2024, 12, 31, 18, 29, 59, tzinfo=UTC)),
    ],
)
def test_reads_internaldate_as_aware_datetime(raw: bytes, expected: datetime) -> None:
    parsed = parse_internaldate(raw)
    assert parsed.tzinfo is not None
    assert parsed == expected


# ------------------------------------------------------------------------------------- uid sets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:3,7,9:12", [1, 2, 3, 7, 9, 10, 11, 12]),
        ("5", [5]),
        ("5:3", [3, 4, 5]),
        ("3,1,2,2", [1, 2, 3]),
        ("", []),
        (b"4:5", [4, 5]),
    ],
)
def test_parses_uid_sets(text: str | bytes, expected: list[int]) -> None:
    assert parse_uid_set(text) == expected


def test_star_needs_the_largest_uid() -> None:
    assert parse_uid_set("3:*", star=5) == [3, 4, 5]
    with pytest.raises(ValueError, match=r"\*"):
        parse_uid_set("3:*")


@pytest.mark.parametrize("text", ["0", "1:x", "a", "1,,2", "-3"])
def test_rejects_bad_uid_sets(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the fault
        parse_uid_set(text)


@pytest.mark.parametrize(
    ("uids", "expected"),
    [
        ([1, 2, 3, 7, 9, 10, 11, 12], "1:3,7,9:12"),
        ([5], "5"),
        ([3, 1, 2, 2], "1:3"),
        ([10, 1, 3, 2, 12], "1:3,10,12"),
        (range(1, 100_001), "1:100000"),
    ],
)
def test_compresses_uids_into_ranges(uids: list[int], expected: str) -> None:
    assert format_uid_set(uids) == expected


def test_empty_uid_set_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="empty"):
        format_uid_set([])


@given(st.sets(st.integers(min_value=1, max_value=5000)))
def test_uid_set_round_trips(uids: set[int]) -> None:
    if uids:
        assert parse_uid_set(format_uid_set(uids)) == sorted(uids)


# ----------------------------------------------------------------------------- modified UTF-7


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", b"INBOX"),
        ("&", b"&-"),
        ("Tom & Jerry", b"Tom &- Jerry"),
        ("Entwürfe", b"Entw&APw-rfe"),
        ("日本語", b"&ZeVnLIqe-"),
        ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3's example
        ("Отправленные", b"&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
        ("📧 mail", b"&2D3c5w- mail"),  # outside the BMP: a UTF-16 surrogate pair
        ("a\tb", b"a&AAk-b"),  # controls are not printable ASCII, so they are encoded
    ],
)
def test_modified_utf7_round_trips(name: str, wire: bytes) -> None:
    assert encode_mailbox(name) == wire
    assert decode_mailbox(wire) == name


@pytest.mark.parametrize("wire", [b"&ZeVnLIqe", b"&Ze!-", b"&AAA-" + b"\xff", b"caf\xc3\xa9", b"&2D0-"])
def test_invalid_modified_utf7_is_refused(wire: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - UnicodeDecodeError or our own message
        decode_mailbox(wire)


@given(st.text())
def test_any_name_round_trips_through_modified_utf7(name: str) -> None:
    wire = encode_mailbox(name)
    assert wire.isascii()
    assert decode_mailbox(wire) == name


# -------------------------------------------------------------------------- quoting and commands


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("INBOX", b"INBOX"),
        ("[Gmail]/Sent", b"[Gmail]/Sent"),
        ("Sent Items", b'"Sent Items"'),
        ("", b'""'),
        ('pa"ss\\word', b'"pa\\"ss\\\\word"'),
        ("a%b*", b'"a%b*"'),
        ("(x)", b'"(x)"'),
        ("{3}", b'"{3}"'),
        ("pässword", Literal("pässword".encode())),
        ("line\r\nbreak", Literal(b"line\r\nbreak")),
    ],
)
def test_astring_quotes_only_when_needed(value: str, expected: bytes | Literal) -> None:
    assert astring(value) == expected


@pytest.mark.parametrize(
    ("literal_plus", "literal_minus", "size", "expected"),
    [
        (False, False, 3, [(b"A1 LOGIN {3}\r\n", True), (b"abc pw\r\n", False)]),
        (True, False, 3, [(b"A1 LOGIN {3+}\r\nabc pw\r\n", False)]),
        (False, True, 3, [(b"A1 LOGIN {3+}\r\nabc pw\r\n", False)]),
        (False, True, 5000, [(b"A1 LOGIN {5000}\r\n", True), (b"a" * 5000 + b" pw\r\n", False)]),
    ],
)
def test_literals_wait_for_continuation_unless_non_synchronizing(
    literal_plus: bool, literal_minus: bool, size: int, expected: list[tuple[bytes, bool]]
) -> None:
    data = b"abc" if size == 3 else b"a" * size
    got = encode_command(
        b"A1", [b"LOGIN", Literal(data), b"pw"], literal_plus=literal_plus, literal_minus=literal_minus
    )
    assert got == expected


def test_binary_literal_uses_literal8_marker() -> None:
    got = encode_command(b"A1", [b"APPEND", b"INBOX", Literal(b"\x00", binary=True)], literal_plus=True)
    assert got == [(b"A1 APPEND INBOX ~{1+}\r\n\x00\r\n", False)]


def test_a_listing_shares_its_flag_sets_and_empty_sections() -> None:
    """A listing of a large mailbox holds one tuple per distinct flag set, not one per message, and no dicts for
    the body sections and unknown items its responses did not carry; values stay as parsed."""
    a = fetch(b"* 1 FETCH (UID 7 FLAGS (\\Seen \\Flagged))\r\n")
    b = fetch(b"* 2 FETCH (UID 8 FLAGS (\\Seen \\Flagged))\r\n")
    assert a.flags == b.flags == ("\\Seen", "\\Flagged")
    assert a.flags is b.flags
    assert a.sections == a.extra == {}
    assert a.sections is b.sections
    c = fetch(b"* 3 FETCH (UID 9 FLAGS (\\Flagged \\Seen) X-UNKNOWN 4 BODY[HEADER] {2}\r\nh:)\r\n")
    assert c.flags == ("\\Flagged", "\\Seen")  # order as sent: another set
    assert c.extra == {"X-UNKNOWN": b"4"}
    assert c.sections == {"BODY[HEADER]": b"h:"}
    assert b.sections == b.extra == {}  # not the dicts filled for another response
    # Bounded: keywords are the server's; past the bound every set still parses to what was sent.
    many = [fetch(b"* %d FETCH (UID %d FLAGS (k%d))\r\n" % (i, i, i)) for i in range(1, 3000)]
    assert [m.flags for m in many] == [(f"k{i}",) for i in range(1, 3000)]
