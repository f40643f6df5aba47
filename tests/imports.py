"""What a package imports, read from its source with `ast`: for the tests that keep protocol packages on their own."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path) -> set[str]:
    """Top-level names of one module's absolute imports (relative imports stay inside its package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module.split(".")[0])
    return names


PROJECT_PACKAGES = frozenset({"mime", "schema", "synccore", "gateway", "inboxql", "alembic", "bench", "tests"})
