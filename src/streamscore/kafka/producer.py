"""The producer: idempotent, transactional when given a transactional id."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import confluent_kafka as ck

from streamscore.errors import (
    KafkaError,
    StreamscoreError,
    TransactionAborted,
)
from streamscore.kafka.base import (
    Headers,
    KafkaClient,
    OutgoingRecord,
    topic_positions,
)
from streamscore.kafka.retry import Retry, within
from streamscore.kafka.settings import KafkaSettings
from streamscore.kafka.translation import (
    AUTH_CODES,
    FENCED_CODES,
    UNREACHABLE_CODES,
    kafka_error_of,
    translate,
)

_E = ck.KafkaError


def _too_large(exc: ck.KafkaException) -> bool:
    kerr = kafka_error_of(exc)
    return kerr is not None and kerr.code() == _E.MSG_SIZE_TOO_LARGE


class Producer(KafkaClient):
    """An idempotent producer; transactional when given a ``transactional_id``.

    ``produce`` only queues; delivery failures surface in :meth:`flush` (at-least-once) or
    :meth:`commit_transaction` (exactly-once).
    """

    action = "producer"

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """``config`` is forced; ``defaults`` yield to the user's -X/--config properties."""
        required: dict[str, Any] = {
            # Only failures call back into Python: one call per record would cost throughput.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        if transactional_id is not None:
            required["transactional.id"] = transactional_id
        tunable = {
            "enable.idempotence": True,
            "linger.ms": 20,
            # Scores and repeated provenance headers compress several-fold: less for the
            # broker (often on the same cores) to write and replicate. -X overrides it.
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            **(defaults or {}),
        }
        super().__init__(settings, {**required, **(config or {})}, tunable)
        self.transactional_id = transactional_id
        self.failed: deque[ck.KafkaError] = deque(maxlen=32)
        self.failed_count = 0
        self.in_transaction = False
        self.transaction_started_at = 0.0  # monotonic seconds, for telling timeouts apart
        # Set once librdkafka reports a fatal error (fenced, say): the client is unusable and
        # flushing or aborting it only raises again, from inside its callbacks.
        self.fatal = False
        # Set once a step gave up on an unreachable cluster: closing must not wait on it again.
        self.gave_up = False

    def _create(self, config: dict[str, Any]) -> Any:
        return ck.Producer(config)

    def _on_error(self, error: ck.KafkaError) -> None:
        if error.fatal():
            self.fatal = True
        super()._on_error(error)

    def _on_delivery(self, error: ck.KafkaError | None, _message: Any) -> None:
        if error is not None:
            if error.fatal():
                self.fatal = True
            self.failed.append(error)
            self.failed_count += 1

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        *,
        partition: int = -1,
        timestamp: int = 0,
        headers: Headers | None = None,
    ) -> bool:
        """Queue one record; False when it is larger than the producer may send."""
        return not self.produce_many(topic, [(value, key, partition, timestamp, headers)])

    def produce_many(self, topic: str, records: Sequence[OutgoingRecord]) -> list[int]:
        """Queue many records (value, key, partition, timestamp, headers) in one call.

        Returns the positions of those larger than the producer may send (not queued).
        One call per batch keeps the per-record cost down to librdkafka's.
        """
        handle = self.handle
        produce = handle.produce
        too_large: list[int] = []
        for position, (value, key, partition, timestamp, headers) in enumerate(records):
            try:
                produce(topic, value, key, partition, timestamp=timestamp, headers=headers)
            except BufferError:  # the local queue is full: let librdkafka send some
                if not self._produce_when_queue_has_room(
                    topic, (value, key, partition, timestamp, headers)
                ):
                    too_large.append(position)
            except ck.KafkaException as exc:
                if not _too_large(exc):
                    raise self._txn_error(exc, f"producing to topic '{topic}'") from None
                too_large.append(position)
        return too_large

    def _produce_when_queue_has_room(self, topic: str, record: OutgoingRecord) -> bool:
        """Queue ``record`` once librdkafka has sent enough of its full queue (False: it is
        too large). The queue drains while the cluster answers; one that stays full for the
        transactional deadline (3 connect timeouts) means it does not: KafkaError."""
        value, key, partition, timestamp, headers = record

        def attempt(_left: float) -> bool:
            try:
                self.handle.produce(
                    topic, value, key, partition, timestamp=timestamp, headers=headers
                )
            except ck.KafkaException as exc:
                if not _too_large(exc):
                    raise self._txn_error(exc, f"producing to topic '{topic}'") from None
                return False
            return True

        retry = Retry(
            self._txn_timeout(),
            first_s=0.05,
            max_s=0.05,
            wait=lambda pause: self.handle.poll(pause),
            retry_on=(BufferError,),
        )
        try:
            return retry.run(attempt, lambda exc: isinstance(exc, BufferError))
        except BufferError:
            raise KafkaError(
                f"producing to topic '{topic}': the producer's local queue stayed full for "
                f"{retry.elapsed_s:.1f}s ({self.last_error or 'no broker took records'})",
                hint="check that the broker is up (--connect-timeout waits longer)",
                code="_QUEUE_FULL",
            ) from None

    def poll(self) -> None:
        """Serve delivery reports and logs without waiting."""
        self.handle.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every queued record is delivered; raise if any could not be."""
        left = self.handle.flush(timeout_s)
        self._raise_delivery_failures("delivering records")
        if left:
            raise KafkaError(
                f"delivering records: {left} record(s) still unsent after {timeout_s:g}s",
                hint="check that the broker is up",
                code="_MSG_TIMED_OUT",
            )

    def _raise_delivery_failures(self, action: str) -> None:
        if self.failed:
            first = self.failed[0]
            count = self.failed_count
            self.failed.clear()
            self.failed_count = 0
            error = translate(first, self.settings, action)
            error.message = f"{error.message} ({count} record(s) failed)"
            raise error

    # Transactions: librdkafka sorts failures into retriable, abortable and fatal ones.

    def init_transactions(self) -> None:
        """Register the transactional id; this fences (and aborts) an older instance's work."""
        timeout = self._txn_timeout()
        started = time.monotonic()
        try:
            within(timeout, self._connect_then_init)
        except ck.KafkaException as exc:
            kerr = kafka_error_of(exc)
            if kerr is not None and kerr.code() in UNREACHABLE_CODES:
                action = "starting a transactional producer"
                raise self.unreachable(action, round(time.monotonic() - started, 1)) from None
            raise translate(exc, self.settings, "starting a transactional producer") from None

    def _connect_then_init(self, timeout_s: float) -> None:
        """``init_transactions`` once a broker connection is up. librdkafka looks the
        transaction coordinator up at once and, if no connection is up yet, asks again only
        500 ms later: measured on the local broker, 10 of 16 inits took 0.51 s instead of
        0.06 (16 of 16 ~0.06 s with this). A metadata request waits for the first
        connection; its failure is left to ``init_transactions`` to report."""
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(ck.KafkaException):
            self.handle.list_topics(timeout=timeout_s)
        self.handle.init_transactions(max(deadline - time.monotonic(), 0.001))

    def begin_transaction(self) -> None:
        try:
            self.handle.begin_transaction()
        except ck.KafkaException as exc:
            raise self._txn_error(exc, "beginning a transaction") from None
        self.in_transaction = True
        self.transaction_started_at = time.monotonic()

    def send_offsets_to_transaction(
        self, topic: str, offsets: Mapping[int, tuple[int, str]], group_metadata: Any
    ) -> None:
        """Make the consumer group's progress part of the open transaction."""
        self._transactional(
            "committing input offsets in the transaction",
            lambda timeout: self.handle.send_offsets_to_transaction(
                topic_positions(topic, offsets), group_metadata, timeout
            ),
        )

    def commit_transaction(self) -> None:
        """Commit: outputs and offsets become visible together, or neither does."""
        self._transactional(
            "committing a transaction", lambda timeout: self.handle.commit_transaction(timeout)
        )
        self.in_transaction = False
        self.failed.clear()
        self.failed_count = 0

    def abort_transaction(self, *, checked: bool = False) -> None:
        """Roll back the open transaction, if any. Best effort (a fenced one is gone anyway)
        unless ``checked``: then a failure raises, as for a commit."""
        if checked:
            self._transactional(
                "aborting a transaction", lambda timeout: self.handle.abort_transaction(timeout)
            )
            self.in_transaction = False
            return
        if not self.in_transaction or self._handle is None or self.fatal:
            self.in_transaction = False
            return
        self.in_transaction = False
        # Best effort, and briefly: the broker aborts it anyway on timeout or when the next
        # instance starts, and a run giving up must not wait a full deadline more for it.
        with contextlib.suppress(ck.KafkaException):
            within(self.settings.connect_timeout_s, self._handle.abort_transaction)

    def _txn_timeout(self) -> float:
        """How long one transactional step may take in all, retries included: 3 connect
        timeouts, so that a replay gives up in a time the user chose (README)."""
        return self.settings.connect_timeout_s * 3

    def _transaction_timeout_s(self) -> float:
        """The broker rolls back a transaction left open longer than this (librdkafka's
        ``transaction.timeout.ms``, 60 s unless set with -X)."""
        return float(self._config.get("transaction.timeout.ms", 60_000)) / 1000

    def _txn_error(self, exc: ck.KafkaException, action: str) -> StreamscoreError:
        """Our error for ``exc``; a "fenced" transaction older than the transaction timeout
        was rolled back by the broker, which reports that as fencing: say so."""
        kerr = kafka_error_of(exc)
        open_s = time.monotonic() - self.transaction_started_at
        timed_out = (
            kerr is not None
            and kerr.code() in FENCED_CODES
            and self.transaction_started_at > 0
            and open_s >= self._transaction_timeout_s()
        )
        if not timed_out or kerr is None:
            return translate(exc, self.settings, action)
        return TransactionAborted(
            f"{action}: the broker rolled back the transaction: it was open {open_s:.0f}s, longer "
            f"than transaction.timeout.ms ({self._transaction_timeout_s():g}s) "
            f"[{kerr.name()}]",
            hint="rerun to resume; a broker that was away that long timed it out",
            code=kerr.name(),
        )

    def _transactional(self, action: str, call: Callable[[float], Any]) -> None:
        """``call(timeout)``, retried on retriable errors until the transaction timeout.

        The deadline bounds the retries as a whole (each call gets the time left, and is held
        to it by :func:`~streamscore.kafka.retry.within`), so a broker that died is reported
        within a few connect timeouts rather than minutes. Between tries: 0.1 s .. 1.6 s (a
        coordinator moving, a broker busy).
        """

        def transient(exc: ck.KafkaException) -> bool:
            kerr = kafka_error_of(exc)
            if kerr is None or kerr.fatal() or kerr.code() in AUTH_CODES:
                return False
            return not kerr.txn_requires_abort() and bool(kerr.retriable())

        retry = Retry(self._txn_timeout(), first_s=0.1, max_s=1.6)
        try:
            retry.run(lambda left: within(left, call), transient)
        except ck.KafkaException as exc:
            kerr = kafka_error_of(exc)
            if kerr is None or kerr.fatal() or kerr.code() in AUTH_CODES:
                self.in_transaction = False
                self.fatal = self.fatal or (kerr is not None and kerr.fatal())
                raise self._txn_error(exc, action) from None
            if kerr.txn_requires_abort():
                self.abort_transaction()
                raise TransactionAborted(
                    f"{action}: the transaction was rolled back: "
                    f"{self.settings.redact(kerr.str())} [{kerr.name()}]",
                    code=kerr.name(),
                ) from None
            error = translate(exc, self.settings, action)
            if kerr.retriable():
                # The broker rolls the transaction back itself (timeout, or the next
                # instance's start); waiting to abort it would only add a deadline.
                self.in_transaction = False
                self.gave_up = True
                error.message += (
                    f" (still failing after {retry.attempts} attempt(s) in {retry.elapsed_s:.1f}s)"
                )
            raise error from None

    def close(self) -> None:
        """Abort an open transaction, else deliver what is queued (bounded)."""
        if self._handle is None:
            return
        try:
            if self.fatal or self.gave_up:
                pass  # nothing can be delivered or aborted any more; the broker aborts it
            elif self.in_transaction:
                self.abort_transaction()
            else:
                # Best effort: a fenced or failed producer reports nothing more of use here.
                with contextlib.suppress(ck.KafkaException):
                    self._handle.flush(min(self.settings.connect_timeout_s, 10.0))
        finally:
            self._handle = None
