"""A private Dovecot IMAP server for the demo, the tests and the benchmarks.

It runs Debian's ``dovecot-imapd`` from a configuration file of ours, in a folder of ours, on loopback
ports of ours: nothing under /etc is read or changed. Logins are not cached
(``auth_cache_size = 0``) and each user has a passwd-file of its own, so a user added while the server
runs can log in at once.

Mail can also arrive by LMTP (``dovecot-lmtpd``), and other servers may check passwords with Dovecot's
authentication service: both listen on loopback ports of their own, for the private Postfix of
``inboxql.devsmtp``. User ``alice`` logs in as ``alice`` and receives mail for ``alice@inboxql.test``
(``MAIL_DOMAIN``): the domain is dropped before a user is looked up (``auth_username_format = %Ln``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
DOVECOT_LMTP = "/usr/lib/dovecot/lmtp"

# The one mail domain of the private servers: user `alice` is alice@inboxql.test (.test is reserved, RFC 2606).
MAIL_DOMAIN = "inboxql.test"

_SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


class DevMailError(RuntimeError):
    """The local Dovecot could not be installed, started or fed."""


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def free_ports(count: int, avoid: Iterable[int | None] = ()) -> list[int]:
    """`count` distinct free ports, none of `avoid` (ports chosen before, not bound yet): each socket stays bound
    until all are chosen (one at a time, the kernel may hand out the same port twice, and Dovecot refuses a
    configuration that listens twice on one port)."""
    taken = {p for p in avoid if p}
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in taken:
                ports.append(port)
        return ports


def ensure_dovecot_installed() -> None:
    """Install Debian's dovecot-imapd and dovecot-lmtpd when missing (the demo and the tests need them)."""
    if Path(DOVECOT).exists() and Path(DOVECOT_LMTP).exists():
        return
    if os.geteuid() != 0:
        raise DevMailError("dovecot is not installed: run `sudo apt-get install dovecot-imapd dovecot-lmtpd`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "dovecot-imapd", "dovecot-lmtpd"],
        check=True,
        env=env,
    )


@dataclass(frozen=True, slots=True)
class _Accounts:
    """Which system users Dovecot's processes run as."""

    mail_user: str
    mail_group: str
    login_user: str
    internal_user: str


def _process_users() -> _Accounts:
    if os.geteuid() == 0:
        return _Accounts("nobody", "nogroup", "dovenull", "dovecot")
    me = pwd.getpwuid(os.geteuid()).pw_name
    return _Accounts(me, str(os.getegid()), me, me)


