"""A private Postfix submission server for the demo and the tests, delivering into a private Dovecot.

It runs Debian's ``postfix`` as root from a configuration directory of ours (``main.cf`` and a ``master.cf``
derived from Debian's), with a queue and a data directory of ours, on a loopback port of ours; the system's
own instance stays unconfigured and stopped. The only change outside our folder: Postfix runs an instance
from a non-default configuration directory only if the default ``main.cf`` lists it in
``alternate_config_directories``, so the directory is listed while the server runs, and taken out at stop.

What it does, and nothing else::

    client --587-style submission: STARTTLS (required), AUTH PLAIN/LOGIN--> smtpd
        smtpd --password check--> Dovecot's auth service (inet, smtpd_sasl_type = dovecot)
        smtpd -> cleanup -> incoming queue -> qmgr --LMTP--> Dovecot --> user's INBOX

Mail for ``user@MAIL_DOMAIN`` is delivered to the Dovecot user ``user``; mail for any other domain is refused
(there is no way out of this machine), as is any recipient of a client that has not logged in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from inboxql.devmail import DevMailError, DovecotServer, free_port, port_open

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
DEFAULT_CONFIG_DIR = Path("/etc/postfix")
DEBIAN_MASTER_CF = DEFAULT_CONFIG_DIR / "master.cf"

# Edits of the default main.cf's alternate_config_directories are read-modify-write: one at a time.
_REGISTRY_LOCK = Path(tempfile.gettempdir()) / "inboxql-postfix-registry.lock"


def ensure_postfix_installed() -> None:
    """Install Debian's postfix when it is missing, leaving the system's instance unconfigured."""
    if Path(POSTFIX).exists():
        return
    if os.geteuid() != 0:
        raise DevMailError("postfix is not installed: run scripts/setup (or `sudo apt-get install postfix`)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=True,
    )
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"], check=True, env=env)


class PostfixServer:
    """One Postfix on 127.0.0.1 taking submissions (STARTTLS, then AUTH against `dovecot`'s users) on `port`
    and delivering them into `dovecot` by LMTP.

    With `dovecot` running and users alice and bob added to it, alice sends to bob like this::

        with PostfixServer(folder, dovecot) as smtp:
            tls = ssl.create_default_context(cafile=str(smtp.ca_file))
            async with aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port, start_tls=True, tls_context=tls) as c:
                await c.auth_plain("alice", alice_password)
                await c.sendmail(smtp.address("alice"), [smtp.address("bob")], raw_message)
        # ... and the message is in bob's INBOX some 20 ms later.
    """

    host = "127.0.0.1"

    def __init__(self, root_dir: Path, dovecot: DovecotServer, port: int | None = None):
        if os.geteuid() != 0:
            raise DevMailError("the private Postfix runs as root (its master starts the daemons as `postfix`)")
        self.root = Path(root_dir).resolve()
        self.dovecot = dovecot
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """Postfix's own log (maillog_file, written by postlogd): one line per connection, queue id, delivery."""
        return self.root / "postfix.log"

    @property
    def ca_file(self) -> Path:
        """What a client verifies the server's certificate against: Dovecot's self-signed one (SAN 127.0.0.1)."""
        return self.dovecot.ca_file

    @property
    def domain(self) -> str:
        return self.dovecot.domain

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        ensure_postfix_installed()
        if not self.dovecot.running:
            raise DevMailError("start the Dovecot first: Postfix checks passwords with it and delivers into it")
        self._prepare()
        _register(self.config_dir)
        try:
            self._postfix("check")
            self._postfix("set-permissions")
            # start-fg keeps the master (`master -s`) in our process group: stop() can be sure nothing is left.
            self._proc = subprocess.Popen(
                [POSTFIX, "-c", str(self.config_dir), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(self.root / "postfix.stderr", "ab"),  # noqa: SIM115 - the child keeps it
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise DevMailError(f"postfix exited at start: {self._tail_logs()}")
                if port_open(self.host, self.port):
                    return
                time.sleep(0.05)
            raise DevMailError(f"postfix did not open its port in {timeout}s: {self._tail_logs()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                # `postfix stop` signals the master, which ends its daemons and exits; the group kill is the
                # backstop for anything that outlived it.
                subprocess.run(
                    [POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, check=False, timeout=30
                )
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc is not None:
                _reap_group(proc.pid)
        finally:
            _unregister(self.config_dir)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> PostfixServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def address(self, user: str) -> str:
        return self.dovecot.address(user)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- internals ----------------------------------------------------------------------------
    def _postfix(self, command: str) -> None:
        done = subprocess.run([POSTFIX, "-c", str(self.config_dir), command], capture_output=True, check=False)
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")
            raise DevMailError(f"postfix {command}: {out}")

    def _tail_logs(self, lines: int = 20) -> str:
        text = ""
        for path in (self.root / "postfix.stderr", self.log_file):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text.strip()

    def _prepare(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        # The daemons run as `postfix`: they chdir into the queue below this folder, and own the data directory.
        for folder in [self.root, *self.root.parents]:
            if folder == Path("/"):
                break
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(mode | 0o001)
        self.root.chmod(0o755)
        self.config_dir.chmod(0o755)
        shutil.chown(self.data_dir, user="postfix", group="postfix")
        (self.config_dir / "main.cf").write_text(_main_cf(self))
        (self.config_dir / "master.cf").write_text(_master_cf(DEBIAN_MASTER_CF.read_text(), self))


def _main_cf(server: PostfixServer) -> str:
    root = server.root
    dovecot = server.dovecot
    return f"""# Written by inboxql's devsmtp: a private loopback Postfix for tests and the demo.
compatibility_level = 3.6
queue_directory = {server.queue_dir}
data_directory = {server.data_dir}
maillog_file = {server.log_file}
maillog_file_prefixes = {root}
syslog_name = inboxql-postfix

myhostname = mail.{server.domain}
mydomain = {server.domain}
myorigin = $mydomain
mydestination =
inet_interfaces = {server.host}
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
local_recipient_maps =
alias_maps =
alias_database =
biff = no

# Every user@{server.domain} is a Dovecot user, reached by LMTP; nothing is relayed anywhere else.
virtual_mailbox_domains = {server.domain}
virtual_transport = lmtp:inet:{dovecot.host}:{dovecot.lmtp_port}
relay_domains =
relayhost =
default_transport = error:this test server delivers only to {server.domain}

# Passwords are Dovecot's (its auth service on a loopback port).
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:{dovecot.host}:{dovecot.auth_port}
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
smtpd_tls_cert_file = {dovecot.ca_file}
smtpd_tls_key_file = {dovecot.ca_file.parent / "key.pem"}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject

# Fast and quiet on loopback: no DNS, no waits, no client checks; retry soon if Dovecot was busy.
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
lmtp_host_lookup = native
smtp_host_lookup = native
smtpd_client_restrictions =
smtpd_helo_required = no
smtpd_peername_lookup = no
in_flow_delay = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 100
smtpd_client_connection_rate_limit = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
lmtp_destination_concurrency_limit = 10
lmtp_destination_recipient_limit = 50
lmtp_connection_cache_on_demand = yes
default_process_limit = 20
"""


_SUBMISSION_OPTIONS = (
    "syslog_name=inboxql-postfix/submission",
    "smtpd_tls_security_level=encrypt",
    "smtpd_sasl_auth_enable=yes",
    "smtpd_tls_auth_only=yes",
    "smtpd_client_restrictions=",
    "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
    "smtpd_recipient_restrictions=permit_sasl_authenticated,reject",
)


def _master_cf(debian: str, server: PostfixServer) -> str:
    """Debian's master.cf with no daemon chrooted (the chroot would lack our paths) and with its `smtp inet`
    listener replaced by our submission listener on loopback."""
    out = ["# Debian's master.cf as inboxql's devsmtp changed it: nothing chrooted, one loopback submission port."]
    skipping = False
    for line in debian.splitlines():
        if line.startswith((" ", "\t")):
            if not skipping:
                out.append(line)
            continue
        skipping = False
        fields = line.split()
        if not fields or line.startswith("#"):
            out.append(line)
            continue
        if len(fields) >= 8 and fields[1] == "inet":
            skipping = True  # Debian's port 25 listener (and its options): ours is below
            continue
        if len(fields) >= 8:
            fields[4] = "n"
            line = re.sub(r"\s+", "  ", " ".join(fields))
        out.append(line)
    out.append(f"{server.host}:{server.port} inet n - n - - smtpd")
    out.extend(f"  -o {option}" for option in _SUBMISSION_OPTIONS)
    return "\n".join(out) + "\n"


# -- alternate_config_directories of the default instance ------------------------------------------
@contextlib.contextmanager
def _registry() -> Iterator[list[str]]:
    """The default main.cf's alternate_config_directories, under a lock; what the block leaves is written back."""
    with open(_REGISTRY_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Debian's "No configuration" install has no main.cf, and postconf -e edits only an existing one.
        default_main_cf = DEFAULT_CONFIG_DIR / "main.cf"
        if not default_main_cf.exists():
            default_main_cf.write_text(
                "# The system's Postfix is not configured; inboxql.devsmtp lists its instances here.\n"
            )
        done = subprocess.run([POSTCONF, "-h", "alternate_config_directories"], capture_output=True, check=False)
        listed = done.stdout.decode().replace(",", " ").split() if done.returncode == 0 else []
        wanted = list(listed)
        yield wanted
        # Directories of servers that are gone (a killed test run) are dropped on the way.
        wanted = [d for d in dict.fromkeys(wanted) if Path(d).is_dir()]
        if wanted != listed:
            subprocess.run([POSTCONF, "-e", f"alternate_config_directories = {' '.join(wanted)}"], check=True)


def _register(config_dir: Path) -> None:
    with _registry() as listed:
        listed.append(str(config_dir))


def _unregister(config_dir: Path) -> None:
    with _registry() as listed:
        while str(config_dir) in listed:
            listed.remove(str(config_dir))


def _reap_group(pgid: int, timeout: float = 5.0) -> None:
    """Wait until no live process of the group is left, killing what remains after `timeout`."""
    deadline = time.monotonic() + timeout
    killed = False
    while _group_members(pgid):
        if time.monotonic() > deadline:
            if killed:
                raise DevMailError(f"postfix processes {_group_members(pgid)} outlived SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in the process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ')'.
            text = stat.read_text()
            state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                found.append(int(stat.parent.name))
    return found
