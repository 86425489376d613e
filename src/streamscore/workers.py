"""``replay --workers N``: N local worker processes of one replay, as N machines would run it.

Each worker is a child process running the same ``streamscore replay`` command with its own
``--member`` name and ``--log-format json``; nothing else is shared, so this is exactly what
running the command on N machines does (:mod:`streamscore.replay_group`). The children run in
their own session, so a Ctrl-C at the terminal reaches this process only, which forwards
SIGINT and SIGTERM to every child. Each child's JSON lines come back through
``on_event(member, payload)`` (the member added when the line lacks it), its stderr lines
through ``on_error_line``; the outcome holds every child's exit status and its last summary.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

from streamscore.errors import EXIT_OK, worst_exit_code
from streamscore.shutdown import handling_signals

OnEvent = Callable[[str, Mapping[str, Any]], None]
OnLine = Callable[[str, str], None]


def default_prefix() -> str:
    """Worker names default to the host name (each machine's workers differ)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-_")
    return name[:80] or "worker"


def member_names(prefix: str, count: int) -> list[str]:
    """The names ``--workers N`` gives its processes: PREFIX-0 … PREFIX-(N-1)."""
    return [f"{prefix}-{index}" for index in range(count)]


@dataclass
class WorkerOutcome:
    """What one worker process ended with."""

    member: str
    exit_code: int = EXIT_OK  # negative: killed by that signal (as subprocess reports it)
    summary: dict[str, Any] = field(default_factory=dict)
    last_error: str = ""


@dataclass
class WorkersOutcome:
    """Every worker's outcome, in member order."""

    workers: list[WorkerOutcome]

    @property
    def exit_code(self) -> int:
        return worst_exit_code([w.exit_code for w in self.workers])

    def first_failure(self) -> WorkerOutcome | None:
        """The worker whose status is the run's (None when every worker succeeded)."""
        code = self.exit_code
        if code == EXIT_OK:
            return None
        return next(w for w in self.workers if worst_exit_code([w.exit_code]) == code)


def run_local_workers(
    arguments: Sequence[str],
    members: Sequence[str],
    *,
    on_event: OnEvent,
    on_error_line: OnLine,
) -> WorkersOutcome:
    """Run ``streamscore replay ARGUMENTS --member NAME --log-format json`` for every name in
    ``members`` at once and wait for all of them."""
    outcomes = [WorkerOutcome(member) for member in members]
    processes: list[subprocess.Popen[str]] = []
    lock = threading.Lock()  # one line at a time, whichever child wrote it
    threads: list[threading.Thread] = []
    parent_death = _parent_death_signal()
    with _forwarding_signals(processes):
        for outcome in outcomes:  # every child first: no relay thread runs while forking
            command = [
                sys.executable, "-m", "streamscore", "replay", *arguments,
                "--member", outcome.member, "--log-format", "json",
            ]  # fmt: skip
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # a terminal's Ctrl-C reaches the parent only
                preexec_fn=parent_death,
            )
            processes.append(process)
        for outcome, process in zip(outcomes, processes, strict=True):
            assert process.stdout is not None and process.stderr is not None
            threads += [
                _relay(process.stdout, functools.partial(_event, outcome, on_event, lock)),
                _relay(process.stderr, functools.partial(_error, outcome, on_error_line, lock)),
            ]
        for outcome, process in zip(outcomes, processes, strict=True):
            outcome.exit_code = _wait(process)
        for thread in threads:
            thread.join()
    return WorkersOutcome(outcomes)


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, what makes a child get SIGTERM when this process dies (even by SIGKILL), so
    no worker outlives the command that started it; resolved here, not in the forked child."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def _wait(process: subprocess.Popen[str]) -> int:
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(timeout=0.2)  # short waits: signal handlers run between


def _relay(stream: IO[str], handle: Callable[[str], None]) -> threading.Thread:
    def pump() -> None:
        relaying = True
        for line in stream:  # read to the end whatever happens: a child blocks on a full pipe
            if relaying and line.strip():
                try:
                    handle(line.rstrip("\n"))
                except (OSError, ValueError):  # our stdout/stderr closed (``| head``): drop
                    relaying = False

    thread = threading.Thread(target=pump, name="streamscore-worker-relay", daemon=True)
    thread.start()
    return thread


def _event(outcome: WorkerOutcome, on_event: OnEvent, lock: threading.Lock, line: str) -> None:
    try:
        payload = json.loads(line)
    except json.JSONDecodeError:
        payload = {"event": "info", "message": line}
    if not isinstance(payload, dict):
        payload = {"event": "info", "message": line}
    payload.setdefault("member", outcome.member)
    if payload.get("event") == "summary":
        outcome.summary = payload
    with lock:
        on_event(outcome.member, payload)


def _error(outcome: WorkerOutcome, on_line: OnLine, lock: threading.Lock, line: str) -> None:
    if line.startswith("error: "):
        outcome.last_error = line.removeprefix("error: ")
    with lock:
        on_line(outcome.member, line)


@contextlib.contextmanager
def _forwarding_signals(processes: list[subprocess.Popen[str]]) -> Iterator[None]:
    """SIGINT and SIGTERM go to every child still running; this process waits for them."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    with handling_signals(forward):
        yield
