"""`inboxql status`: the accounts table of the operator status page (schema.status), on the command line.

On a terminal a rich table; piped, one tab-separated line per account (and, with --folders, per folder), with
plain numbers for scripts:

    ID ADDRESS STATE LEASE_HOLDER|- MIRRORED SERVER_COUNT|? CHANGE_LOG_HEAD FAILING/WEBHOOKS ERROR_AT|- ERROR|-
    folder ID FOLDER STATE MIRRORED SERVER_COUNT|? ERROR_AT|- ERROR|-

Times are UTC. An error is one line (its whitespace collapsed), last, so a tab in it cannot shift a column.
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from rich.console import Console
from rich.table import Table

from schema import status


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


def _one_line(text: str | None) -> str:
    return " ".join(text.split()) if text else "-"


def _count(value: int | None) -> str:
    return str(value) if value is not None else "?"


def lines(snap: status.Snapshot, *, folders: bool) -> list[str]:
    found = []
    for a in snap.accounts:
        lease = a.lease_holder if a.lease_live(snap.taken_at) and a.lease_holder else "-"
        hooks = f"{a.failing_webhooks}/{len(a.webhooks)}"
        fields = [str(a.id), a.address, a.sync_state, lease, str(a.mirrored), _count(a.server_count)]
        fields += [str(a.change_log_head), hooks, _when(a.sync_error_at), _one_line(a.sync_error)]
        found.append("\t".join(fields))
        if folders:
            for f in a.folders:
                fields = ["folder", str(a.id), f.name, f.sync_state, str(f.mirrored), _count(f.server_count)]
                fields += [_when(f.sync_error_at), _one_line(f.sync_error)]
                found.append("\t".join(fields))
    return found


def table(snap: status.Snapshot, *, folders: bool) -> Table:
    grid = Table(title=f"inboxql accounts ({_when(snap.taken_at)} UTC)", title_justify="left")
    for name in ("id", "address", "state", "sync process", "messages", "change log", "webhooks", "last error"):
        grid.add_column(name, overflow="fold", justify="right" if name in ("id", "messages", "change log") else "left")
    for a in snap.accounts:
        lease = a.lease_holder if a.lease_live(snap.taken_at) and a.lease_holder else "none"
        hooks = f"{a.failing_webhooks} failing of {len(a.webhooks)}" if a.webhooks else "-"
        error = f"{_one_line(a.sync_error)} ({_when(a.sync_error_at)})" if a.sync_error else "-"
        style = "red" if a.sync_error or a.sync_state in ("auth_failed", "error") else None
        grid.add_row(
            str(a.id), a.address, a.sync_state, lease, a.progress, str(a.change_log_head), hooks, error, style=style
        )
        if folders:
            for f in a.folders:
                ferror = f"{_one_line(f.sync_error)} ({_when(f.sync_error_at)})" if f.sync_error else ""
                grid.add_row("", f"  {f.name}", f.sync_state, "", f.progress, "", "", ferror, style="dim")
    return grid


def render(snap: status.Snapshot, out: TextIO, *, folders: bool = False) -> None:
    if out.isatty():
        Console(file=out).print(table(snap, folders=folders))
        return
    for line in lines(snap, folders=folders):
        print(line, file=out)
