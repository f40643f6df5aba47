"""mime/ is protocol only: it imports the stdlib and itself, nothing of inboxql and nothing installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import mime
from tests.imports import PROJECT_PACKAGES, imported_modules

PACKAGE = Path(mime.__file__).resolve().parent
REPO = PACKAGE.parent
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
