"""The `inboxql` command line.

    inboxql db upgrade
    inboxql account add --imap-url imap[s]://USER@HOST:PORT --password-stdin [--starttls] [--tls-ca-file F]
    inboxql account add --imap-url imap[s]://USER@HOST:PORT --oauth2 NAME --refresh-token-stdin [...]
    inboxql account list
    inboxql account set-password ID [--smtp-password]      (the password(s) on standard input)
    inboxql account remove ID --yes
    inboxql account pin ID GROUP | unpin ID
    inboxql sync [--once] [--account ID ...] [--group G] [--metrics-port PORT]
    inboxql fleet list | drain OWNER
    inboxql status [--folders]
    inboxql verify ACCOUNT_ID
    inboxql gateway [--host H] [--port P]
    inboxql profile [--seconds N] [--url URL] [--format svg|collapsed|speedscope] [-o FILE]
    inboxql token create --account ID [--account ID ...] [--admin] [--read-only] [--name NAME]
    inboxql token create --operator [--name NAME]
    inboxql token list [--all]
    inboxql token revoke ID [ID ...]
    inboxql secret rotate | prune | init
    inboxql demo

Configuration comes from INBOXQL_DATABASE_URL, INBOXQL_REDIS_URL and INBOXQL_SECRET_KEY (or INBOXQL_SECRET_KEY_FILE);
the sampling profiler's from INBOXQL_PROFILE_* (ops.sampler), `inboxql profile`'s token from INBOXQL_TOKEN.
OAuth2 providers from INBOXQL_OAUTH2_<NAME>_* (oauth.providers).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ops.sampler import ConfigError as ProfilerConfigError
from schema.accounts import SmtpSettings
from schema.settings import Settings, SettingsError

log = logging.getLogger("inboxql")


class UsageError(Exception):
    """A command was given something it cannot use; the message says what."""


@dataclass(frozen=True, slots=True)
class ImapUrl:
    host: str
    port: int
    security: str
    username: str


def parse_imap_url(url: str) -> ImapUrl:
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise UsageError(f"--imap-url must start with imap:// or imaps://, not {parts.scheme or url!r}")
    if not parts.hostname or not parts.username:
        raise UsageError("--imap-url needs a user and a host: imap://USER@HOST:PORT")
    if parts.password:
        raise UsageError("put the password on standard input (--password-stdin), never in the URL")
    security = "tls" if parts.scheme == "imaps" else "none"
    default_port = 993 if parts.scheme == "imaps" else 143
    return ImapUrl(parts.hostname, parts.port or default_port, security, unquote(parts.username))


def parse_smtp(url: str) -> SmtpSettings:
    from synccore.smtp import parse_smtp_url

    try:
        endpoint = parse_smtp_url(url)
    except ValueError as exc:
        raise UsageError(f"--smtp-url: {exc}") from None
    if endpoint.password:
        raise UsageError("--smtp-url: the password comes from standard input (the IMAP one), never the URL")
    return SmtpSettings(endpoint.host, endpoint.port, endpoint.security, endpoint.username)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inboxql", description="Mirror IMAP mailboxes into MySQL; serve GraphQL.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="the database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="create the database if missing and migrate it to the newest revision")

    account = commands.add_parser("account", help="accounts").add_subparsers(dest="account_command", required=True)
    add = account.add_parser("add", help="add an IMAP account (the login is checked first)")
    add.add_argument("--imap-url", required=True, help="imap://USER@HOST:PORT or imaps://USER@HOST:PORT")
    login = add.add_mutually_exclusive_group(required=True)
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.add_argument(
        "--oauth2",
        metavar="NAME",
        help="log in with OAuth2 through provider NAME (INBOXQL_OAUTH2_NAME_*); needs --refresh-token-stdin",
    )
    add.add_argument(
        "--refresh-token-stdin", action="store_true", help="with --oauth2: read the refresh token from stdin"
    )
    add.add_argument("--address", help="the account's email address (default: the user name)")
    add.add_argument("--tls-ca-file", help="trust this CA file instead of the system's (IMAP and SMTP)")
    add.add_argument(
        "--smtp-url",
        help="where to send mail: smtp://[USER@]HOST[:587] (STARTTLS) or smtps://[USER@]HOST[:465]; "
        "the IMAP login unless USER is given",
    )
    add.add_argument("--starttls", action="store_true", help="with imap://, upgrade to TLS with STARTTLS")
    add.add_argument(
        "--allow-insecure",
        action="store_true",
        help="allow a plaintext login (imap:// without --starttls) to a non-loopback address",
    )

    account.add_parser("list", help="every account: id, address, login, server, sync state, last error")
    set_password = account.add_parser(
        "set-password",
        help="new credentials from standard input, checked against the server first; clears auth_failed",
    )
    set_password.add_argument("account_id", type=int)
    set_password.add_argument(
        "--smtp-password",
        action="store_true",
        help="a second line on standard input is a password of its own for sending (SMTP)",
    )
    remove = account.add_parser(
        "remove",
        help="delete an account: its mirror, change log, webhooks, queued actions and outbox; revoke its tokens",
    )
    remove.add_argument("account_id", type=int)
    remove.add_argument("--yes", action="store_true", help="yes, delete it (required)")

    pin = account.add_parser(
        "pin", help="sync the account only in the sync processes started with --group GROUP (within seconds)"
    )
    pin.add_argument("account_id", type=int)
    pin.add_argument("group", type=_group)
    unpin = account.add_parser("unpin", help="sync the account in the processes started without --group")
    unpin.add_argument("account_id", type=int)

    outbox = commands.add_parser("outbox", help="messages sent through inboxql").add_subparsers(
        dest="outbox_command", required=True
    )
    listing = outbox.add_parser("list", help="queued, failed and uncertain sends (--all: sent and cancelled too)")
    listing.add_argument("--all", action="store_true", help="every entry, sent and cancelled included")

    sync = commands.add_parser("sync", help="run the sync core")
    sync.add_argument("--once", action="store_true", help="sync until every folder is caught up, then exit")
    sync.add_argument("--account", type=int, action="append", help="only this account (repeatable)")
    sync.add_argument(
        "--group",
        type=_group,
        help="serve only the accounts pinned to GROUP (`inboxql account pin`); without it, the unpinned ones",
    )
    sync.add_argument("--poll-interval", type=float, default=30.0, help="seconds between passes over folders")
    sync.add_argument(
        "--notify",
        action="store_true",
        help="follow every folder of an account on one connection with RFC 5465 NOTIFY where the server offers it "
        "(instead of IDLE on the inbox and polling the others)",
    )
    sync.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (default: INBOXQL_METRICS_PORT, else off)",
    )

    fleet = commands.add_parser(
        "fleet",
        help="the sync processes sharing the accounts",
        description="Sync processes share the accounts through leases of 10 s renewed every 2 s; the live ones of "
        "a group each take about their share, and the accounts of one that stops renewing are taken over within "
        "about 15 s.",
    ).add_subparsers(dest="fleet_command", required=True)
    fleet.add_parser("list", help="each sync process: name, group, accounts held, seconds since its heartbeat, state")
    drain = fleet.add_parser("drain", help="a sync process hands its accounts over to the others and exits 0")
    drain.add_argument("owner", help="the process's name, as `inboxql fleet list` shows it")

    status = commands.add_parser(
        "status",
        help="every account: state, sync process, messages mirrored of the server's, change log, webhooks, error",
        description="The accounts table of the operator status page: a table on a terminal, tab-separated lines "
        "when piped (id, address, state, lease holder, mirrored, server count, change-log head, failing/webhooks, "
        "error time, error).",
    )
    status.add_argument("--folders", action="store_true", help="a line for each folder too")

    verify = commands.add_parser("verify", help="compare the mirror with the live server")
    verify.add_argument("account_id", type=int)

    gateway = commands.add_parser(
        "gateway",
        help="serve the GraphQL API",
        description="Serve GraphQL at http://HOST:PORT/graphql (GraphiQL in a browser, websockets and SSE for "
        "subscriptions) and deliver webhooks. Limits and other settings come from INBOXQL_GATEWAY_* variables "
        "(gateway/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # The defaults can come from the environment, so a container image or a service's env file can make the
    # gateway listen on 0.0.0.0 (or another port) without a command line of its own.
    gateway.add_argument(
        "--host",
        default=os.environ.get("INBOXQL_GATEWAY_HOST", "127.0.0.1"),
        help="the address to listen on (INBOXQL_GATEWAY_HOST)",
    )
    gateway.add_argument(
        "--port",
        type=int,
        default=os.environ.get("INBOXQL_GATEWAY_PORT", "8000"),
        help="the port to listen on (INBOXQL_GATEWAY_PORT)",
    )

    profile = commands.add_parser(
        "profile",
        help="a running process's flame graph of the last N seconds",
        description="Fetch what a running gateway or sync process's always-on sampler saw in the last N seconds. "
        "The gateway needs an operator token in INBOXQL_TOKEN unless asked from this machine; the sync process "
        "serves it on its operator port to loopback clients.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    profile.add_argument("--seconds", type=float, default=60.0, help="how far back (at most the sampler's window)")
    profile.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway, or the sync process's port")
    profile.add_argument("--format", choices=("svg", "collapsed", "speedscope"), default="svg")
    profile.add_argument("-o", "--output", help="write here instead of standard output")

    token = commands.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="print a new API token for the given accounts (or --operator)")
    create.add_argument("--account", type=int, action="append", default=[])
    create.add_argument("--name", help="what the token is for (shown by token list)")
    create.add_argument(
        "--operator",
        action="store_true",
        help="the operator scope: manage accounts through the API (add, list, remove, set credentials); no mail",
    )
    create.add_argument(
        "--admin",
        action="store_true",
        help="the admin scope: the token may also manage these accounts' webhooks (never other accounts)",
    )
    create.add_argument(
        "--read-only",
        action="store_true",
        help="the token may read but every mutation is refused (FORBIDDEN)",
    )

    listing_tokens = token.add_parser("list", help="tokens: id, name, hint, scopes, accounts, created, last used")
    listing_tokens.add_argument("--all", action="store_true", help="revoked tokens too")
    revoke = token.add_parser("revoke", help="revoke tokens by id (open streams end within the token cache period)")
    revoke.add_argument("token_id", type=int, nargs="+")

    secret = commands.add_parser("secret", help="the key ring credentials are sealed with").add_subparsers(
        dest="secret_command", required=True
    )
    secret.add_parser("rotate", help="add a new key and re-seal every stored credential with it (no downtime)")
    secret.add_parser("prune", help="drop the older keys once nothing is sealed with them")
    secret.add_parser(
        "init",
        help="make the key ring file if there is none (0600, one new key) and print where it is; "
        "for installers and for a container's key volume",
    )

    demo = commands.add_parser("demo", help="a local Dovecot with sample mail, synced and served")
    demo.add_argument("--dir", help="where the demo keeps its Dovecot (default: ~/.local/share/inboxql/demo)")
    demo.add_argument("--port", type=int, default=8000, help="the gateway's port")
    return parser


def _group(text: str) -> str:
    if not text or len(text) > 64 or not text.isprintable() or text != text.strip():
        raise argparse.ArgumentTypeError("a group is a name of 1 to 64 printable characters, no outer spaces")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("sqlalchemy", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # asyncmy warns of an index name MariaDB ignores in Alembic's own version table.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    try:
        if args.command == "profile":  # only an HTTP request: no settings, so no key ring file is made
            from inboxql.profile import fetch

            return fetch(args.url, args.seconds, args.format, args.output)
        return _dispatch(args, Settings.from_env())
    except (UsageError, SettingsError, ProfilerConfigError) as exc:
        print(f"inboxql: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from inboxql import commands

    if args.command == "db":
        return asyncio.run(commands.db_upgrade(settings))
    if args.command == "account":
        return _account(args, settings)
    if args.command == "outbox":
        return asyncio.run(commands.outbox_list(settings, every=args.all))
    if args.command == "sync":
        return asyncio.run(
            commands.sync(
                settings,
                once=args.once,
                accounts=args.account,
                poll=args.poll_interval,
                metrics_port=args.metrics_port,
                group=args.group,
                notify=args.notify,
            )
        )
    if args.command == "fleet":
        from inboxql import fleet

        if args.fleet_command == "list":
            return asyncio.run(fleet.fleet_list(settings))
        return asyncio.run(fleet.fleet_drain(settings, args.owner))
    if args.command == "status":
        return asyncio.run(commands.status(settings, folders=args.folders))
    if args.command == "verify":
        return asyncio.run(commands.verify(settings, args.account_id))
    if args.command == "gateway":
        return commands.gateway(settings, args.host, args.port)
    if args.command == "token":
        return _token(args, settings)
    if args.command == "secret":
        if args.secret_command == "init":
            # Settings.from_env made the ring already when it was missing (unless INBOXQL_SECRET_KEY_REQUIRED).
            print(settings.secret_key_file or "INBOXQL_SECRET_KEY (no key ring file)")
            return 0
        if args.secret_command == "rotate":
            return asyncio.run(commands.secret_rotate(settings))
        return asyncio.run(commands.secret_prune(settings))
    if args.command == "demo":
        from inboxql import demo

        return demo.run(settings, args.dir, args.port)
    raise UsageError(f"unknown command {args.command}")


def _password(what: str = "password") -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError(f"no {what} on standard input")
    return password


def _account(args: argparse.Namespace, settings: Settings) -> int:
    from inboxql import commands

    if args.account_command == "list":
        return asyncio.run(commands.account_list(settings))
    if args.account_command == "set-password":
        password = _password()
        smtp_password = _password("SMTP password (second line)") if args.smtp_password else None
        return asyncio.run(commands.account_set_password(settings, args.account_id, password, smtp_password))
    if args.account_command in ("pin", "unpin"):
        from inboxql import fleet

        return asyncio.run(fleet.account_pin(settings, args.account_id, getattr(args, "group", None)))
    if args.account_command == "remove":
        if not args.yes:
            raise UsageError("removing deletes the account's mirror and revokes its tokens: pass --yes")
        return asyncio.run(commands.account_remove(settings, args.account_id))
    if args.oauth2 and not args.refresh_token_stdin:
        raise UsageError("--oauth2 needs --refresh-token-stdin (the refresh token on standard input)")
    if args.refresh_token_stdin and not args.oauth2:
        raise UsageError("--refresh-token-stdin goes with --oauth2 NAME")
    secret = _password("refresh token" if args.oauth2 else "password")
    url = parse_imap_url(args.imap_url)
    if args.starttls and url.security == "none":
        url = ImapUrl(url.host, url.port, "starttls", url.username)
    smtp = parse_smtp(args.smtp_url) if args.smtp_url else None
    if args.oauth2:
        from inboxql.grants import account_add_oauth2

        return asyncio.run(
            account_add_oauth2(
                settings,
                url.host,
                url.port,
                url.security,
                url.username,
                args.oauth2,
                secret,
                address=args.address,
                tls_ca_file=args.tls_ca_file,
                allow_insecure=args.allow_insecure,
                smtp=smtp,
            )
        )
    return asyncio.run(
        commands.account_add(
            settings,
            url.host,
            url.port,
            url.security,
            url.username,
            secret,
            address=args.address,
            tls_ca_file=args.tls_ca_file,
            allow_insecure=args.allow_insecure,
            smtp=smtp,
        )
    )


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from inboxql import commands

    if args.token_command == "list":
        return asyncio.run(commands.token_list(settings, revoked=args.all))
    if args.token_command == "revoke":
        return asyncio.run(commands.token_revoke(settings, args.token_id))
    if not args.account and not args.operator:
        raise UsageError("name the token's accounts (--account ID), or make it an operator token (--operator)")
    return asyncio.run(
        commands.token_create(
            settings,
            args.account,
            admin=args.admin,
            read_only=args.read_only,
            operator=args.operator,
            name=args.name,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
