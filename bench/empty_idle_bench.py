"""What an `inboxql sync` holding no account costs while idle: its threads' CPU time, read from the kernel.

Starts `inboxql sync` on a fresh database with no account, lets it settle, then reads every thread's CPU time
(`/proc/PID/task/TID/schedstat`: nanoseconds on the CPU, finer than the 10 ms ticks of `stat`) and its voluntary
context switches (its wake-ups) at the start and end of `--seconds`. Each thread is shown with the kernel's `comm`
and its wake-ups a second (29 a second: the sampler; 10-20: the stall watchdog); the main thread (the one whose id
is the process's) runs the event loop. The fork server and parse worker are children, counted apart.

Comparing code: `--tree DIR` (repeatable) runs the process with DIR first on PYTHONPATH (a checkout, e.g. from
`git archive`), `--tree .` this one; with `--rounds N` the trees alternate N times within the same period, so a
change in the machine's load falls on each alike. The load average is printed beside each figure.

    .venv/bin/python -m bench.empty_idle_bench --seconds 60 --rounds 2 --tree /tmp/base --tree .
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import common, thousand_bench


@dataclass(frozen=True, slots=True)
class ThreadTime:
    name: str
    cpu: float  # seconds on the CPU
    wakes: int  # voluntary context switches


def threads(pid: int) -> dict[int, ThreadTime]:
    """Every thread of the process: its name, CPU seconds and voluntary context switches."""
    found: dict[int, ThreadTime] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu = int((task / "schedstat").read_text().split()[0]) / 1e9
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        wakes = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt"))
        found[int(task.name)] = ThreadTime(name, cpu, wakes)
    return found


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process's own threads (not its reaped children's), in 10 ms ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(tree: str, url: str, seconds: float, settle: float) -> float:
    env = common.cli_env(url)
    source = str(Path(tree).resolve())
    env["PYTHONPATH"] = source + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inboxql.cli", "sync"],
            cwd=source,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            time.sleep(settle)
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"inboxql sync exited {proc.returncode}:\n{log.read().decode()[-3000:]}")
            kids = thousand_bench._children().get(proc.pid, [])
            load_before = common.load_average()
            before = threads(proc.pid)
            kids_before = sum(process_cpu(k) for k in kids)
            started = time.monotonic()
            time.sleep(seconds)
            after = threads(proc.pid)
            wall = time.monotonic() - started
            kids_after = sum(process_cpu(k) for k in kids if Path(f"/proc/{k}").exists())
            load_after = common.load_average()
        finally:
            common.stop_process(proc)
    total = 0.0
    print(f"{tree}: {wall:.1f} s; load {load_before} -> {load_after}")
    for tid, end in sorted(after.items()):
        start = before.get(tid, ThreadTime(end.name, 0.0, 0))
        cpu = end.cpu - start.cpu
        total += cpu
        role = "main (event loop)" if tid == proc.pid else end.name
        print(
            f"  {role:<22} {cpu * 1000:8.1f} ms CPU = {100 * cpu / wall:5.2f}% of a core,"
            f" {(end.wakes - start.wakes) / wall:6.1f} wake-ups/s"
        )
    print(f"  {'threads, all':<22} {total * 1000:8.1f} ms CPU = {100 * total / wall:5.2f}% of a core")
    kids_cpu = kids_after - kids_before
    print(f"  {'children':<22} {kids_cpu * 1000:8.1f} ms CPU = {100 * kids_cpu / wall:5.2f}% of a core (10 ms ticks)")
    return 100 * total / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", help="a source tree to run (repeatable; default: this one)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each measure lasts")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after start before measuring")
    parser.add_argument("--rounds", type=int, default=1, help="how many times each tree is measured, alternating")
    args = parser.parse_args(argv)
    common.check_services()
    print(common.machine())
    trees = args.tree or ["."]
    shares: dict[str, list[float]] = {tree: [] for tree in trees}
    with common.throwaway_database("inboxql_empty") as url:
        for _ in range(args.rounds):
            for tree in trees:
                shares[tree].append(measure(tree, url, args.seconds, args.settle))
    for tree, values in shares.items():
        print(f"{tree}: " + ", ".join(f"{v:.2f}%" for v in values) + " of a core (the process's threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
