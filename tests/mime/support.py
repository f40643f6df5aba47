"""Helpers for the mime tests: building raw messages, and one nested message several tests read."""

from __future__ import annotations

import base64


def mail(headers: str, body: bytes | str = b"", *, charset: str = "utf-8") -> bytes:
    data = body.encode(charset) if isinstance(body, str) else body
    head = headers.strip("\n").replace("\n", "\r\n").encode("utf-8")
    return head + b"\r\n\r\n" + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


NESTED = mail(
    """
From: =?utf-8?q?Zo=C3=AB?= <zoe@example.com>
Subject: photo
Content-Type: multipart/mixed; boundary="outer"
""",
    "preamble\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=inner\n\n"
    "--inner\nContent-Type: text/plain; charset=utf-8\n\nLook at this\n"
    "--inner\n"
    "Content-Type: multipart/related; boundary=rel\n\n"
    '--rel\nContent-Type: text/html; charset=utf-8\n\n<img src="cid:img1@x">\n'
    "--rel\nContent-Type: image/png\nContent-ID: < img1@x >\n"
    "Content-Transfer-Encoding: base64\n\n"
    f"{base64.b64encode(b'PNGDATA').decode()}\n"
    "--rel--\n"
    "--inner--\n"
    "--outer\n"
    "Content-Type: message/rfc822\n\n"
    "Subject: forwarded\nContent-Type: multipart/mixed; boundary=fw\n\n"
    "--fw\nContent-Type: text/plain\n\ninner text\n"
    "--fw\nContent-Type: application/pdf; name=inner.pdf\n\n%PDF\n--fw--\n"
    "--outer--\n"
    "epilogue\n",
)
