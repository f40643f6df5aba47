"""Run the Alembic migrations shipped with inboxql (used by `inboxql db upgrade` and the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_PACKAGE = Path(__file__).resolve().parent
# An installed wheel carries the migrations inside this package (setup.py copies them to schema/_alembic/); a
# checkout has them at the repository's top.
_LOCATIONS = (_PACKAGE / "_alembic", _PACKAGE.parent)


def migrations_root() -> Path:
    """The directory holding alembic.ini and alembic/ (the migrations)."""
    for root in _LOCATIONS:
        if (root / "alembic.ini").is_file() and (root / "alembic" / "env.py").is_file():
            return root
    raise FileNotFoundError(f"inboxql's migrations are in none of {', '.join(str(r) for r in _LOCATIONS)}")


ROOT = migrations_root()


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
