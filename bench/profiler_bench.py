"""What the always-on sampling profiler costs: the initial sync with the sampler off and on, interleaved.

    .venv/bin/python -m bench.profiler_bench [--messages 2500] [--pairs 4] [--hz 49] [--flame bench/flame.svg]

A private Dovecot is seeded once; then `pairs` times, in alternating order (off-on, on-off, ...), a fresh database
gets the account and `inboxql sync --once` runs as a child process with INBOXQL_PROFILE_HZ=0 (off) or the rate
under test (on). Wall time, and CPU from wait4 on the child (user + system, its parse workers included), per run;
the sampler's own thread CPU as the sync process logs it when the sampler stops.

The overhead is given two ways: the difference of the medians of CPU seconds (on minus off) per second of wall
time, i.e. "% of a core" (noisy: a few percent between runs on a shared machine), and the sampler thread's own CPU
per second (precise, but blind to what waking it costs the loop's thread: the GIL handed over and back). Goal:
under 2% of a core. Then the worst case for a thread sampler, in this process: a loop that releases the GIL for a
socket call every ~70 us (each release wakes the sampler waiting for the GIL). With `--flame`, the last "on" run's
stacks are drawn as an SVG flame graph, and the frames where the samples ended (self) and the project's frames
they passed through (inclusive) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import common
from bench.common import BenchError, Timed
from inboxql.devmail import DovecotServer
from ops.flame import parse_collapsed, svg
from ops.sampler import IDLE, ProfilerConfig, Sampler

ROOT = Path(__file__).resolve().parents[1]
SAMPLER_LINE = re.compile(
    r"profile sampler: (\d+) samples in ([\d.]+) s at ([\d.]+) Hz; its thread used ([\d.]+) s CPU"
)
PROJECT = ("synccore.", "schema.", "mime.", "inboxql.", "ops.")


@dataclass(frozen=True, slots=True)
class Run:
    on: bool
    timed: Timed
    samples: int = 0
    sampler_cpu: float = 0.0
    dump: Path | None = None


def one_sync(server: DovecotServer, user: str, password: str, on: bool, hz: float, work: Path, index: int) -> Run:
    with common.throwaway_database("inboxql_profbench") as url:
        env = common.cli_env(url)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        account_id = common.add_account(server, user, password, env)
        dump = work / f"run-{index}.txt" if on else None
        env["INBOXQL_PROFILE_HZ"] = f"{hz:g}" if on else "0"
        if dump is not None:
            env["INBOXQL_PROFILE_DUMP"] = str(dump)
        timed = common.timed_run([*common.inboxql_command(), "sync", "--once", "--account", str(account_id)], env=env)
    if timed.returncode != 0:
        raise BenchError(f"inboxql sync --once exited {timed.returncode}: {timed.stderr[-3000:]}")
    found = SAMPLER_LINE.search(timed.stderr)
    if on and found is None:
        raise BenchError(
            f"the sync process did not report its sampler (is PYTHONPATH this checkout?): {timed.stderr[-2000:]}"
        )
    if not on and found is not None:
        raise BenchError("the sampler ran with INBOXQL_PROFILE_HZ=0")
    if found is None:
        return Run(on, timed)
    return Run(on, timed, int(found.group(1)), float(found.group(4)), dump)


def where_the_time_goes(stacks: Counter[tuple[str, ...]], top: int = 15) -> str:
    total = sum(stacks.values())
    busy = total - stacks.get((IDLE,), 0)
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        leaves[stack[-1]] += count
        for frame in set(stack):
            if frame.startswith(PROJECT):
                inclusive[frame] += count
    lines = [f"{total} samples of the loop's thread; {100 * busy / total:.1f}% busy, the rest waiting for I/O (idle)"]
    accounts: Counter[str] = Counter()
    for stack, count in stacks.items():
        accounts[stack[0] if stack[0].startswith("account:") else "(no account)"] += count
    lines.append("by account: " + ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in accounts.most_common()))
    # Biased: a sample is taken when the loop's thread lets go of the GIL, often at a socket call (see ops.sampler).
    lines.append("where samples ended (self; biased toward calls that release the GIL), share of all samples:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in leaves.most_common(top)]
    lines.append("the project's frames they passed through (inclusive):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def run(messages: int, pairs: int, hz: float, flame: Path | None) -> None:
    common.check_services()
    print(f"machine: {common.machine()}")
    print(f"load average at start: {common.load_average()}")
    runs: list[Run] = []
    with common.private_dovecot() as server, tempfile.TemporaryDirectory(prefix="inboxql-profbench-") as tmp:
        user, password = common.new_user(server)
        seeded = common.seed_mailbox(server, user, password, messages, seed=1)
        print(f"seeded {sum(seeded.counts.values())} messages: {seeded.counts}")
        for pair in range(pairs):
            for on in (False, True) if pair % 2 == 0 else (True, False):
                started = time.perf_counter()
                done = one_sync(server, user, password, on, hz, Path(tmp), len(runs))
                runs.append(done)
                print(
                    f"  run {len(runs):2d} {'on ' if on else 'off'}: wall {done.timed.wall:6.2f} s, CPU"
                    f" {done.timed.cpu:6.2f} s, sampler {done.samples:5d} samples {done.sampler_cpu:6.3f} s CPU"
                    f" ({time.perf_counter() - started:.0f} s with set-up)"
                )
        print(f"load average at the end: {common.load_average()}")
        last_dump = next((r.dump for r in reversed(runs) if r.dump is not None), None)
        stacks = parse_collapsed(last_dump.read_text()) if last_dump is not None else Counter()
    report(runs, hz)
    if stacks:
        print()
        print(where_the_time_goes(stacks))
    if flame is not None and stacks:
        subtitle = f"{sum(stacks.values())} samples of the loop's thread at {hz:g} Hz (bench/profiler_bench.py)"
        flame.write_text(svg(stacks, f"inboxql sync --once: the initial sync of {messages} messages", subtitle))
        print(f"flame graph: {flame} ({flame.stat().st_size / 1024:.0f} KiB)")
    logging.getLogger("ops.sampler").setLevel(logging.WARNING)  # its line per stop, twelve times below
    socket_loop_bench(hz)


# -- the worst case: a loop that lets go of the GIL thousands of times a second ---------------------------------


def _chunk() -> int:
    x = 0
    for i in range(3000):
        x += i
    return x


async def _socket_loop(rounds: int, hz: float) -> tuple[float, float, float, float]:
    """`rounds` of a little CPU and a socket send and receive on the loop: (loop thread CPU, process CPU, wall,
    sampler CPU) seconds. Each socket call releases the GIL, and each release wakes a sampler waiting for it."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    sampler = Sampler(ProfilerConfig(hz=hz))
    sampler.start()
    thread0, process0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    for _ in range(rounds):
        _chunk()
        await loop.sock_sendall(a, b"x" * 512)
        await loop.sock_recv(b, 4096)
    thread1, process1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
    sampler.stop()
    a.close()
    b.close()
    return thread1 - thread0, process1 - process0, wall1 - wall0, sampler.stats().cpu_seconds


