"""The measurement harness: time one call in a loop until the numbers are stable.

It knows nothing about models: it times any ``call()`` (the sweep passes a bound
``session.run``) and returns data, never prints.

* Closed loop (:func:`measure_closed_loop`): N threads call back to back, like N clients
  that each wait for their answer. Latency is the time inside the call.
* Open loop (:func:`measure_open_loop`): requests are due at a fixed rate (constant or
  Poisson gaps) whether or not earlier ones are done; N threads serve them in order.
  Latency runs from each request's *intended* start, so time spent queueing behind a slow
  call counts, which closed-loop and "fixed rate" tools with coordinated omission hide.

Both warm up, then measure back-to-back windows until the last ``stable_windows`` agree
within ``stability`` (calls/s and median latency each within that fraction of their mean) or
``max_duration_s`` has passed. Stable runs report the last windows; unstable runs report
all of them, flagged ``stable=False``.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Call = Callable[[], object]

# Sleeping overshoots by 50-100 µs (timer slack, virtual machines): the last stretch before
# a request's start is polled instead, at a CPU cost of up to rate x this per second.
_SPIN_NS = 150_000
_SLEEP_SLICE_NS = 50_000_000  # an open-loop caller waiting for its next due time wakes this often


@dataclass(frozen=True)
class HarnessSettings:
    """How long to warm up and measure, and what counts as stable."""

    warmup_s: float = 0.5
    window_s: float = 1.0
    max_duration_s: float = 10.0
    stability: float = 0.10
    stable_windows: int = 3


@dataclass(frozen=True)
class Window:
    """One measurement window: its bounds, completed calls and their median latency."""

    start_ns: int
    end_ns: int
    calls: int
    median_latency_ns: float

    @property
    def calls_per_s(self) -> float:
        return self.calls * 1e9 / max(self.end_ns - self.start_ns, 1)


@dataclass
class Measurement:
    """What the harness saw in the reported windows."""

    latency_ns: np.ndarray  # per call: end - start (closed) or end - intended start (open)
    service_ns: np.ndarray  # per call: time inside the call
    seconds: float  # wall time covered by the reported windows
    windows: list[Window]  # every measured window, warm-up excluded
    reported_windows: int  # the last this many windows are reported
    stable: bool
    overhead: float | None = None  # closed loop: share of callers' time outside the call
    target_rate: float | None = None  # open loop: requests per second asked for
    backlog: int = 0  # open loop: requests due before the end that never completed

    @property
    def calls(self) -> int:
        return len(self.latency_ns)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def queue_ns(self) -> np.ndarray:
        """Per call: how long it waited past its intended start (open loop; else zeros)."""
        waited: np.ndarray = self.latency_ns - self.service_ns
        return waited


@dataclass
class _Calls:
    """One caller thread's timestamps (ns); ``origin`` is where latency is counted from."""

    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)


class _Flag:
    """Set to False to stop the callers; a plain attribute is the cheapest check per call."""

    running = True


class _Callers:
    """The caller threads and their records; the first failure is kept for the coordinator."""

    def __init__(self, count: int, target: Callable[[_Calls, _Flag], None]) -> None:
        self.flag = _Flag()
        self.records = [_Calls() for _ in range(count)]
        self.error: BaseException | None = None
        self.threads = [
            threading.Thread(target=self._guard, args=(target, rec), daemon=True, name=f"bench-{i}")
            for i, rec in enumerate(self.records)
        ]

    def _guard(self, target: Callable[[_Calls, _Flag], None], record: _Calls) -> None:
        try:
            target(record, self.flag)
        except BaseException as exc:  # handed to the coordinator, which re-raises it
            self.error = self.error or exc
            self.flag.running = False

    def start(self) -> None:
        """Start every caller. Stop signals wait until all have started (a Ctrl-C inside
        ``Thread.start`` would leave a caller running that :meth:`stop` does not know of);
        the callers inherit the blocked signals, so only the main thread receives them."""
        blocked = _block_stop_signals()
        try:
            for thread in self.threads:
                thread.start()
        finally:
            if blocked is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def stop(self) -> None:
        """Stop the callers and wait for every one, even through Ctrl-C: a caller still
        inside ONNX Runtime when the interpreter exits aborts the process (SIGABRT)."""
        self.flag.running = False
        interrupted: KeyboardInterrupt | None = None
        for thread in self.threads:
            while thread.is_alive():
                try:
                    thread.join()
                except KeyboardInterrupt as exc:  # re-raised once every caller has returned
                    interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        if self.error is not None:
            raise self.error

    def marks(self) -> list[int]:
        return [len(rec.end) for rec in self.records]

    def alive(self) -> bool:
        return self.error is None and any(t.is_alive() for t in self.threads)


