"""What the gateway keeps per parsed document (or a node of one) while it lives, by the object's identity.

graphql-core's nodes compare and hash by their contents (a walk of the whole tree), so a dict or a
WeakKeyDictionary keyed by them would hash every document at every lookup. Strawberry's ParserCache hands back
the same node objects for a document sent again, so their identity is the key: an entry holds a weak reference
to its object, is dropped when the object dies, and an `id` reused by a later object never finds the dead one's
entry.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ByIdentity(Generic[K, V]):
    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[K], V]] = {}

    def kept(self, key: K, make: Callable[[], V]) -> V:
        """The value kept for `key`, made by `make()` the first time it is asked for."""
        address = id(key)
        entry = self._entries.get(address)
        if entry is not None and entry[0]() is key:
            return entry[1]

        def forget(ref: weakref.ref[K]) -> None:
            found = self._entries.get(address)
            if found is not None and found[0] is ref:
                del self._entries[address]

        value = make()
        self._entries[address] = (weakref.ref(key, forget), value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
