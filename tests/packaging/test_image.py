"""The container image is built from the Dockerfile, not only written, and its gateway serves GraphiQL.

No registry serves base images here and containers cannot run (podman's crun fails on this kernel's cgroups), so:
the base is Debian 12 made by `debootstrap --variant=minbase` (cached for a week: it is the slow part, and a week
keeps its security updates fresh) and imported into Debian's podman, which builds the Dockerfile with
`--isolation chroot` and that base as its BASE build argument. The image's filesystem, exported, then runs its
own entrypoint under chroot, in namespaces of its own (mount and pid, so the gateway is process 1 as in a
container and nothing is left mounted), with the image's user, environment and working directory: first without a
secret key (it must refuse, saying how to give one), then with a key ring file where a volume would put it.

podman keeps its images in a storage directory of this test's own, removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from inboxql.devmail import free_port
from schema.db import drop_database
from tests.conftest import REDIS_URL, fresh_database_url
from tests.packaging.support import REPO, Started, assert_serves_graphiql, needs_root, run, started, wait_for_http

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.slow,
    pytest.mark.skipif(needs_root() is not None, reason=str(needs_root())),
]

CACHE = Path(os.environ.get("INBOXQL_CACHE_DIR", Path.home() / ".cache" / "inboxql"))
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def apt_install(*packages: str) -> None:
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "--no-install-recommends", *missing],
            env=APT_ENV,
        )


def debian_base() -> Path:
    """A tarball of `debootstrap --variant=minbase bookworm`, made at most once a week (per debootstrap version)."""
    version = run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"]).stdout.strip()
    year, week, _ = datetime.date.today().isocalendar()
    folder = CACHE / "debootstrap"
    tarball = folder / f"bookworm-minbase-{version}-{year}w{week:02d}.tar"
    if tarball.exists():
        return tarball
    folder.mkdir(parents=True, exist_ok=True)
    tree = folder / f"tree.{os.getpid()}"
    try:
        run(["debootstrap", "--variant=minbase", "bookworm", str(tree), "http://deb.debian.org/debian"], timeout=600)
        # The downloaded .debs and package lists would only make every image larger.
        for cached in (tree / "var/cache/apt/archives").glob("*.deb"):
            cached.unlink()
        partial = tarball.with_suffix(f".{os.getpid()}.partial")
        run(["tar", "-C", str(tree), "-cf", str(partial), "."])
        partial.rename(tarball)  # whole or not at all, for a run that is cut short
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    for old in folder.glob("bookworm-minbase-*.tar"):
        if old != tarball:
            old.unlink()
    return tarball


class Podman:
    """podman with a storage of its own (the caller's directory), so whatever it makes is removed with it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.argv = ["podman", "--root", str(root / "storage"), "--runroot", str(root / "run")]

    def __call__(self, *args: str, timeout: float = 600) -> str:
        return run([*self.argv, *args], timeout=timeout).stdout.strip()

    def remove_everything(self) -> None:
        subprocess.run([*self.argv, "rm", "--all", "--force"], capture_output=True, timeout=120)
        subprocess.run([*self.argv, "rmi", "--all", "--force"], capture_output=True, timeout=120)
        with contextlib.suppress(FileNotFoundError):
            assert_nothing_mounted_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def assert_nothing_mounted_under(path: Path) -> None:
    """Before deleting a tree: a mount left under it (a /dev bound into a root filesystem) would be deleted too."""
    prefix = str(path.resolve())
    mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    assert not [m for m in mounted if m == prefix or m.startswith(prefix + "/")], mounted


@pytest.fixture
def podman() -> Iterator[Podman]:
    apt_install("podman", "debootstrap")
    # A short path: podman refuses a runroot longer than 50 characters (pytest's tmp_path is longer).
    tool = Podman(Path(tempfile.mkdtemp(prefix="inboxql-podman-", dir="/tmp")))
    try:
        yield tool
    finally:
        tool.remove_everything()


def image_user(rootfs: Path, config: dict[str, Any]) -> tuple[str, str, str]:
    """The uid, gid and home of the image's USER, from the image's own /etc/passwd."""
    passwd = {line.split(":")[0]: line.split(":") for line in (rootfs / "etc/passwd").read_text().splitlines()}
    entry = passwd[str(config["User"])]
    return entry[2], entry[3], entry[5]


def image_env(rootfs: Path, config: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The image's environment plus `env` (as `docker run -e` adds), as env(1)'s arguments."""
    environment = dict(str(item).split("=", 1) for item in config["Env"])
    environment.update(HOME=image_user(rootfs, config)[2], **env)
    return [f"{k}={v}" for k, v in environment.items()]


def in_container(rootfs: Path, config: dict[str, Any], argv: Sequence[str], env: dict[str, str]) -> list[str]:
    """A command line running `argv` in the exported image as a container would: its own mount and pid
    namespaces (/proc of its own, /dev bound), chrooted, as the image's user, in its working directory, with
    the image's environment plus `env`."""
    uid, gid, _ = image_user(rootfs, config)
    mount = 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot --userspec="$1" "$0" "${@:2}"'
    return [
        "unshare", "--mount", "--pid", "--fork", "--kill-child", "--",
        "bash", "-c", mount, str(rootfs), f"{uid}:{gid}",
        "/usr/bin/env", "-i", "-C", str(config.get("WorkingDir") or "/"), *image_env(rootfs, config, env), *argv,
    ]  # fmt: skip


def container_pid(outer: Started) -> int:
    """The host's pid of the process `unshare --fork` started (process 1 of its pid namespace)."""
    children = Path(f"/proc/{outer.proc.pid}/task/{outer.proc.pid}/children").read_text().split()
    return int(children[0])


def test_the_image_builds_on_a_debian_base_refuses_without_a_key_and_serves_graphiql(
    tmp_path: Path, podman: Podman
) -> None:
    began = time.monotonic()
    base = debian_base()
    tag = f"localhost/inboxql-test:{os.getpid()}"
    podman("import", str(base), "localhost/inboxql-test-base:bookworm")
    based = time.monotonic()

    build = ["build", "--isolation", "chroot", "--layers=false", "--format", "docker", "-t", tag]
    # The limits podman's build otherwise takes from a default this machine refuses (FIELD-NOTES).
    build += ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
    build += ["--build-arg", "BASE=localhost/inboxql-test-base:bookworm"]
    if CA_BUNDLE.exists():  # pip and npm inside the build trust what this machine trusts (a proxy's CA)
        build += ["--volume", f"{CA_BUNDLE}:/run/build-ca.pem:ro", "--build-arg", "BUILD_CA_BUNDLE=/run/build-ca.pem"]
    podman(*build, str(REPO), timeout=900)
    built = time.monotonic()

    [image] = json.loads(podman("image", "inspect", tag))
    config = image["Config"]
    assert config["User"] == "inboxql"
    assert config["Entrypoint"] == ["inboxql"]
    assert config["Cmd"] == ["sync"]
    assert "INBOXQL_GATEWAY_HOST=0.0.0.0" in config["Env"]
    health = image["Healthcheck"]["Test"]  # kept only in the docker format (podman's OCI default drops it)
    assert health[0] == "CMD"
    assert "inboxql.healthcheck" in health
    container = podman("create", tag)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    exported = subprocess.Popen([*podman.argv, "export", container], stdout=subprocess.PIPE)
    # --numeric-owner: the image's uids, not the host's users of the same names (the .deb's inboxql is another).
    subprocess.run(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-xf", "-"], stdin=exported.stdout, check=True, timeout=300
    )
    assert exported.wait(60) == 0
    podman("rm", container)
    # The build stage's tools stayed there: no npm, no compiler in the image.
    assert not (rootfs / "usr/bin/npm").exists()
    assert not (rootfs / "usr/bin/gcc").exists()
    exported_at = time.monotonic()

    database_url = fresh_database_url("inboxql_image")
    port = free_port()
    env = {"INBOXQL_DATABASE_URL": database_url, "INBOXQL_REDIS_URL": REDIS_URL, "INBOXQL_GATEWAY_PORT": str(port)}
    entrypoint = config["Entrypoint"]
    key = rootfs / "var/lib/inboxql/secret.key"
    try:
        # Without a key: a refusal that says how to provide one, and no key made.
        refused = subprocess.run(
            in_container(rootfs, config, [*entrypoint, "gateway"], env), capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 2, refused.stderr
        assert "no secret key" in refused.stderr, refused.stderr
        assert "INBOXQL_SECRET_KEY" in refused.stderr
        assert "/var/lib/inboxql/secret.key" in refused.stderr
        assert "docker run -v" in refused.stderr
        assert not key.exists()

        # With a key ring file where a volume puts it (owned by the image's user, as `secret init` would make it).
        key.write_text("1 image-test-key-" + "k" * 32 + "\n")
        owner = (rootfs / "var/lib/inboxql").stat()
        os.chown(key, owner.st_uid, owner.st_gid)
        key.chmod(0o600)
        migrated = subprocess.run(
            in_container(rootfs, config, [*entrypoint, "db", "upgrade"], env), capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert migrated.returncode == 0, migrated.stderr
        with started(in_container(rootfs, config, [*entrypoint, "gateway"], env), tmp_path / "gateway.log") as gw:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", gw)
            assert f"Uvicorn running on http://0.0.0.0:{port}" in gw.output()  # every address of the container
            assert_serves_graphiql(f"http://127.0.0.1:{port}")
            # The image's HEALTHCHECK, run inside the running container's namespaces and root.
            uid, gid, _ = image_user(rootfs, config)
            checked = subprocess.run(
                ["nsenter", f"--target={container_pid(gw)}", "--mount", "--pid", "--root", "--wd", "--",
                 "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
                 "/usr/bin/env", "-i", *image_env(rootfs, config, env), *health[1:]],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert checked.returncode == 0, checked.stderr
        served = time.monotonic()
    finally:
        asyncio.run(drop_database(database_url))
    assert_nothing_mounted_under(rootfs)
    shutil.rmtree(rootfs)
    print(
        f"\nimage: base {based - began:.1f} s, build {built - based:.1f} s, export {exported_at - built:.1f} s, "
        f"refuse, migrate and serve {served - exported_at:.1f} s",
        file=sys.stderr,
    )
