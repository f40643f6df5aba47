"""Persisted queries: a client sends the SHA-256 of a document it registered instead of the document.

The protocol is Apollo's automatic persisted queries (what Apollo Client's and urql's persisted-query links
speak), over HTTP:

* a request whose ``extensions`` hold ``{"persistedQuery": {"version": 1, "sha256Hash": HASH}}`` and no
  ``query`` runs the document registered under HASH; an unknown HASH fails with PERSISTED_QUERY_NOT_FOUND,
  before anything runs and spending nothing;
* a request with both the document and its hash registers the document (after checking that the hash is the
  document's: a wrong one is BAD_USER_INPUT) and runs it. A client that meets PERSISTED_QUERY_NOT_FOUND sends
  the document with its hash once, and its hash alone from then on.

Registered documents are kept in the gateway process, the most recently used first, within `max_documents`
and `max_chars` (a document longer than `max_document_chars` runs but is not kept): a busy client that loses
its document to newer ones registers it again on the next PERSISTED_QUERY_NOT_FOUND. A registered document is
only text: it is parsed, validated, costed and authorized on every request like one sent in full (parsing and
validation come from the schema's caches), so a hash grants nothing a token could not ask for itself.
Websocket subscriptions send their documents in full.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from strawberry.http import GraphQLRequestData

from gateway.errors import BadUserInput, PersistedQueryNotFound

VERSION = 1


class PersistedQueries:
    """Documents by the hex SHA-256 of their UTF-8 text, least recently used dropped first (see the module)."""

    def __init__(self, max_documents: int = 1000, max_chars: int = 4_000_000, max_document_chars: int = 100_000):
        self.max_documents = max_documents
        self.max_chars = max_chars
        self.max_document_chars = max_document_chars
        self._documents: OrderedDict[str, str] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._documents)

    def get(self, sha256: str) -> str | None:
        document = self._documents.get(sha256)
        if document is not None:
            self._documents.move_to_end(sha256)
        return document

    def register(self, sha256: str, document: str) -> None:
        if sha256 in self._documents:
            self._documents.move_to_end(sha256)
            return
        if len(document) > self.max_document_chars:
            return
        self._documents[sha256] = document
        self._chars += len(document)
        while len(self._documents) > self.max_documents or self._chars > self.max_chars:
            _, dropped = self._documents.popitem(last=False)
            self._chars -= len(dropped)

    def resolve(self, request: GraphQLRequestData) -> None:
        """Fill in the document of a request that names one by its hash, or register the one it sends."""
        wanted = _persisted_hash(request.extensions)
        if wanted is None:
            return
        if request.query is None:
            found = self.get(wanted)
            if found is None:
                raise PersistedQueryNotFound("PersistedQueryNotFound: send the document with its hash once")
            request.query = found
            return
        if hashlib.sha256(request.query.encode()).hexdigest() != wanted:
            raise BadUserInput("the persisted query's sha256Hash is not the SHA-256 of the query sent with it")
        self.register(wanted, request.query)


def _persisted_hash(extensions: dict[str, Any] | None) -> str | None:
    """The hash a request's extensions name (lower-case hex), None when they name none; BAD_USER_INPUT when
    they name one badly."""
    if not extensions or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    if not isinstance(persisted, dict):
        raise BadUserInput("extensions.persistedQuery must be an object: {version: 1, sha256Hash: HASH}")
    if persisted.get("version") != VERSION:
        raise BadUserInput(f"persisted query version {persisted.get('version')!r} is not supported (only {VERSION})")
    wanted = persisted.get("sha256Hash")
    if not isinstance(wanted, str) or len(wanted) != 64 or any(c not in "0123456789abcdefABCDEF" for c in wanted):
        raise BadUserInput("extensions.persistedQuery.sha256Hash must be 64 hexadecimal digits")
    return wanted.lower()
