"""Labels: IMAP keywords on generic servers, X-GM-LABELS on Gmail."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.dialects.mysql import insert

from schema import gmail
from schema.changelog import ObjectType, Op
from schema.models import Label

if TYPE_CHECKING:
    from schema.unit import UnitOfWork


async def ensure(uow: UnitOfWork, names: Iterable[str], kind: str = "keyword") -> dict[str, int]:
    """Ids of the labels with these names, creating (and logging) the missing ones. A Gmail system label gets the
    role of the folder it stands for (schema.gmail.SYSTEM_LABELS)."""
    wanted = set(names)
    if not wanted:
        return {}
    s = uow.session
    query = select(Label.name, Label.id).where(Label.account_id == uow.account_id, Label.name.in_(wanted))
    found: dict[str, int] = {name: lid for name, lid in await s.execute(query)}
    missing = sorted(wanted - found.keys())
    created = []
    for name in missing:
        # INSERT IGNORE: a concurrent writer may create the same label; its row is as good as ours, and
        # only the writer whose row it is logs the creation.
        result = await s.execute(
            insert(Label)
            .prefix_with("IGNORE")
            .values(
                account_id=uow.account_id,
                name=name,
                kind=kind,
                role=gmail.label_role(name) if kind == gmail.KIND else None,
            )
        )
        if getattr(result, "rowcount", 0) == 1:
            created.append(name)
    if missing:
        query = select(Label.name, Label.id).where(Label.account_id == uow.account_id, Label.name.in_(missing))
        ids = {name: lid for name, lid in await s.execute(query)}
        uow.record(ObjectType.LABEL, Op.CREATE, [ids[name] for name in created])
        found.update(ids)
    return found
