"""Every credential column is re-sealed by a rotation (schema.sealed), and re-sealing keeps what it seals."""

from __future__ import annotations

from schema.models import Base
from schema.sealed import SEALED


def test_every_password_or_secret_column_is_listed_for_rotation() -> None:
    """A new sealed column that rotation does not know would stay under an old key and break once it is pruned."""
    listed = {(s.column.class_.__tablename__, s.column.key) for s in SEALED}
    found = {
        (table.name, column.name)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if any(word in column.name for word in ("password", "secret"))
    }
    assert found == listed
