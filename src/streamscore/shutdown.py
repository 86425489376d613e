"""Stopping a long-running command on SIGINT (Ctrl-C) or SIGTERM (cron, systemd, docker stop).

Two ways, one for each kind of command, both treating the two signals alike:

* :func:`stop_on_signals` (``batch``, ``tail``): a first signal sets an event the command
  checks at safe points (between batches), a second one, or a grace period, exits at once;
* :func:`interrupt_on_signals` (``replay``, whose transactions make any stopping point safe):
  SIGTERM interrupts the main thread exactly as Ctrl-C does, as :class:`SignalInterrupt`.

Either way the exit status is 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a
shell reports a process killed by that signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal(threading.Event):
    """An event set by a stop signal, remembering which one (``signum``)."""

    signum: int | None = None


class SignalInterrupt(KeyboardInterrupt):
    """A KeyboardInterrupt raised for any stop signal; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_of(exc: KeyboardInterrupt) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT for Python's own)."""
    return exc.signum if isinstance(exc, SignalInterrupt) else signal.SIGINT


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, *, grace_s: float) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``; a second one, or ``grace_s`` later, exits at once.

    A :class:`StopSignal` also records the signal. Leaving the block in time cancels the
    grace period and puts the previous handlers back.
    """
    timers: list[threading.Timer] = []

    def force(signum: int) -> None:
        os._exit(128 + signum)  # not sys.exit: it must work from a timer thread, mid-call

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            force(signum)
        if isinstance(stop, StopSignal):
            stop.signum = signum
        stop.set()
        timer = threading.Timer(grace_s, force, args=(signum,))
        timer.daemon = True
        timer.start()
        timers.append(timer)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; signals go to it anyway
        return
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def handling_signals(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` takes SIGINT and SIGTERM inside the block; the previous handlers come back
    after it. Off the main thread (which alone may set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`SignalInterrupt` in the main thread, as Ctrl-C does."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SignalInterrupt(signum)

    with handling_signals(handler):
        yield
