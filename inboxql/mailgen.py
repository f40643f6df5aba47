"""A deterministic generator of a realistic mailbox, for benchmarks and load tests.

`generate(n, seed)` yields raw RFC 5322 messages (CRLF line ends, as IMAP delivers them), oldest
first. The mix is meant to look like a working person's inbox rather than like a test suite:

* sizes: mean about 5 KB with a long tail (10,000 messages come to roughly 45-60 MB);
* MIME: ~60% text/plain, ~25% multipart/alternative (text + html), ~10% multipart/mixed with
  attachments (pdf/png/docx-like, a few of 100 KB - 2 MB), ~5% in iso-8859-1, koi8-r or shift_jis;
* headers: Received chains, DKIM signatures, list ids, RFC 2047 encoded subjects and names;
* threads: ~40% are replies (In-Reply-To, References, "Re:" subject, quoted parent text) to
  earlier messages; dates spread over two years, in the senders' own time zones;
* every Message-ID is distinct.

Stdlib only, so it runs wherever the benchmarks do:
`python -m inboxql.mailgen 10000 --seed 1 > mailbox.mbox` writes an mbox.
"""

from __future__ import annotations

import base64
import quopri
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime

__all__ = ["generate"]

CRLF = "\r\n"
END = datetime(2026, 10, 31, 18, 0, tzinfo=UTC)
SPAN = timedelta(days=730)

_WORD_TEXT = (
    "the project meeting update review schedule budget deadline proposal draft report quarter "
    "team client server release branch test deploy issue ticket feedback thanks please attached "
    "document version change request approve design data migration customer invoice contract "
    "call tomorrow today next week friday agenda notes summary question answer follow up plan "
    "priority risk estimate scope delivery support access account password reset backup storage "
    "network latency performance metric dashboard alert incident postmortem root cause fix patch"
)
_WORDS = tuple(_WORD_TEXT.split())
_FIRST = "Anna Ben Carla David Elena Frank Grace Hugo Irene Jack Karin Liam Maria Noah Olga Paul"
_LAST = "Smith Jones Miller Brown Wilson Taylor Clark Lewis Walker Young King Wright Hill Green"
_NON_ASCII_NAMES = ("José García", "Zoë Dubois", "Jürgen Müller", "Åsa Lindqvist", "Łukasz Nowak")
_DOMAINS = ("example.com", "example.org", "corp.example.net", "mail.example.de", "example.co.jp")
_ZONES = (-8, -7, -5, -4, 0, 1, 2, 3, 5.5, 8, 9)
_MAILERS = ("Mozilla Thunderbird 128.3", "Apple Mail (2.3774)", "Microsoft Outlook 16.0", "mutt/2.2")
_LISTS = ("dev.lists.example.org", "announce.example.com", "users.lists.example.net")