def socket_loop_bench(hz: float, repeats: int = 6, rounds: int = 20_000) -> None:
    results: dict[bool, list[tuple[float, float, float, float]]] = {False: [], True: []}
    for repeat in range(repeats):
        for on in (False, True) if repeat % 2 == 0 else (True, False):
            results[on].append(asyncio.run(_socket_loop(rounds, hz if on else 0)))
    print()
    print(f"== worst case: {rounds} rounds of CPU + socket send/receive on one loop, off vs on at {hz:g} Hz ==")
    print(f"({repeats} + {repeats} runs in this process, interleaved; medians)")
    print(f"{'':34} {'off':>8} {'on':>8}")
    for index, label in enumerate(("loop thread CPU s", "process CPU s", "wall s")):
        without = statistics.median(r[index] for r in results[False])
        with_sampler = statistics.median(r[index] for r in results[True])
        print(f"{label:34} {without:8.3f} {with_sampler:8.3f} ({_pct(with_sampler, without)})")
    own = statistics.median(r[3] / r[2] for r in results[True])
    print(f"the sampler thread's own CPU: {100 * own:.2f}% of a core")


def report(runs: list[Run], hz: float) -> None:
    off = [r for r in runs if not r.on]
    on = [r for r in runs if r.on]
    wall_off = statistics.median(r.timed.wall for r in off)
    wall_on = statistics.median(r.timed.wall for r in on)
    cpu_off = statistics.median(r.timed.cpu for r in off)
    cpu_on = statistics.median(r.timed.cpu for r in on)
    own = statistics.median(r.sampler_cpu / r.timed.wall for r in on)
    print()
    print(f"== initial sync, profiler off vs on at {hz:g} Hz ({len(off)} + {len(on)} runs, interleaved; medians) ==")
    print(f"{'':34} {'off':>8} {'on':>8} {'on - off':>9}")
    print(f"{'wall s':34} {wall_off:8.2f} {wall_on:8.2f} {wall_on - wall_off:+9.2f} ({_pct(wall_on, wall_off)})")
    label = "CPU s (user+system, the child)"
    print(f"{label:34} {cpu_off:8.2f} {cpu_on:8.2f} {cpu_on - cpu_off:+9.2f} ({_pct(cpu_on, cpu_off)})")
    print(f"CPU difference per wall second: {100 * (cpu_on - cpu_off) / wall_on:+.2f}% of a core (goal: under 2%)")
    print(f"the sampler thread's own CPU:   {100 * own:.2f}% of a core (median of the 'on' runs)")
    spread = [r.timed.cpu for r in off]
    print(f"run-to-run spread of CPU, profiler off: {min(spread):.2f}-{max(spread):.2f} s")


def _pct(a: float, b: float) -> str:
    return f"{100 * (a - b) / b:+.1f}%" if b else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2500)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--hz", type=float, default=ProfilerConfig().hz, help="the rate under test (default: ours)")
    parser.add_argument("--flame", type=Path, help="write the last 'on' run's flame graph here (SVG)")
    args = parser.parse_args(argv)
    try:
        run(args.messages, args.pairs, args.hz, args.flame)
    except BenchError as exc:
        print(f"profiler_bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
