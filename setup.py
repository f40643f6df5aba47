"""Build hooks that pyproject.toml cannot express: GraphiQL's browser files and the migrations go into the wheel.

GraphiQL's files (gateway/static/graphiql/) come from npm and are not committed. A wheel built without them would
install a gateway whose GraphiQL page says "not installed", so building one runs scripts/vendor-graphiql first
when they are missing (it needs npm, at build time only: the installed gateway serves the copied files).
An editable install (`pip install -e .`) is left alone: it serves the checkout's own files, which scripts/setup
vends, and it must not need npm (scripts/setup installs the virtualenv before npm).

The Alembic migrations live at the repository's top (alembic/, alembic.ini), outside every package, so a wheel
would leave them behind and `inboxql db upgrade` would have nothing to run: they are copied into the built
schema package as schema/_alembic/ (schema.migrate looks there first).
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
GRAPHIQL = ROOT / "gateway" / "static" / "graphiql"


def _assets() -> tuple[str, ...]:
    """gateway.graphiql.ASSETS, read from its source: this file cannot import the package it builds (its
    dependencies may not be installed yet), and a second copy of the list would drift."""
    tree = ast.parse((ROOT / "gateway" / "graphiql.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ASSETS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise SystemExit("gateway/graphiql.py names no ASSETS")


ASSETS = _assets()


class BuildPyWithGraphiQL(build_py):
    def run(self) -> None:
        if not self.editable_mode and any(not (GRAPHIQL / name).is_file() for name in ASSETS):
            vendor = ROOT / "scripts" / "vendor-graphiql"
            if not vendor.is_file():
                raise SystemExit(f"GraphiQL's files are missing from {GRAPHIQL} and {vendor} is not here to make them")
            subprocess.run(["bash", str(vendor)], check=True)
            missing = [name for name in ASSETS if not (GRAPHIQL / name).is_file()]
            if missing:
                raise SystemExit(f"scripts/vendor-graphiql did not make {', '.join(missing)}")
        super().run()
        if not self.editable_mode:
            self._copy_migrations()

    def _copy_migrations(self) -> None:
        target = Path(self.build_lib) / "schema" / "_alembic"
        self.mkpath(str(target))
        self.copy_file(str(ROOT / "alembic.ini"), str(target / "alembic.ini"))
        for source in sorted((ROOT / "alembic").rglob("*")):
            if source.is_file() and source.suffix in (".py", ".mako") and "__pycache__" not in source.parts:
                destination = target / source.relative_to(ROOT)
                self.mkpath(str(destination.parent))
                self.copy_file(str(source), str(destination))


setup(cmdclass={"build_py": BuildPyWithGraphiQL})
