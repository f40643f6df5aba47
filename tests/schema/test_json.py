"""JSON columns are read by orjson with json.loads behind it (schema.db.json_loads): the values are those
json.loads gives, through a real MariaDB too."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import JSON, Column, MetaData, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.db import json_loads

TEXTS = [
    '{"a": [1, 2.5, null, true, false], "b": {"c": "d"}}',
    '[{"name": "Zoë Ünal", "address": "zoe@example.test"}]',
    '"caf\\u00e9 \\ud83d\\ude00"',
    '"\\ud800"',  # a lone surrogate escape: orjson refuses it, json.loads takes it
    "[9223372036854775807, 18446744073709551615, -9223372036854775808]",  # 63-bit MODSEQs, Gmail's 64-bit ids
    "[]",
]


@pytest.mark.parametrize("text", TEXTS)
def test_json_loads_gives_what_json_loads_gives(text: str) -> None:
    assert json_loads(text) == json.loads(text)
    assert json_loads(text.encode()) == json.loads(text)


async def test_a_json_column_reads_back_what_was_written(engine: AsyncEngine) -> None:
    value = {"participants": [{"name": "Zoë", "address": "z@example.test"}], "ids": [1, 2**63 - 1], "x": None}
    table = Table("json_read_back", MetaData(), Column("j", JSON), prefixes=["TEMPORARY"])
    async with engine.connect() as conn:
        await conn.execute(text("CREATE TEMPORARY TABLE json_read_back (j JSON)"))
        await conn.execute(insert(table).values(j=value))
        read = await conn.scalar(select(table.c.j))
    assert read == value
