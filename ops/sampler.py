"""The always-on stack sampler: a daemon thread that reads the interpreter's frames a few dozen times a second and
counts collapsed stacks (`a;b;c count`) in a rolling window, so an operator can ask a running process "where did
the last N seconds go?" without restarting it under a profiler.

Why a thread reading `sys._current_frames()` and not `sys.setprofile`/cProfile: a profile hook runs on every call
and return of every thread, so its cost grows with what the program does, while a sampler costs a fixed amount per
sample: about 25 us to read the loop thread's stack and its task's label, plus the thread's wake-up and its wait
for the GIL, which dominate (measured with `time.thread_time()` on a 2-core VM: 110-130 us a sample in the initial
sync, up to 300 us in a loop that releases the GIL thousands of times a second for socket calls, each release
waking the waiting sampler for nothing). Hence the default of 29 Hz (not a divisor of common timer periods, so it
does not beat with them): about 0.3% of a core in the initial sync and under 1% in that worst loop; BENCHMARKS.md
has the figures. The sampler reports its own CPU time (`stats()`, and a log line when it stops).

An idle loop is sampled at an eighth of the rate (IDLE_STRIDE): after IDLE_AFTER samples in a row found the loop
waiting, the thread wakes every 4th to 12th tick (drawn at random, 8 on average: a fixed stride would beat with
the sync process's 2 s rounds, and see them always or never), and each sample then counts for the ticks since the
one before it (its weight, decided before it is taken, so the shares stay unbiased); the first busy sample brings
the full rate back. The wake-ups were the cost (an idle sync process's sampler used 0.3% of a core, as much as the
process's rounds; bench.empty_idle_bench): idle, they are an eighth. What is lost is detail within a stride, not
shares: a burst shorter than a stride (276 ms at 29 Hz) after a quiet spell is seen by chance, at its stride's
weight, so an idle process's profile holds an eighth as many samples of its busy moments (bench.thousand_bench's
idle profile of 90 s found none in one run).
Only the loop's thread is sampled so (`threads="loop"`); with "all", other threads may work while the loop waits.

What it cannot see: time inside C code shows on the Python function that called it (a compiled driver, zlib, the
kernel's send). And it is biased where samples *end*: the sampler needs the GIL to read the frames, so it reads
them when the loop's thread lets go of it, which a busy asyncio loop does at every socket call (or after the 5 ms
switch interval in pure Python). The innermost frames are therefore skewed toward calls that release the GIL (in
the initial sync, `_SelectorSocketTransport.write` ends a fifth of the samples), while the frames above them still
say which code path was running. Read a flame graph by its wide callers, not by the self time of its leaves.

What is sampled: the asyncio loop thread the sampler was started from (`start()` inside the loop), or every
thread with `threads="all"`. A loop-thread sample taken while the loop waits for I/O is counted as `(idle)`, and
that share is what tells an operator how busy the loop is: with asyncio's own loop, the innermost frame is the
selector's `select`; with uvloop (uvicorn's choice, so the gateway's), the loop is C and the innermost Python frame
is the one that entered it (found at `start()`), which also covers uvloop's own C work: it cannot be told apart.

Per-account attribution: the sync core sets `TASK_LABEL` (a contextvar, e.g. "account:3") in each account's task;
tasks it starts copy the context, so an account's children carry it too. A contextvar of another thread cannot be
read directly, so the sampler reads the loop's current task (asyncio's `_current_tasks`, a plain dict keyed by
loop, read under the GIL) and that task's context (`Task.get_context()` on 3.12+, else the Context among the
task's GC referents on 3.11's C Task), before and after reading the frames, and keeps the label only when the task
did not change in between. That costs about 1-2 us a sample. On an interpreter where `_current_tasks` is not kept
(3.14 stores the running task on the thread state) stacks are simply unlabelled.

Greenlets: SQLAlchemy's asyncio layer runs the ORM's synchronous code in a greenlet (`AsyncSession.execute` ->
`Session.execute`), a stack of its own whose frames do not link back to the coroutine that awaited it. A loop-thread
sample whose outermost frame is not the thread's own (found at `start()`) is rooted at `(greenlet)`: still under
its account, but apart from its async callers (4% of the initial sync's samples hang there from `Session.execute`).

Bounded memory: samples go into buckets of `bucket_seconds` (default 10 s); buckets older than `window_seconds`
(default 600 s) are dropped; each bucket holds at most `max_stacks` distinct stacks (further ones count under
`(other stacks)`) of at most `max_depth` frames (deeper stacks keep their innermost frames under `(truncated)`).
Frames are named once per code object as `module:qualname` (function granularity, so stacks merge across lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import inspect
import logging
import os
import random
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import CodeType, FrameType

log = logging.getLogger(__name__)

# What the code running in a task is doing it for, e.g. "account:3"; prefixes the task's stacks.
TASK_LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("inboxql_profile_label", default=None)

IDLE = "(idle)"
# An idle loop's stride (module docstring): after IDLE_AFTER idle samples in a row, every IDLE_STRIDE-th tick.
IDLE_AFTER = 10
IDLE_STRIDE = 8
OTHER = "(other stacks)"
TRUNCATED = "(truncated)"
GREENLET = "(greenlet)"
Stack = tuple[str, ...]
MAX_NAMES = 100_000

_current_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[object]] | None = getattr(
    asyncio.tasks, "_current_tasks", None
)


@dataclass(frozen=True, slots=True)
class ProfilerConfig:
    """The sampler's settings (`from_env`: INBOXQL_PROFILE_*). hz 0 turns the sampler off."""

    hz: float = 29.0
    window_seconds: float = 600.0
    bucket_seconds: float = 10.0
    threads: str = "loop"  # "loop": the event loop's thread; "all": every thread
    max_stacks: int = 5000  # distinct stacks per bucket
    max_depth: int = 200
    # A file the collapsed stacks of the whole window are written to when the sampler stops (`inboxql sync --once`
    # under a scheduler, benchmarks); None: nothing is written.
    dump: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProfilerConfig:
        """INBOXQL_PROFILE_HZ, _WINDOW_SECONDS, _THREADS (loop or all), _DUMP; ConfigError names a bad one."""
        env = os.environ if env is None else env
        base = cls()
        threads = env.get("INBOXQL_PROFILE_THREADS", base.threads).strip().lower()
        if threads not in ("loop", "all"):
            raise ConfigError(f"INBOXQL_PROFILE_THREADS must be loop or all, not {threads!r}")
        hz = _number(env, "INBOXQL_PROFILE_HZ", base.hz)
        if not 0 <= hz <= 1000:
            raise ConfigError(f"INBOXQL_PROFILE_HZ must be between 0 (off) and 1000, not {hz:g}")
        window = _number(env, "INBOXQL_PROFILE_WINDOW_SECONDS", base.window_seconds)
        if window < base.bucket_seconds:
            raise ConfigError(f"INBOXQL_PROFILE_WINDOW_SECONDS must be at least {base.bucket_seconds:g}")
        return cls(hz=hz, window_seconds=window, threads=threads, dump=env.get("INBOXQL_PROFILE_DUMP") or None)


