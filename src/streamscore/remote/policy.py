"""One retry policy and one reading of failures for every transport (REST and gRPC).

A transport makes one attempt at a request and says what went wrong in our terms:

* :class:`Outage` - the server is away, overloaded or failing (connection refused or reset,
  timeout, HTTP 429/5xx, gRPC UNAVAILABLE/DEADLINE_EXCEEDED/RESOURCE_EXHAUSTED/…): retried by
  :func:`with_retries` with exponential backoff and jitter behind the server's circuit
  breaker, then raised as :class:`RemoteUnavailable` (nothing is dead-lettered);
* :class:`DataRejected` - the server refuses the rows it was sent (HTTP 400/413/422, gRPC
  INVALID_ARGUMENT/FAILED_PRECONDITION/OUT_OF_RANGE): the model splits the batch;
* anything else is an answer about the configuration, turned into one error by
  :func:`refusal` (access refused, no such model, another status).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from enum import Enum
from typing import TypeVar

from streamscore.errors import ModelError, RemoteError, RemoteUnavailable
from streamscore.remote.breaker import BreakerState, CircuitBreaker
from streamscore.remote.settings import RemoteSettings

T = TypeVar("T")


class Outage(Exception):
    """One attempt failed because the server was away; ``delay`` is what it asked us to wait."""

    def __init__(self, failure: str, delay: float | None = None) -> None:
        super().__init__(failure)
        self.failure = failure
        self.delay = delay


class DataRejected(Exception):
    """The server refused the rows it was sent; ``message`` is its own."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refusal(str, Enum):
    """What a non-outage, non-data error answer means."""

    access = "access"  # HTTP 401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED
    missing = "missing"  # HTTP 404, gRPC NOT_FOUND
    unsupported = "unsupported"  # gRPC UNIMPLEMENTED: not an OIP server on that port
    other = "other"


def refusal(kind: Refusal, server: str, what: str, status: str, message: str) -> Exception:
    """The error for a server's answer ``status`` (``HTTP 404``, ``gRPC NOT_FOUND``) to ``what``."""
    if kind is Refusal.access:
        return RemoteError(
            f"model server {server} refused access to {what} ({status})",
            hint="check --header 'Authorization: …' or $STREAMSCORE_REMOTE_TOKEN",
        )
    if kind is Refusal.missing:
        return ModelError(f"model server {server} has no {what}: {message}")
    if kind is Refusal.unsupported:
        return RemoteError(
            f"model server {server} does not serve the Open Inference Protocol's {what} "
            f"({status}: {message})",
            hint="check the port; a REST endpoint takes an http(s):// URL",
        )
    return RemoteError(f"model server {server} answered {status} for {what}: {message}")


def untrusted(server: str) -> RemoteError:
    """A TLS certificate that does not verify: a configuration error, never retried."""
    return RemoteError(
        f"model server {server}: its TLS certificate is not trusted",
        hint="add the CA that signed it with --ca-file PEM",
    )


def with_retries(
    attempt: Callable[[], T],
    *,
    server: str,
    what: str,
    settings: RemoteSettings,
    breaker: CircuitBreaker,
    closing: threading.Event,
) -> T:
    """``attempt()`` until it returns, retrying each :class:`Outage` (see the module docstring);
    other exceptions pass through at once. ``closing`` set: give up without waiting."""
    s = settings
    tries = 0
    while True:
        delay: float | None = None
        if breaker.allow():
            try:
                result = attempt()
            except Outage as outage:
                failure, delay = outage.failure, outage.delay
            except Exception:
                breaker.record_success()  # the server answered, if not what we wanted
                raise
            else:
                breaker.record_success()
                return result
            breaker.record_failure()
            if breaker.state is BreakerState.open:  # the next try is its probe
                delay = max(delay or 0.0, breaker.remaining_s())
        else:
            failure = "circuit breaker open after repeated failures"
            delay = max(breaker.remaining_s(), 0.01)
        if tries >= s.retries:
            breaker.trip()
            raise RemoteUnavailable(
                f"model server {server} unavailable for {what} after "
                f"{tries + 1} attempt(s): {failure}",
                hint="nothing was dead-lettered; a rerun resumes once the server answers",
            )
        backoff = min(s.max_backoff_s, s.backoff_s * 2**tries)
        if closing.wait(delay if delay is not None else backoff * random.uniform(0.5, 1)):
            raise RemoteUnavailable(f"model server {server}: stopped while retrying")
        tries += 1
