"""The one retry policy of the Kafka clients: try again while the error is transient, waiting
longer each time, until a deadline that bounds the retries as a whole.

Used wherever the cluster may answer "not now": metadata while no broker answers yet, a new
topic's partitions before they have leaders, a producer's local queue while it is full, a
group coordinator moving or loading (a fresh cluster creates its offsets topic on first use)
and transactional steps (a coordinator moving, a broker busy). Each call is given the time
left before the deadline; :func:`within` holds a call to its timeout where librdkafka would
not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import confluent_kafka as ck

T = TypeVar("T")
_E = ck.KafkaError


class Retry:
    """Runs ``call(time_left)`` until it returns, its error is not ``transient``, or waiting
    once more would pass the deadline; then the last error is raised.

    Waits ``first_s`` after the first failure, doubling up to ``max_s``, with ``wait`` (a
    client's ``poll`` serves its callbacks meanwhile; default ``time.sleep``). Errors other
    than KafkaException are retried only where ``retry_on`` names them (a producer's
    BufferError). ``attempts`` and :attr:`elapsed_s` describe the last :meth:`run`, for the
    message of an error given up on.
    """

    def __init__(
        self,
        timeout_s: float,
        *,
        first_s: float = 0.05,
        max_s: float = 1.0,
        min_call_s: float = 0.1,
        wait: Callable[[float], Any] = time.sleep,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.timeout_s = timeout_s
        self.wait = wait
        self.retry_on: tuple[type[BaseException], ...] = (ck.KafkaException, *retry_on)
        self.first_s = first_s
        self.max_s = max_s
        self.min_call_s = min_call_s
        self.attempts = 0
        self.started = time.monotonic()

    def run(self, call: Callable[[float], T], transient: Callable[[Any], bool]) -> T:
        self.started = time.monotonic()
        deadline = self.started + self.timeout_s
        self.attempts = 0
        pause = self.first_s
        while True:
            self.attempts += 1
            try:
                return call(max(deadline - time.monotonic(), self.min_call_s))
            except self.retry_on as exc:
                if not transient(exc) or time.monotonic() + pause >= deadline:
                    raise
            self.wait(pause)
            pause = min(pause * 2, self.max_s)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the last run started."""
        return time.monotonic() - self.started


def within(timeout_s: float, call: Callable[[float], Any]) -> None:
    """``call(timeout_s)``, returning by ``timeout_s`` (plus a second) even if librdkafka does not.

    librdkafka bounds some transactional requests by ``socket.timeout.ms`` (60 s) rather than
    the timeout it is given (measured: send_offsets_to_transaction given 30 s took 61 s
    against a dead broker). A call still running then is left to finish on its own thread,
    and reported as timed out; the producer is not used again after that.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call(timeout_s)
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, name="streamscore-kafka-call", daemon=True)
    worker.start()
    worker.join(timeout_s + 1.0)
    if not outcome:
        raise ck.KafkaException(
            ck.KafkaError(_E._TIMED_OUT, f"no answer within {timeout_s:.1f}s", retriable=True)
        )
    if outcome[0] is not None:
        raise outcome[0]