class DovecotServer:
    """One Dovecot on 127.0.0.1 with a plaintext port and an implicit-TLS port (self-signed CA), an LMTP port
    that delivers to its users (``user@MAIL_DOMAIN``) and its authentication service on a port (for Postfix)."""

    host = "127.0.0.1"

    def __init__(
        self,
        root_dir: Path,
        port: int | None = None,
        tls_port: int | None = None,
        *,
        capabilities: str | None = None,
        auth_switch: bool = False,
        max_user_connections: int = 200,
        oauth2_introspection: str | None = None,
        process_limit: int | None = None,
    ):
        """`capabilities` replaces what Dovecot advertises after login (its `imap_capability`), so tests can
        play a server without CONDSTORE or QRESYNC. `auth_switch` puts a password database in front that
        `set_auth_unavailable` makes fail temporarily for a user, as a passdb whose backend is down does. A login
        beyond `max_user_connections` of a user (from one address) is answered `NO [LIMIT]`. `oauth2_introspection`
        (an RFC 7662 endpoint's URL, the resource server's credentials in it) adds an oauth2 passdb: the server
        then offers AUTH=XOAUTH2 and AUTH=OAUTHBEARER (IMAP, and SMTP through its SASL service) and accepts an
        access token the endpoint says is active for that user; passwords keep working. `process_limit` raises
        Dovecot's `default_process_limit` (100: at most 100 IMAP connections at once, one process each) and its
        `default_client_limit` to match, for runs of many accounts (bench.thousand_bench)."""
        self.root = Path(root_dir).resolve()
        self.capabilities = capabilities
        self.auth_switch = auth_switch
        self.max_user_connections = max_user_connections
        self.oauth2_introspection = oauth2_introspection
        self.process_limit = process_limit
        chosen = free_ports(4, avoid=(port, tls_port))
        self.port = port or chosen[0]
        self.tls_port = tls_port or chosen[1]
        self.lmtp_port = chosen[2]
        self.auth_port = chosen[3]
        self.domain = MAIL_DOMAIN
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def ca_file(self) -> Path:
        return self.root / "tls" / "cert.pem"

    @property
    def log_file(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def passwd_file(self) -> Path:
        """Dovecot's passdb path; %u stands for the user name."""
        return self.root / "users" / "%u"

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        ensure_dovecot_installed()
        self._prepare()
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "dovecot.stderr", "ab"),  # noqa: SIM115 - the child keeps it
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DevMailError(f"dovecot exited at start: {self._tail_logs()}")
            if all(port_open(self.host, p) for p in (self.port, self.tls_port, self.lmtp_port, self.auth_port)):
                return
            time.sleep(0.05)
        self.stop()
        raise DevMailError(f"dovecot did not open its ports in {timeout}s: {self._tail_logs()}")

    def _tail_logs(self, lines: int = 20) -> str:
        text = ""
        for path in (self.root / "dovecot.stderr", self.log_file):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text.strip()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- users and mail -----------------------------------------------------------------------
    def address(self, user: str) -> str:
        """The mail address at which `user` receives mail (by LMTP, e.g. through inboxql.devsmtp's Postfix)."""
        return f"{user}@{self.domain}"

    def add_user(self, name: str, password: str) -> None:
        if ":" in name or ":" in password or "\n" in name + password:
            raise ValueError("user names and passwords in the passwd-file cannot hold ':' or newlines")
        if name != name.lower() or "@" in name:
            raise ValueError("user names are lower case and without a domain (auth_username_format = %Ln)")
        home = self.root / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        _chown_tree(home, _process_users())
        self._write_user(name, password)

    def set_password(self, name: str, password: str) -> None:
        self._write_user(name, password)
        # Dovecot looks at a passwd-file at most once a second: let that second pass.
        time.sleep(1.1)

    def _write_user(self, name: str, password: str) -> None:
        # One passwd-file per user (Dovecot expands %u in the path): a new user is a new file, read at its
        # first login. Editing one shared file does not work: Dovecot notices changes by mtime, in seconds.
        users = self.root / "users"
        users.mkdir(exist_ok=True)
        staged = users / f".{name}.new"
        staged.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        staged.chmod(0o644)
        target = users / name
        if target.exists():
            # A changed password may leave size and mtime (whole seconds) as they were: move the mtime on.
            stamp = max(time.time(), target.stat().st_mtime + 1)
            os.utime(staged, (stamp, stamp))
        staged.replace(target)

    @property
    def auth_flags(self) -> Path:
        """Users whose logins fail temporarily: one empty file each (see set_auth_unavailable)."""
        return self.root / "auth-unavailable"

    def set_auth_unavailable(self, name: str, unavailable: bool = True) -> None:
        """Make the user's logins answer `NO [UNAVAILABLE]` (Dovecot's word for a passdb that failed
        temporarily) until called with False; needs `auth_switch`. Applies from the next login."""
        if not self.auth_switch:
            raise DevMailError("set_auth_unavailable needs DovecotServer(auth_switch=True)")
        flag = self.auth_flags / name
        if unavailable:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def users(self) -> list[str]:
        folder = self.root / "users"
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []

    def doveadm(self, *args: str, input: bytes | None = None) -> bytes:
        done = subprocess.run(
            [DOVEADM, "-c", str(self.config_file), *args],
            input=input,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise DevMailError(f"doveadm {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout

    def append(
        self,
        user: str,
        password: str,
        mailbox: str,
        messages: Iterable[bytes | tuple[bytes, tuple[str, ...]]],
    ) -> int:
        """Append messages over IMAP with MULTIAPPEND (fast seeding; the mailbox name is ASCII)."""
        return append_pipelined(self.host, self.port, user, password, mailbox, messages)

    # -- internals ----------------------------------------------------------------------------
    def _prepare(self) -> None:
        who = _process_users()
        for sub in ("run", "state", "tls", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # Dovecot's unprivileged processes must be able to reach the homes below this folder.
        for folder in [self.root, *self.root.parents]:
            if folder == Path("/"):
                break
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(mode | 0o001)
        (self.root / "home").chmod(0o755)
        (self.root / "users").mkdir(exist_ok=True)
        if not self.ca_file.exists():
            _self_signed_cert(self.root / "tls")
        if self.auth_switch:
            self.auth_flags.mkdir(mode=0o755, exist_ok=True)
            script = self.root / "auth-switch.sh"
            # Dovecot's checkpassword protocol: "user NUL password NUL ..." on fd 3; exit 111 is a temporary
            # failure (NO [UNAVAILABLE]), exit 1 a refusal that lets the passwd-file passdb below decide.
            script.write_text(
                "#!/bin/sh\n"
                "user=$(tr '\\000' '\\n' <&3 | head -n 1)\n"
                f'[ -e "{self.auth_flags}/$user" ] && exit 111\n'
                "exit 1\n"
            )
            script.chmod(0o755)
        if self.oauth2_introspection is not None:
            oauth2 = self.root / "dovecot-oauth2.conf.ext"
            oauth2.write_text(_oauth2_config(self.oauth2_introspection))
            oauth2.chmod(0o600)  # it holds the resource server's secret
        self.config_file.write_text(_config(self, who))


def _config(server: DovecotServer, who: _Accounts) -> str:
    root = server.root
    mailboxes = "\n".join(
        f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}"
        for name, use in _SPECIAL_USE.items()
    )
    return f"""# Written by inboxql's devmail: a private loopback Dovecot for tests and the demo.
protocols = imap lmtp
listen = {server.host}
base_dir = {root}/run
state_dir = {root}/state
log_path = {server.log_file}
info_log_path = {server.log_file}
ssl = yes
ssl_cert = <{root}/tls/cert.pem
ssl_key = <{root}/tls/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login{" oauthbearer xoauth2" if server.oauth2_introspection else ""}
auth_cache_size = 0
# alice@inboxql.test (an LMTP recipient, or a login with the domain) is the passwd-file user alice.
auth_username_format = %Ln
{_auth_switch(server)}{_oauth2_passdb(server)}passdb {{
  driver = passwd-file
  args = scheme=PLAIN {server.passwd_file}
}}
userdb {{
  driver = passwd-file
  args = {server.passwd_file}
  default_fields = uid={who.mail_user} gid={who.mail_group} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
first_valid_uid = 1
default_internal_user = {who.internal_user}
default_login_user = {who.login_user}
mail_max_userip_connections = {server.max_user_connections}
{_limits(server)}{f"imap_capability = {server.capabilities}" if server.capabilities else ""}
service imap-login {{
  inet_listener imap {{
    address = {server.host}
    port = {server.port}
  }}
  inet_listener imaps {{
    address = {server.host}
    port = {server.tls_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {server.host}
    port = {server.lmtp_port}
  }}
}}
# Postfix asks here whether a submission client's password is right (smtpd_sasl_type = dovecot).
service auth {{
  inet_listener {{
    address = {server.host}
    port = {server.auth_port}
  }}
}}
service anvil {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}
}}
"""


def _limits(server: DovecotServer) -> str:
    if server.process_limit is None:
        return ""
    # Each IMAP connection is a process of `service imap` (client_limit 1), whose own process_limit (1024 built in)
    # beats the default. The auth service holds a client for each process of the login and mail services (Dovecot
    # warns when its limit is below their sum), hence 3x and more.
    return f"""default_process_limit = {server.process_limit}
default_client_limit = {3 * server.process_limit + 1000}
service imap {{
  process_limit = {server.process_limit}
}}
"""


def _auth_switch(server: DovecotServer) -> str:
    if not server.auth_switch:
        return ""
    return f"""passdb {{
  driver = checkpassword
  args = {server.root}/auth-switch.sh
  result_failure = continue
  result_internalfail = return-fail
}}
"""


def _oauth2_passdb(server: DovecotServer) -> str:
    if server.oauth2_introspection is None:
        return ""
    return f"""# OAuth2 access tokens (XOAUTH2, OAUTHBEARER), checked with the authorization server's introspection.
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {server.root}/dovecot-oauth2.conf.ext
}}
"""


def _oauth2_config(introspection_url: str) -> str:
    # RFC 7662: POST token=..., authenticated as the resource server (the credentials in the URL); the answer's
    # "active" must be true and its "username" must be the user who logs in. No tokeninfo URL: always introspect.
    return f"""introspection_mode = post
introspection_url = {introspection_url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
"""


def _self_signed_cert(folder: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(folder / "key.pem"),
            "-out",
            str(folder / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )


def _chown_tree(path: Path, who: _Accounts) -> None:
    if os.geteuid() != 0:
        return
    shutil.chown(path, user=who.mail_user, group=who.mail_group)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def append_pipelined(
    host: str,
    port: int,
    user: str,
    password: str,
    mailbox: str,
    messages: Iterable[bytes | tuple[bytes, tuple[str, ...]]],
) -> int:
    """APPEND every message with RFC 3502 MULTIAPPEND and RFC 7888 LITERAL+; returns how many.

    One APPEND per message costs Dovecot a mailbox transaction each, which grows with the folder (10,000
    messages took over 30 s); a MULTIAPPEND of hundreds is one transaction.
    """
    with socket.create_connection((host, port), timeout=120) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # greeting
        sock.sendall(f"a LOGIN {_quote(user)} {_quote(password)}\r\n".encode())
        _expect_tagged(reader, b"a")
        count = 0
        batch = 0
        parts: list[bytes] = []
        size = 0

        def flush() -> None:
            nonlocal batch, size
            if not parts:
                return
            tag = f"m{batch}".encode()
            sock.sendall(tag + b" APPEND " + _quote(mailbox).encode() + b"".join(parts) + b"\r\n")
            _expect_tagged(reader, tag)
            parts.clear()
            batch += 1
            size = 0

        for item in messages:
            raw, flags = (item, ()) if isinstance(item, bytes) else item
            flag_list = f" ({' '.join(flags)})" if flags else ""
            parts.append(f"{flag_list} {{{len(raw)}+}}\r\n".encode() + raw)
            count += 1
            size += len(raw)
            if len(parts) >= 500 or size >= 16 << 20:
                flush()
        flush()
        sock.sendall(b"z LOGOUT\r\n")
        return count


def _expect_tagged(reader: BinaryIO, tag: bytes) -> None:
    while True:
        line: bytes = reader.readline()
        if not line:
            raise DevMailError("connection closed")
        if line.startswith(tag + b" "):
            if not line.startswith(tag + b" OK"):
                raise DevMailError(f"IMAP command {tag.decode()} failed: {line!r}")
            return
