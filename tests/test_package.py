"""The top-level `schema` package shares its name with a PyPI package: the one importable here is ours."""

from __future__ import annotations

import importlib
from pathlib import Path

import schema

REPO = Path(__file__).resolve().parent.parent


def test_importable_schema_is_inboxqls_own_package() -> None:
    assert getattr(schema, "IS_INBOXQL_SCHEMA", False) is True


def test_importable_schema_lives_in_this_repository() -> None:
    assert schema.__file__ is not None
    location = Path(schema.__file__).resolve()
    assert location == REPO / "schema" / "__init__.py"
    assert "site-packages" not in location.parts


def test_pypi_schema_package_is_not_what_schema_resolves_to() -> None:
    # PyPI's `schema` exposes a `Schema` validator class; ours holds the mirror's tables instead.
    assert not hasattr(schema, "Schema")
    models = importlib.import_module("schema.models")
    assert models.Base.metadata.tables


def test_importable_oauth_is_ours_not_pypis() -> None:
    """PyPI's `oauth` is an OAuth 1.0 library of 2009; ours (providers, token refresh) must be the one imported."""
    import oauth

    assert oauth.__file__ is not None
    assert Path(oauth.__file__).resolve() == REPO / "oauth" / "__init__.py"
    assert hasattr(oauth, "refresh")
