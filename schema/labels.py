"""Labels: IMAP keywords on generic servers, X-GM-LABELS on Gmail."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.dialects.mysql import insert

from schema.changelog import ObjectType, Op
from schema.models import Label

if TYPE_CHECKING:
    from schema.unit import UnitOfWork


async def ensure(uow: UnitOfWork, names: Iterable[str], kind: str = "keyword") -> dict[str, int]:
    """Ids of the labels with these names, creating (and logging) the missing ones."""
    wanted = set(names)
    if not wanted:
        return {}
    s = uow.session
    query = select(Label.name, Label.id).where(Label.account_id == uow.account_id, Label.name.in_(wanted))
    found: dict[str, int] = {name: lid for name, lid in await s.execute(query)}
    missing = sorted(wanted - found.keys())
    if missing:
        # INSERT IGNORE: a concurrent writer may create the same label; its row is as good as ours.
        await s.execute(
            insert(Label).prefix_with("IGNORE"),
            [{"account_id": uow.account_id, "name": n, "kind": kind} for n in missing],
        )
        query = select(Label.name, Label.id).where(Label.account_id == uow.account_id, Label.name.in_(missing))
        created = {name: lid for name, lid in await s.execute(query)}
        uow.record(ObjectType.LABEL, Op.CREATE, created.values())
        found.update(created)
    return found