def _block_stop_signals() -> set[int | signal.Signals] | None:
    """Block SIGINT and SIGTERM in this thread; the previous mask (None where unsupported)."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _median_latency(callers: _Callers, before: list[int], after: list[int]) -> float:
    parts = [
        np.asarray(rec.end[a:b], dtype=np.int64) - np.asarray(rec.origin[a:b], dtype=np.int64)
        for rec, a, b in zip(callers.records, before, after, strict=True)
        if b > a
    ]
    return float(np.median(np.concatenate(parts))) if parts else math.nan


def is_stable(windows: list[Window], settings: HarnessSettings) -> bool:
    last = windows[-settings.stable_windows :]
    if len(last) < settings.stable_windows:
        return False
    for values in ([w.calls_per_s for w in last], [w.median_latency_ns for w in last]):
        mean = sum(values) / len(values)
        if not mean > 0 or any(abs(v - mean) > settings.stability * mean for v in values):
            return False
    return True


def _measure_windows(
    callers: _Callers, settings: HarnessSettings
) -> tuple[list[Window], list[list[int]], bool]:
    """Warm up, then close windows until stable or out of time; return windows and marks."""
    clock = time.perf_counter_ns
    time.sleep(settings.warmup_s)
    marks = [callers.marks()]
    bounds = [clock()]
    window_ns = int(settings.window_s * 1e9)
    deadline = bounds[0] + int(settings.max_duration_s * 1e9)
    windows: list[Window] = []
    stable = False
    while callers.alive():
        time.sleep(max(0.0, (bounds[-1] + window_ns - clock()) / 1e9))
        # A call longer than a window would leave it empty: extend it to one completion.
        while sum(callers.marks()) == sum(marks[-1]) and clock() < deadline and callers.alive():
            time.sleep(0.001)
        marks.append(callers.marks())
        bounds.append(clock())
        median = _median_latency(callers, marks[-2], marks[-1])
        windows.append(Window(bounds[-2], bounds[-1], sum(marks[-1]) - sum(marks[-2]), median))
        stable = is_stable(windows, settings)
        if stable or bounds[-1] >= deadline:
            break
    return windows, marks, stable


def _collect(
    callers: _Callers, windows: list[Window], marks: list[list[int]], stable: bool, last: int
) -> Measurement:
    reported = min(len(windows), last) if stable else len(windows)
    first = len(marks) - 1 - reported
    latency: list[np.ndarray] = []
    service: list[np.ndarray] = []
    for i, rec in enumerate(callers.records):
        a, b = marks[first][i], marks[-1][i]
        end = np.asarray(rec.end[a:b], dtype=np.int64)
        latency.append(end - np.asarray(rec.origin[a:b], dtype=np.int64))
        service.append(end - np.asarray(rec.start[a:b], dtype=np.int64))
    span = windows[-1].end_ns - windows[-reported].start_ns if windows else 0
    return Measurement(
        latency_ns=np.concatenate(latency) if latency else np.empty(0, np.int64),
        service_ns=np.concatenate(service) if service else np.empty(0, np.int64),
        seconds=span / 1e9,
        windows=windows,
        reported_windows=reported,
        stable=stable,
    )


def _overhead(callers: _Callers, a_marks: list[int], b_marks: list[int]) -> float | None:
    """Share of each caller's time between its first and last call not spent in a call."""
    shares: list[float] = []
    for rec, a, b in zip(callers.records, a_marks, b_marks, strict=True):
        if b - a >= 2:
            span = rec.end[b - 1] - rec.start[a]
            busy = sum(rec.end[a:b]) - sum(rec.start[a:b])
            shares.append(1 - busy / span if span > 0 else 0.0)
    return sum(shares) / len(shares) if shares else None


