"""Fixtures of the sync tests: the test Dovecot seen directly, or through an IMAP proxy that hides its ids."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from inboxql.devmail import DovecotServer
from tests.imapproxy import ImapProxy


@pytest.fixture(params=["xguid", "hash"])
async def route(request: pytest.FixtureRequest, dovecot: DovecotServer) -> AsyncIterator[ImapProxy | None]:
    """How the account reaches Dovecot: directly (its X-GUID is the identity), or through a proxy that hides X-GUID
    (a server with no ids of its own: the content hash is the identity)."""
    if request.param == "xguid":
        yield None
        return
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        proxy.hide_identity = True
        yield proxy
