"""`inboxql token create`: the function the CLI calls."""

from __future__ import annotations

import httpx
import pytest

from gateway.testing import Client, World
from gateway.tokens import create_token_cli
from schema.settings import Settings
from schema.tokens import PREFIX, UnknownAccounts


async def test_a_created_token_reads_its_accounts(gw_settings: Settings, world: World, http: httpx.AsyncClient) -> None:
    token = await create_token_cli(gw_settings, [world.bob.id])
    assert token.startswith(PREFIX)
    data = await Client(http, token).data("{ accounts { nodes { address } } }")
    assert data == {"accounts": {"nodes": [{"address": world.bob.address}]}}


async def test_unknown_accounts_get_no_token(gw_settings: Settings, world: World) -> None:
    with pytest.raises(UnknownAccounts, match="999999"):
        await create_token_cli(gw_settings, [world.alice.id, 999999])
    with pytest.raises(UnknownAccounts):
        await create_token_cli(gw_settings, [])
