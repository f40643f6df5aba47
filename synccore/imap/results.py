"""What the client's commands return (assembled from several responses each)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .responses import FetchItem


@dataclass(slots=True)
class SelectedMailbox:
    """The state SELECT / EXAMINE reported (RFC 3501 §6.3.1, RFC 7162 §3.1.2 and §3.2.5)."""

    name: str
    exists: int = 0
    uidvalidity: int | None = None
    uidnext: int | None = None
    highestmodseq: int | None = None  # None: NOMODSEQ, or CONDSTORE not in play
    flags: tuple[str, ...] = ()
    permanentflags: tuple[str, ...] = ()
    readonly: bool = False
    # QRESYNC (RFC 7162 §3.2.5.2): UIDs expunged since the client's modseq, and the messages whose
    # flags changed since then, both reported during SELECT itself.
    vanished: list[int] = field(default_factory=list)
    changed: list[FetchItem] = field(default_factory=list)


@dataclass(slots=True)
class FetchResult:
    """FETCH responses for one UID FETCH, plus `VANISHED (EARLIER)` UIDs (RFC 7162 §3.2.6)."""

    items: list[FetchItem]
    vanished: list[int]


@dataclass(slots=True)
class StoreResult:
    """FETCH responses a STORE produced, and the UIDs whose UNCHANGEDSINCE test failed."""

    items: list[FetchItem]
    modified: list[int]
