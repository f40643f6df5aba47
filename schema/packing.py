"""The bytes of a stored message: its name (SHA-256 of the raw bytes) and its packed form (zlib level 1).

Standard library only, so that a parse worker (synccore.prepare) can pack what it parses without importing the
database layer (schema.blobs stores what this packs).
"""

from __future__ import annotations

import hashlib
import zlib


def digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def pack(raw: bytes) -> tuple[str, bytes]:
    """Level 1 keeps most of the gain of level 6 (mail is text and base64) at a fraction of the CPU."""
    packed = zlib.compress(raw, 1)
    if len(packed) < len(raw):
        return "zlib", packed
    return "raw", raw


def unpack(codec: str, data: bytes) -> bytes:
    return zlib.decompress(data) if codec == "zlib" else data
