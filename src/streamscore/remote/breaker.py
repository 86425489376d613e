"""A circuit breaker per model server, shared by every model and worker thread of the process.

Closed: requests flow. After ``threshold`` outage failures in a row it opens: requests are
not sent (each caller waits out the cooldown, as one of its retries) until ``cooldown_s`` has
passed;
then one probe request is let through (half-open). Its success closes the breaker; its
failure opens it again with a doubled cooldown (up to ``max_cooldown_s``). So a dead server
gets one request per cooldown, not one per worker per retry. A caller that gives up after
all its retries trips it open at once.
"""

from __future__ import annotations

import threading
import time
from enum import Enum


class BreakerState(str, Enum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitBreaker:
    """See the module docstring; thread-safe."""

    def __init__(
        self, threshold: int = 3, cooldown_s: float = 1.0, max_cooldown_s: float = 30.0
    ) -> None:
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._cooldown_s = cooldown_s
        self._state = BreakerState.closed
        self._failures = 0
        self._opened_at = 0.0
        self._lock = threading.Lock()
        self.opened_count = 0  # times it opened, for metrics

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """May a request be sent now? In half-open, only the one probe may."""
        with self._lock:
            if self._state is BreakerState.closed:
                return True
            if self._state is BreakerState.open and (
                time.monotonic() - self._opened_at >= self._cooldown_s
            ):
                self._state = BreakerState.half_open
                return True
            return False

    def remaining_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        with self._lock:
            if self._state is not BreakerState.open:
                return 0.0
            return max(0.0, self._cooldown_s - (time.monotonic() - self._opened_at))

    def record_success(self) -> None:
        with self._lock:
            self._state = BreakerState.closed
            self._failures = 0
            self._cooldown_s = self.base_cooldown_s

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.half_open:
                self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s)
                self._open()
            elif self._state is BreakerState.closed and self._failures >= self.threshold:
                self._open()

    def trip(self) -> None:
        """Open now: a caller gave up on the server after all its retries."""
        with self._lock:
            if self._state is not BreakerState.open:
                self._open()

    def _open(self) -> None:
        self._state = BreakerState.open
        self._opened_at = time.monotonic()
        self.opened_count += 1


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(server: str) -> CircuitBreaker:
    """The process-wide breaker of ``server`` (its base URL)."""
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(server)
        if breaker is None:
            breaker = _BREAKERS[server] = CircuitBreaker()
        return breaker


def breaker_states() -> dict[str, BreakerState]:
    """Every server's breaker state, for metrics and status panels."""
    with _BREAKERS_LOCK:
        return {server: breaker.state for server, breaker in _BREAKERS.items()}
