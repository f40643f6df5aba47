"""mime/ is protocol only: it imports the stdlib and itself, nothing of inboxql and nothing installed."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import mime

PACKAGE = Path(mime.__file__).resolve().parent
REPO = PACKAGE.parent
PROJECT_PACKAGES = {"schema", "synccore", "gateway", "inboxql", "alembic", "bench", "tests"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one module (relative imports stay inside mime)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module.split(".")[0])
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(REPO)))
def test_mime_imports_only_the_stdlib(path: Path) -> None:
    imported = imported_modules(path) - {"__future__", "mime"}
    assert not imported & PROJECT_PACKAGES
    assert imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names


def test_every_module_is_checked() -> None:
    assert {path.stem for path in MODULES} >= {"__init__", "charsets", "compose", "entity", "headers", "parse"}


def test_importable_mime_is_this_repositorys() -> None:
    # PyPI has an unrelated `mime` package too: the one that resolves here must be ours.
    assert PACKAGE == REPO / "mime"
    assert "site-packages" not in PACKAGE.parts
