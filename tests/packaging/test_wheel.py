"""The wheel (what `pip install .` installs) carries GraphiQL's files and the migrations: installed into a fresh
virtualenv, away from the checkout, it migrates a database and its gateway serves GraphiQL without npm."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from gateway.graphiql import ASSETS
from inboxql.devmail import free_port
from schema.db import drop_database
from tests.conftest import REDIS_URL, fresh_database_url
from tests.packaging.support import (
    CONSTRAINTS,
    REPO,
    assert_serves_graphiql,
    export_source,
    run,
    started,
    wait_for_http,
)

pytestmark = [pytest.mark.packaging, pytest.mark.slow]


def test_the_wheel_holds_graphiql_and_the_migrations_and_its_gateway_serves_graphiql(tmp_path: Path) -> None:
    began = time.monotonic()
    # Built from the source as git sees it: GraphiQL's files are not there, so the build must make them.
    source = export_source(tmp_path / "source")
    assert not (source / "gateway" / "static").exists()
    pip_env = {**os.environ, "PIP_CONSTRAINT": str(CONSTRAINTS)}
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(source)],
        env=pip_env,
    )
    [wheel] = (tmp_path / "dist").glob("inboxql-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packed = {name: archive.read(f"gateway/static/graphiql/{name}") for name in ASSETS}
    assert {f"gateway/static/graphiql/{name}" for name in ASSETS} <= names
    migrations = {p.name for p in (REPO / "alembic" / "versions").glob("*.py")}
    assert {"schema/_alembic/alembic.ini", "schema/_alembic/alembic/env.py"} <= names
    assert {f"schema/_alembic/alembic/versions/{name}" for name in migrations} <= names
    built = time.monotonic()

    # A fresh virtualenv, run from a directory that is not the checkout, so nothing of the checkout is imported.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], env=pip_env)
    where = run(
        [str(venv / "bin" / "python"), "-c", "import gateway.graphiql as g; print(g.STATIC_DIR)"], cwd=tmp_path
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    installed = time.monotonic()

    database_url = fresh_database_url("inboxql_wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INBOXQL_", "PYTHON"))}
    env.update(
        INBOXQL_DATABASE_URL=database_url,
        INBOXQL_REDIS_URL=REDIS_URL,
        INBOXQL_SECRET_KEY="wheel-test-key-" + "x" * 32,
        PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    inboxql = str(venv / "bin" / "inboxql")
    try:
        # The migrations come from the wheel (there is no alembic/ next to the installed packages).
        migrated = run([inboxql, "db", "upgrade"], env=env, cwd=tmp_path, timeout=120)
        assert "newest revision" in migrated.stderr, migrated.stderr
        port = free_port()
        with started([inboxql, "gateway", "--port", str(port)], tmp_path / "gateway.log", env=env, cwd=tmp_path) as gw:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", gw)
            assert_serves_graphiql(f"http://127.0.0.1:{port}", packed)
    finally:
        asyncio.run(drop_database(database_url))
    print(
        f"\nwheel: build {built - began:.1f} s, venv install {installed - built:.1f} s, "
        f"migrate and serve {time.monotonic() - installed:.1f} s",
        file=sys.stderr,
    )
    assert subprocess.run(["pgrep", "-f", str(venv)], capture_output=True).returncode == 1  # nothing left running
