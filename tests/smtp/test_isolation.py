"""synccore/smtp/ is protocol only, like synccore/imap/: the stdlib and aiosmtplib, nothing of inboxql."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import synccore.smtp
from tests.imports import PROJECT_PACKAGES, imported_modules

PACKAGE = Path(synccore.smtp.__file__).resolve().parent
MODULES = sorted(PACKAGE.glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_smtp_imports_only_the_stdlib_and_aiosmtplib(path: Path) -> None:
    imported = imported_modules(path) - {"__future__", "aiosmtplib"}
    assert not imported & PROJECT_PACKAGES
    assert imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names


def test_every_module_is_checked() -> None:
    assert {path.stem for path in MODULES} == {"__init__", "client", "endpoint", "errors"}
