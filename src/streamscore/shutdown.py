"""Stopping a long-running command: a first SIGINT/SIGTERM asks, a second one ends it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, *, grace_s: float) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``; a second one, or ``grace_s`` later, exits at once.

    The forced exit status is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as
    a shell reports a process killed by that signal. Leaving the block in time cancels the
    grace period and puts the previous handlers back.
    """
    timers: list[threading.Timer] = []

    def force(signum: int) -> None:
        os._exit(128 + signum)  # not sys.exit: it must work from a timer thread, mid-call

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            force(signum)
        stop.set()
        timer = threading.Timer(grace_s, force, args=(signum,))
        timer.daemon = True
        timer.start()
        timers.append(timer)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()
        for sig, old in previous.items():
            signal.signal(sig, old)