def _closed_caller(call: Call) -> Callable[[_Calls, _Flag], None]:
    def loop(record: _Calls, flag: _Flag) -> None:
        # Locals only in the loop: every attribute lookup here is harness overhead.
        clock = time.perf_counter_ns
        add_start, add_end = record.start.append, record.end.append
        while flag.running:
            t0 = clock()
            call()
            t1 = clock()
            add_start(t0)
            add_end(t1)

    return loop


def measure_closed_loop(
    call: Call, *, concurrency: int = 1, settings: HarnessSettings | None = None
) -> Measurement:
    """Time ``call`` from ``concurrency`` threads calling back to back."""
    settings = settings or HarnessSettings()
    callers = _Callers(concurrency, _closed_caller(call))
    for rec in callers.records:
        rec.origin = rec.start  # closed loop: latency is the time inside the call
    try:
        callers.start()
        windows, marks, stable = _measure_windows(callers, settings)
    finally:
        callers.stop()
    result = _collect(callers, windows, marks, stable, settings.stable_windows)
    result.overhead = _overhead(callers, marks[len(marks) - 1 - result.reported_windows], marks[-1])
    return result


def arrival_offsets(rate: float, count: int, *, poisson: bool, seed: int = 0) -> np.ndarray:
    """Intended start times (ns after the start) of ``count`` requests at ``rate`` per second."""
    gap_ns = 1e9 / rate
    if not poisson:
        return (np.arange(count, dtype=np.float64) * gap_ns).astype(np.int64)
    gaps = np.random.default_rng(seed).exponential(gap_ns, count)
    gaps[0] = 0.0
    return np.cumsum(gaps).astype(np.int64)


def _wait_until(due_ns: int, flag: _Flag) -> None:
    clock = time.perf_counter_ns
    while flag.running:
        remaining = due_ns - clock()
        if remaining <= 0:
            return
        if remaining > _SPIN_NS:  # in slices, so that a stop is seen soon at low rates
            time.sleep(min(remaining - _SPIN_NS, _SLEEP_SLICE_NS) / 1e9)
        else:
            os.sched_yield()  # releases the GIL (other callers run) but arms no timer


def _open_caller(call: Call, offsets: np.ndarray, t0: int) -> Callable[[_Calls, _Flag], None]:
    order = itertools.count()  # next() on a C iterator is atomic: callers share the queue
    total = len(offsets)

    def loop(record: _Calls, flag: _Flag) -> None:
        clock = time.perf_counter_ns
        while flag.running:
            i = next(order)
            if i >= total:
                return
            due = t0 + int(offsets[i])
            _wait_until(due, flag)
            if not flag.running:
                return
            start = clock()
            call()
            end = clock()
            record.origin.append(due)
            record.start.append(start)
            record.end.append(end)

    return loop


def measure_open_loop(
    call: Call,
    *,
    rate: float,
    poisson: bool = False,
    concurrency: int = 1,
    settings: HarnessSettings | None = None,
    seed: int = 0,
) -> Measurement:
    """Send requests due at ``rate`` per second; ``concurrency`` threads serve them in order."""
    settings = settings or HarnessSettings()
    horizon_s = settings.warmup_s + settings.max_duration_s + 2 * settings.window_s + 1
    offsets = arrival_offsets(rate, math.ceil(rate * horizon_s) + 1, poisson=poisson, seed=seed)
    t0 = time.perf_counter_ns() + 2_000_000  # a moment for the threads to start
    callers = _Callers(concurrency, _open_caller(call, offsets, t0))
    try:
        callers.start()
        windows, marks, stable = _measure_windows(callers, settings)
    finally:
        stopped = time.perf_counter_ns()
        callers.stop()
    result = _collect(callers, windows, marks, stable, settings.stable_windows)
    due = int(np.searchsorted(offsets, stopped - t0, side="right"))
    result.target_rate = rate
    result.backlog = max(0, due - sum(len(rec.end) for rec in callers.records))
    return result