# Text in the charsets that the ~5% of non-UTF-8 mail uses, encodable in each.
_LEGACY = {
    "iso-8859-1": (
        "Grüße aus München, voilà le résumé de la réunion à Genève. Größe, Fähre, "
        "naïve façade, señor niño. Merci beaucoup et à bientôt!"
    ),
    "koi8-r": (
        "Привет! Вот протокол встречи. Пожалуйста, проверьте отчёт и ответьте до пятницы. "
        "Спасибо за помощь, с уважением."  # noqa: RUF001 (Cyrillic on purpose)
    ),
    "shift_jis": ("お疲れ様です。会議の議事録を送ります。金曜日までに確認をお願いします。よろしくお願いいたします。"),
}
_LEGACY_SUBJECTS = {
    "iso-8859-1": ("Résumé de la réunion", "Grüße und Änderungen", "Prévisions trimestrielles"),
    "koi8-r": ("Протокол встречи", "Отчёт за квартал", "Вопрос по проекту"),
    "shift_jis": ("会議の議事録", "四半期の報告", "プロジェクトについて"),
}
_ATTACHMENT_KINDS = (
    ("application/pdf", "pdf", b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"),
    ("image/png", "png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
        b"PK\x03\x04\x14\x00\x06\x00",
    ),
    ("image/jpeg", "jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
)


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    address: str
    zone: timezone


@dataclass(frozen=True, slots=True)
class _Sent:
    message_id: str
    subject: str
    references: tuple[str, ...]
    sender: _Person
    recipients: tuple[_Person, ...]
    text: str


def generate(n: int, seed: int) -> Iterator[bytes]:
    """`n` raw messages, oldest first; the same (n, seed) always gives the same bytes."""
    rng = random.Random(seed)
    people = _people(rng)
    # Increasing send times over two years, denser on weekdays (rejection sampling).
    times = sorted(_send_time(rng) for _ in range(n))
    sent: list[_Sent] = []
    for index, when in enumerate(times):
        parent = None
        if sent and rng.random() < 0.40:
            # Replies mostly go to recent mail.
            back = min(len(sent), 1 + int(rng.expovariate(1 / 30)))
            parent = sent[-back]
        message, record = _message(rng, index, when, people, parent)
        sent.append(record)
        yield message


def _people(rng: random.Random) -> list[_Person]:
    firsts, lasts = _FIRST.split(), _LAST.split()
    people = []
    for index in range(160):
        if index % 16 == 0:
            name = _NON_ASCII_NAMES[(index // 16) % len(_NON_ASCII_NAMES)]
            local = f"user{index}"
        else:
            first, last = rng.choice(firsts), rng.choice(lasts)
            name, local = f"{first} {last}", f"{first}.{last}{index}".lower()
        hours = rng.choice(_ZONES)
        zone = timezone(timedelta(hours=hours))
        people.append(_Person(name, f"{local}@{rng.choice(_DOMAINS)}", zone))
    return people


def _send_time(rng: random.Random) -> datetime:
    while True:
        when = END - SPAN * rng.random()
        if when.weekday() < 5 or rng.random() < 0.3:
            return when.replace(microsecond=0)


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 16))]
    return " ".join(words).capitalize() + rng.choice((".", ".", ".", "?", "!"))


def _paragraphs(rng: random.Random, size: int) -> str:
    paragraphs: list[str] = []
    length = 0
    while length < size:
        paragraph = " ".join(_sentence(rng) for _ in range(rng.randint(1, 5)))
        paragraphs.append(_wrap(paragraph))
        length += len(paragraph)
    return "\n\n".join(paragraphs)


def _wrap(text: str, width: int = 72) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


def _encodable(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


def _encode_header(text: str, charset: str = "utf-8") -> str:
    if text.isascii():
        return text
    if not _encodable(text, charset):
        charset = "utf-8"
    return Header(text, charset).encode(linesep=CRLF)


def _mailbox(person: _Person) -> str:
    if person.name.isascii():
        return f"{person.name} <{person.address}>"
    return f"{_encode_header(person.name)} <{person.address}>"


def _message(
    rng: random.Random, index: int, when: datetime, people: list[_Person], parent: _Sent | None
) -> tuple[bytes, _Sent]:
    if parent is not None:
        sender = rng.choice(parent.recipients)
        recipients = (parent.sender, *rng.sample(people, rng.randint(0, 1)))
        base = parent.subject[4:] if parent.subject.startswith("Re: ") else parent.subject
        subject = f"Re: {base}"
        references = (*parent.references[-12:], parent.message_id)
    else:
        sender = rng.choice(people)
        recipients = tuple(rng.sample(people, rng.choice((1, 1, 1, 2, 3))))
        subject = ""
        references = ()
    local_when = when.astimezone(sender.zone)
    message_id = f"{local_when:%Y%m%d%H%M%S}.{index}.{rng.getrandbits(40):010x}@{sender.address.split('@')[1]}"

    roll = rng.random()
    charset = "utf-8"
    if roll < 0.05:
        charset = rng.choice(tuple(_LEGACY))
    if not subject:
        if charset != "utf-8":
            subject = rng.choice(_LEGACY_SUBJECTS[charset])
        elif rng.random() < 0.08:
            subject = rng.choice(("Café meeting ☕", "Zürich offsite", "Résumé review", "naïve plan"))
        else:
            subject = _sentence(rng)[:-1][: rng.randint(20, 60)].strip()

    text = _paragraphs(rng, int(rng.lognormvariate(6.4, 0.7)))
    if charset != "utf-8":
        text = _LEGACY[charset] + "\n\n" + text
    if parent is not None:
        quoted = "\n".join(f"> {line}" if line else ">" for line in parent.text.splitlines()[:24])
        text = f"{text}\n\nOn {parent.sender.name} wrote:\n{quoted}"
    text += f"\n\n-- \n{sender.name}\n"
    if charset != "utf-8" and not _encodable(text, charset):
        charset = "utf-8"  # quoted text from another script: real mailers switch to UTF-8 too

    headers = _headers(rng, sender, recipients, subject, charset, local_when, message_id)
    if parent is not None:
        headers.append(f"In-Reply-To: <{parent.message_id}>")
        headers.append("References: " + f"{CRLF} ".join(f"<{ref}>" for ref in references))
    if charset != "utf-8":
        body_headers, body = _text_part(text, charset, "plain")
    elif roll < 0.65:
        body_headers, body = _text_part(text, charset, "plain", rng.random() < 0.4)
    elif roll < 0.90:
        body_headers, body = _alternative(rng, text)
    else:
        body_headers, body = _mixed(rng, text)
    raw = CRLF.join([*headers, *body_headers]) + CRLF + CRLF + body
    record = _Sent(message_id, subject, references, sender, recipients, text)
    return raw.encode("ascii"), record


def _headers(
    rng: random.Random,
    sender: _Person,
    recipients: tuple[_Person, ...],
    subject: str,
    charset: str,
    when: datetime,
    message_id: str,
) -> list[str]:
    domain = sender.address.split("@")[1]
    headers = [f"Return-Path: <{sender.address}>"]
    hop = when
    for hops in range(rng.randint(1, 4)):
        hop += timedelta(seconds=rng.randint(0, 4))
        headers.append(
            f"Received: from mx{hops}.{domain} (mx{hops}.{domain} [192.0.2.{rng.randint(1, 254)}])"
            f"{CRLF}\tby mail.example.net (Postfix) with ESMTPS id {rng.getrandbits(36):09X}"
            f"{CRLF}\tfor <{recipients[0].address}>; {format_datetime(hop)}"
        )
    if rng.random() < 0.5:
        signature = base64.b64encode(rng.randbytes(256)).decode()
        folded = f"{CRLF}\t ".join(signature[i : i + 70] for i in range(0, len(signature), 70))
        headers.append(
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s1;{CRLF}"
            f"\th=from:to:subject:date:message-id; bh={base64.b64encode(rng.randbytes(32)).decode()};"
            f"{CRLF}\tb={folded}"
        )
    headers.append(f"From: {_mailbox(sender)}")
    headers.append("To: " + f",{CRLF} ".join(_mailbox(person) for person in recipients[:1]))
    if len(recipients) > 1:
        headers.append("Cc: " + f",{CRLF} ".join(_mailbox(person) for person in recipients[1:]))
    headers.append(f"Subject: {_encode_header(subject, charset)}")
    headers.append(f"Date: {format_datetime(when)}")
    headers.append(f"Message-ID: <{message_id}>")
    if rng.random() < 0.2:
        headers.append(f"List-Id: <{rng.choice(_LISTS)}>")
    headers.append(f"X-Mailer: {rng.choice(_MAILERS)}")
    headers.append("MIME-Version: 1.0")
    return headers


def _text_part(text: str, charset: str, subtype: str, quoted_printable: bool = False) -> tuple[list[str], str]:
    data = text.replace("\n", CRLF).encode(charset)
    if data.isascii():
        encoding, body = "7bit", data.decode("ascii")
    elif quoted_printable or charset == "shift_jis":
        encoding = "quoted-printable"
        body = quopri.encodestring(data).decode("ascii").replace("\r\n", "\n").replace("\n", CRLF)
    else:
        encoding = "base64"
        body = base64.encodebytes(data).decode("ascii").replace("\n", CRLF)
    return [
        f'Content-Type: text/{subtype}; charset="{charset}"',
        f"Content-Transfer-Encoding: {encoding}",
    ], body


def _html(text: str) -> str:
    paragraphs = []
    for paragraph in text.split("\n\n"):
        escaped = paragraph.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        paragraphs.append("<p>" + escaped.replace("\n", "<br>\n") + "</p>\n")
    return (
        '<html><head><meta charset="utf-8"><style>p{margin:0 0 1em}'
        "body{font-family:Arial,sans-serif}</style></head>\n"
        '<body><div dir="ltr">\n' + "".join(paragraphs) + "</div></body></html>\n"
    )


def _part(headers: list[str], body: str) -> str:
    return CRLF.join(headers) + CRLF + CRLF + body


def _multipart(rng: random.Random, subtype: str, parts: list[str]) -> tuple[list[str], str]:
    boundary = f"----=_Part_{rng.getrandbits(48):012x}"
    body = "This is a multi-part message in MIME format." + CRLF
    for part in parts:
        body += f"{CRLF}--{boundary}{CRLF}{part}"
    body += f"{CRLF}--{boundary}--{CRLF}"
    return [f'Content-Type: multipart/{subtype}; boundary="{boundary}"'], body


def _alternative(rng: random.Random, text: str) -> tuple[list[str], str]:
    plain = _part(*_text_part(text, "utf-8", "plain", True))
    markup = _part(*_text_part(_html(text), "utf-8", "html", True))
    return _multipart(rng, "alternative", [plain, markup])


def _attachment_size(rng: random.Random) -> int:
    if rng.random() < 0.01:  # the long tail: scans, decks, photos
        return int(75_000 * 20 ** rng.random())  # 100 KB - 2 MB once base64-encoded
    return int(rng.lognormvariate(8.0, 0.9))


def _mixed(rng: random.Random, text: str) -> tuple[list[str], str]:
    body_headers, body = _alternative(rng, text) if rng.random() < 0.5 else _text_part(text, "utf-8", "plain")
    parts = [_part(body_headers, body)]
    for number in range(rng.choice((1, 1, 1, 2, 3))):
        content_type, extension, magic = rng.choice(_ATTACHMENT_KINDS)
        data = magic + rng.randbytes(_attachment_size(rng))
        name = rng.choice(("report", "scan", "invoice", "photo", "notes", "Übersicht", "slides"))
        filename = f"{name}-{number + 1}.{extension}"
        if filename.isascii():
            disposition = f'attachment; filename="{filename}"'
        else:  # RFC 2231 for non-ASCII names
            encoded = "".join(
                chr(byte) if (chr(byte).isalnum() and byte < 128) or chr(byte) in ".-" else f"%{byte:02X}"
                for byte in filename.encode("utf-8")
            )
            disposition = f"attachment; filename*=utf-8''{encoded}"
        encoded_data = base64.encodebytes(data).decode("ascii").replace("\n", CRLF)
        parts.append(
            _part(
                [
                    f'Content-Type: {content_type}; name="{_encode_header(filename)}"',
                    f"Content-Disposition: {disposition}",
                    "Content-Transfer-Encoding: base64",
                ],
                encoded_data,
            )
        )
    return _multipart(rng, "mixed", parts)


def _main(argv: list[str]) -> None:
    count = int(argv[0]) if argv else 1000
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 1
    out = sys.stdout.buffer
    for raw in generate(count, seed):
        out.write(b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n")
        out.write(raw.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From "))
        out.write(b"\n")


if __name__ == "__main__":
    _main(sys.argv[1:])
