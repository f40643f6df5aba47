"""The dependency rule of the layout: gateway -> schema <- synccore. The gateway and the sync core meet only in
MySQL and Redis; the one exception is the protocol packages (synccore.imap, synccore.smtp: bytes <-> typed values,
no project imports), which the gateway's operator API uses to check a login before it stores an account."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ("synccore.imap", "synccore.smtp")


def _imports(package: str) -> dict[str, set[str]]:
    """module path -> absolute module names it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("gateway", "synccore"), ("synccore", "gateway")])
def test_the_gateway_and_the_sync_core_do_not_import_each_other(package: str, forbidden: str) -> None:
    crossing = {
        module: sorted(
            name
            for name in names
            if name.split(".")[0] == forbidden and not any(name == p or name.startswith(p + ".") for p in PROTOCOL)
        )
        for module, names in _imports(package).items()
    }
    assert {m: n for m, n in crossing.items() if n} == {}


def test_schema_imports_neither() -> None:
    crossing = {
        module: sorted(n for n in names if n.split(".")[0] in ("gateway", "synccore", "inboxql"))
        for module, names in _imports("schema").items()
    }
    assert {m: n for m, n in crossing.items() if n} == {}


@pytest.mark.parametrize("package", ["ops", "mime", "oauth"])
def test_the_leaf_packages_import_nothing_of_the_project(package: str) -> None:
    project = {"gateway", "synccore", "schema", "inboxql", "mime", "ops", "oauth", "tests", "bench"} - {package}
    crossing = {
        module: sorted(n for n in names if n.split(".")[0] in project) for module, names in _imports(package).items()
    }
    assert {m: n for m, n in crossing.items() if n} == {}