class ConfigError(ValueError):
    """An INBOXQL_PROFILE_* variable that cannot be used; the message says which."""


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


@dataclass(slots=True)
class _Bucket:
    start: float  # time.monotonic()
    stacks: dict[Stack, int] = field(default_factory=dict)
    samples: int = 0


@dataclass(frozen=True, slots=True)
class Profile:
    """What the sampler saw over `seconds` (from its buckets: whole buckets, so up to one bucket more than asked)."""

    stacks: Counter[Stack]
    samples: int
    seconds: float
    hz: float

    def collapsed(self) -> str:
        """Brendan Gregg's collapsed format: one `frame;frame;frame count` line per stack, root first."""
        return "".join(f"{';'.join(stack)} {count}\n" for stack, count in sorted(self.stacks.items()))


@dataclass(frozen=True, slots=True)
class SamplerStats:
    running: bool
    hz: float
    samples: int  # ticks counted since start (an idle loop's sample counts for its stride)
    taken: int  # samples taken since start
    cpu_seconds: float  # the sampler thread's own CPU time since start
    stacks: int  # distinct stacks held, summed over the window's buckets
    buckets: int


class Sampler:
    """Samples one event loop's thread (or every thread) into a rolling window. Start it from inside the loop."""

    def __init__(self, config: ProfilerConfig | None = None) -> None:
        self.config = config or ProfilerConfig()
        self._buckets: deque[_Bucket] = deque()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # Frame names by code object: bounded by the program's code, cleared past MAX_NAMES (code made by exec).
        self._labels: dict[CodeType, str] = {}
        self._samples = 0
        self._taken = 0
        self._cpu = 0.0
        # The Python frame the loop's C code runs tasks under (uvloop: whoever called run_until_complete).
        self._entry: CodeType | None = None
        # The loop thread's outermost frame: a sample rooted elsewhere ran on a stack of its own (a greenlet).
        self._base: CodeType | None = None
        self._started = 0.0

    @property
    def enabled(self) -> bool:
        return self.config.hz > 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop whose thread is sampled (None before `start`)."""
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start sampling `loop`'s thread (default: the running loop, so call this from inside it). No-op at hz 0."""
        if not self.enabled or self.running:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._entry = _loop_entry(sys._getframe(1))
        self._base = _outermost(sys._getframe(1))
        self._stopping = False
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="inboxql-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        thread.join(timeout=5)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        # What the always-on profiler cost this process, said once at the end (and read by bench/profiler_bench.py).
        log.info(
            "profile sampler: %d samples in %.1f s at %g Hz; its thread used %.3f s CPU (%.2f%% of a core);"
            " %d taken (an idle loop's at a stride)",
            self._samples,
            elapsed,
            self.config.hz,
            self._cpu,
            100 * self._cpu / elapsed,
            self._taken,
        )
        if self.config.dump:
            self._write_dump(self.config.dump)

    def _write_dump(self, path: str) -> None:
        try:
            with open(path, "w", encoding="utf-8") as out:
                out.write(self.profile().collapsed())
        except OSError as exc:  # a profile is a diagnostic: never the reason a process fails to stop
            log.warning("profile not written to %s: %s", path, exc)

    # -- reading -------------------------------------------------------------------------------------------------
    def profile(self, seconds: float | None = None) -> Profile:
        """The stacks of the buckets that overlap the last `seconds` (default: the whole window)."""
        now = time.monotonic()
        since = now - (seconds if seconds is not None else self.config.window_seconds)
        stacks: Counter[Stack] = Counter()
        samples = 0
        oldest = now
        with self._lock:
            for bucket in self._buckets:
                if bucket.start + self.config.bucket_seconds <= since:
                    continue
                stacks.update(bucket.stacks)
                samples += bucket.samples
                oldest = min(oldest, bucket.start)
        return Profile(stacks, samples, max(0.0, now - max(oldest, self._started)), self.config.hz)

    def stats(self) -> SamplerStats:
        with self._lock:
            stacks = sum(len(b.stacks) for b in self._buckets)
            buckets = len(self._buckets)
        return SamplerStats(self.running, self.config.hz, self._samples, self._taken, self._cpu, stacks, buckets)

    # -- the sampling thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        interval = 1.0 / self.config.hz
        cpu_start = time.thread_time()
        deadline = time.monotonic()
        weight = 1  # the ticks this sample stands for: those since the previous one
        idle_run = 0  # idle samples in a row
        while not self._stopping:
            try:
                idle = self.sample(weight)
            except Exception:  # a sampler that dies silently would look like an idle process: say so, go on
                log.exception("profile sample failed")
                idle = False
            self._cpu = time.thread_time() - cpu_start
            idle_run = idle_run + 1 if idle else 0
            slow = idle_run >= IDLE_AFTER and self.config.threads == "loop"
            weight = random.randint(IDLE_STRIDE // 2, IDLE_STRIDE * 3 // 2) if slow else 1
            deadline += interval * weight
            now = time.monotonic()
            if deadline < now:  # fell behind (a GIL held for long): skip, never catch up in a burst
                deadline = now
            time.sleep(deadline - now)  # costs less CPU per wake-up than Event.wait here (measured: 60 vs 100 us)

    def sample(self, weight: int = 1) -> bool:
        """Take one sample now, counted `weight` times (the thread calls this; tests may too). True when the
        loop's thread was waiting (idle)."""
        before = self._current_label()
        frames = sys._current_frames()
        after = self._current_label()
        label = before if before == after else None
        taken: list[Stack] = []
        if self.config.threads == "all":
            names = {t.ident: t.name for t in threading.enumerate()}
            me = threading.get_ident()
            for ident, frame in frames.items():
                if ident == me:
                    continue
                if ident == self._loop_thread:
                    taken.append(self._stack(frame, label, idle_marks=True))
                else:
                    taken.append(self._stack(frame, f"thread:{names.get(ident, ident)}", idle_marks=False))
        else:
            loop_frame = frames.get(self._loop_thread)
            if loop_frame is not None:
                taken.append(self._stack(loop_frame, label, idle_marks=True))
        del frames
        self._record(taken, weight)
        return bool(taken) and all(stack[-1] == IDLE for stack in taken)

    def _current_label(self) -> str | None:
        if _current_tasks is None or self._loop is None:
            return None
        task = _current_tasks.get(self._loop)
        if task is None:
            return None
        context = _task_context(task)
        return context.get(TASK_LABEL) if context is not None else None

    def _stack(self, frame: FrameType | None, root: str | None, *, idle_marks: bool) -> Stack:
        labels = self._labels
        names: list[str] = []
        innermost = True
        outermost: CodeType | None = None
        while frame is not None:
            code = outermost = frame.f_code
            name = labels.get(code)
            if name is None:
                if len(labels) >= MAX_NAMES:
                    labels.clear()
                name = labels[code] = _frame_name(code, frame)
            if innermost and idle_marks and (name in _SELECTS or code is self._entry):
                return (root, IDLE) if root else (IDLE,)
            innermost = False
            names.append(name)
            frame = frame.f_back
        if len(names) > self.config.max_depth:
            del names[self.config.max_depth :]
            names.append(TRUNCATED)
        elif idle_marks and self._base is not None and outermost is not self._base:
            names.append(GREENLET)
        if root:
            names.append(root)
        names.reverse()
        return tuple(names)

    def _record(self, stacks: list[Stack], weight: int = 1) -> None:
        now = time.monotonic()
        size = self.config.bucket_seconds
        with self._lock:
            buckets = self._buckets
            if not buckets or now >= buckets[-1].start + size:
                buckets.append(_Bucket(now - (now - self._started) % size))
            while buckets and buckets[0].start + size < now - self.config.window_seconds:
                buckets.popleft()
            bucket = buckets[-1]
            for stack in stacks:
                if stack not in bucket.stacks and len(bucket.stacks) >= self.config.max_stacks:
                    stack = (OTHER,)
                bucket.stacks[stack] = bucket.stacks.get(stack, 0) + weight
            bucket.samples += weight
            self._samples += weight
            self._taken += 1


# The selector calls an idle loop waits in (asyncio's selector loop on Linux, macOS and elsewhere).
_SELECTS = frozenset(f"selectors:{kind}Selector.select" for kind in ("Epoll", "Kqueue", "Poll", "Select", "Devpoll"))


_ASYNC = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _loop_entry(frame: FrameType | None) -> CodeType | None:
    """The first plain function outside the chain of coroutines that `frame` runs in: the Python frame the loop
    steps tasks from. Under uvloop, whose loop is C, a sample whose innermost frame is this one was taken while the
    loop waited (or ran its own C code, which a Python sampler cannot see into). Under asyncio's own loop it is
    `Handle._run`, innermost only while a C callback runs: left alone."""
    seen = False
    while frame is not None:
        if frame.f_code.co_flags & _ASYNC:
            seen = True
        elif seen:
            return None if frame.f_code.co_qualname == "Handle._run" else frame.f_code
        frame = frame.f_back
    return None


def _outermost(frame: FrameType) -> CodeType:
    while frame.f_back is not None:
        frame = frame.f_back
    return frame.f_code


def _frame_name(code: CodeType, frame: FrameType) -> str:
    """`module:qualname`, with the characters the collapsed format uses (`;`, and a newline) replaced."""
    module = frame.f_globals.get("__name__")
    if not isinstance(module, str):
        module = os.path.basename(code.co_filename)
    qualname = getattr(code, "co_qualname", code.co_name)
    return f"{module}:{qualname}".replace(";", ":").replace("\n", " ")


def _task_context(task: asyncio.Task[object]) -> contextvars.Context | None:
    get_context = getattr(task, "get_context", None)  # Python 3.12+
    if get_context is not None:
        context: contextvars.Context = get_context()
        return context
    for referent in gc.get_referents(task):  # 3.11's C Task holds its context without exposing it
        if type(referent) is contextvars.Context:
            return referent
    own = getattr(task, "_context", None)  # the pure-Python Task (no _asyncio module)
    return own if isinstance(own, contextvars.Context) else None


@contextlib.contextmanager
def labelled(label: str) -> Iterator[None]:
    """Run the block (and the tasks it starts) under `label` in the sampler's stacks, e.g. "account:3"."""
    token = TASK_LABEL.set(label)
    try:
        yield
    finally:
        TASK_LABEL.reset(token)


@contextlib.contextmanager
def sampling(config: ProfilerConfig | None = None) -> Iterator[Sampler]:
    """A sampler of the running loop for the block; stopped (and its dump written, if configured) after it."""
    sampler = Sampler(config or ProfilerConfig.from_env())
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()
