"""Kafka clients: the only module that imports confluent_kafka.

* :class:`KafkaSettings` (defined in :mod:`streamscore.kafka.settings`, re-exported here):
  bootstrap servers plus raw librdkafka properties from ``-X key=value`` and ``--config
  FILE``. Secrets never appear in its repr or in the errors raised here.
* :class:`Admin`, :class:`Consumer` and :class:`Producer`: thin wrappers exposing only what
  streamscore needs. The librdkafka client behind each is created on first use; use them as
  context managers so they are flushed and closed on exit.
* Every confluent_kafka error is translated at this boundary into the most specific of ours,
  keeping librdkafka's error name: KafkaAuthError (credentials, ACLs), KafkaError (broker
  unreachable, topic missing, transaction fenced), TransactionAborted (a transaction had to be
  rolled back; the run can resume), UsageError (a client property librdkafka rejects).

A broker that cannot be reached is not an error to librdkafka (it retries forever), so
:meth:`Admin.check_reachable` asks for cluster metadata with a deadline before any work.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from streamscore.errors import (
    KafkaAuthError,
    KafkaError,
    ProducerFenced,
    StreamscoreError,
    TransactionAborted,
    UsageError,
)
from streamscore.kafka.settings import BOOTSTRAP_ENV as BOOTSTRAP_ENV
from streamscore.kafka.settings import KafkaSettings as KafkaSettings
from streamscore.kafka.settings import parse_properties as parse_properties

TIMESTAMP_NOT_AVAILABLE = ck.TIMESTAMP_NOT_AVAILABLE

# librdkafka logs through Python logging (not straight to stderr); the NullHandler keeps
# Python's last-resort handler from printing them, while an application can still opt in.
LOG = logging.getLogger("streamscore.kafka")
LOG.addHandler(logging.NullHandler())

_E = ck.KafkaError
_AUTH_CODES = frozenset(
    {
        _E._AUTHENTICATION,
        _E.SASL_AUTHENTICATION_FAILED,
        _E.UNSUPPORTED_SASL_MECHANISM,
        _E.ILLEGAL_SASL_STATE,
        _E.TOPIC_AUTHORIZATION_FAILED,
        _E.GROUP_AUTHORIZATION_FAILED,
        _E.CLUSTER_AUTHORIZATION_FAILED,
        _E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        _E.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
    }
)
_MISSING_TOPIC_CODES = frozenset(
    {_E.UNKNOWN_TOPIC_OR_PART, _E._UNKNOWN_TOPIC, _E._UNKNOWN_PARTITION}
)
_UNREACHABLE_CODES = frozenset(
    {_E._TRANSPORT, _E._ALL_BROKERS_DOWN, _E._TIMED_OUT, _E._RESOLVE, _E._SSL, _E._MSG_TIMED_OUT}
)
_CONFIG_CODES = frozenset({_E._INVALID_ARG, _E._INVALID_TYPE, _E.INVALID_CONFIG})
_FENCED_CODES = frozenset({_E._FENCED, _E.PRODUCER_FENCED, _E.INVALID_PRODUCER_EPOCH})
_COORDINATOR_CODES = frozenset(
    {_E.NOT_COORDINATOR, _E.COORDINATOR_LOAD_IN_PROGRESS, _E.COORDINATOR_NOT_AVAILABLE}
)


# --- errors ------------------------------------------------------------------------------------


def _kafka_error_of(exc: BaseException) -> ck.KafkaError | None:
    if isinstance(exc, ck.KafkaException) and exc.args and isinstance(exc.args[0], ck.KafkaError):
        return exc.args[0]
    return None


def translate(
    error: ck.KafkaError | BaseException, settings: KafkaSettings, action: str
) -> StreamscoreError:
    """The streamscore error for a confluent_kafka error met while doing ``action``."""
    kerr = error if isinstance(error, ck.KafkaError) else _kafka_error_of(error)
    if kerr is None:
        return KafkaError(f"{action}: {settings.redact(str(error))}")
    code, name = kerr.code(), kerr.name()
    text = settings.redact(kerr.str())
    where = settings.bootstrap_servers
    if code in _AUTH_CODES:
        return KafkaAuthError(
            f"{action}: Kafka at {where} refused access: {text} [{name}]",
            hint="check the credentials and ACLs given with --config or -X",
            code=name,
        )
    if code in _MISSING_TOPIC_CODES:
        return KafkaError(f"{action}: {text} [{name}]", code=name)
    if code in _UNREACHABLE_CODES:
        return KafkaError(
            f"{action}: cannot reach Kafka at {where}: {text} [{name}]",
            hint="check --bootstrap-servers and that the broker is up",
            code=name,
        )
    if code in _CONFIG_CODES:
        return UsageError(f"{action}: librdkafka rejected a client setting: {text} [{name}]")
    if code in _FENCED_CODES:
        return ProducerFenced(
            f"{action}: another process with the same transactional id took over: {text} [{name}]",
            hint="run one replay per input and output topic at a time",
            code=name,
        )
    return KafkaError(f"{action}: {text} [{name}]", code=name)


@contextmanager
def _translated(settings: KafkaSettings, action: str) -> Iterator[None]:
    try:
        yield
    except ck.KafkaException as exc:
        raise translate(exc, settings, action) from None


# --- clients -----------------------------------------------------------------------------------


class KafkaRecord(Protocol):
    """One consumed record (confluent_kafka's Message satisfies this)."""

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...

    def timestamp(self) -> tuple[int, int]: ...


Headers = list[tuple[str, bytes]]
# value, key, partition (-1: the partitioner decides), timestamp in ms (0: now), headers
OutgoingRecord = tuple[bytes | None, bytes | None, int, int, Headers | None]


@dataclass(frozen=True)
class CommittedOffset:
    """A consumer group's committed position in one partition, with its metadata string."""

    offset: int
    metadata: str


_C = TypeVar("_C", bound="_Client")


class _Client:
    """Shared by the wrappers: lazy creation, the error callback, context management."""

    action = "kafka"

    def __init__(
        self,
        settings: KafkaSettings,
        config: Mapping[str, Any],
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """``defaults`` yield to the user's -X/--config properties; ``config`` does not."""
        self.settings = settings
        self._config: dict[str, Any] = {
            **(defaults or {}),
            **settings.as_librdkafka_dict(),
            **config,
            "error_cb": self._on_error,
            "logger": LOG,
        }
        self._handle: Any = None
        # Errors librdkafka reports out of band (failed connections, refused logins).
        self.errors: deque[ck.KafkaError] = deque(maxlen=32)
        self.last_error = ""  # the latest of them, redacted, for messages about stalls

    def _on_error(self, error: ck.KafkaError) -> None:
        self.errors.append(error)
        self.last_error = f"{self.settings.redact(error.str())} [{error.name()}]"

    def _create(self, config: dict[str, Any]) -> Any:
        raise NotImplementedError

    @property
    def handle(self) -> Any:
        if self._handle is None:
            with _translated(self.settings, f"creating the Kafka {self.action}"):
                self._handle = self._create(dict(self._config))
        return self._handle

    def raise_reported_errors(self, action: str) -> None:
        """Raise a refused login or a fatal error that librdkafka reported out of band."""
        while self.errors:
            error = self.errors.popleft()
            if error.code() in _AUTH_CODES or error.fatal():
                raise translate(error, self.settings, action)

    def unreachable(self, action: str, waited_s: float) -> StreamscoreError:
        """The error for a cluster that did not answer: refused access if it said so."""
        for error in list(self.errors):
            if error.code() in _AUTH_CODES:
                return translate(error, self.settings, action)
        return KafkaError(
            f"{action}: cannot reach Kafka at {self.settings.bootstrap_servers} within "
            f"{waited_s:g}s",
            hint="check --bootstrap-servers and that the broker is up (--connect-timeout "
            "waits longer)",
            code="_TRANSPORT",
        )

    def close(self) -> None:
        self._handle = None

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # Unwinding already: whatever closing meets must not replace the error in flight.
        with contextlib.suppress(Exception):
            self.close()


class Admin(_Client):
    """Topic metadata, topic creation and offset queries."""

    action = "admin client"

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings, {})

    def _create(self, config: dict[str, Any]) -> Any:
        return AdminClient(config)

    def _metadata(self, topic: str | None, action: str) -> Any:
        started = time.monotonic()
        deadline = started + self.settings.connect_timeout_s
        while True:
            # Short waits, serving the error callback in between: a refused login is
            # reported at once rather than as an unreachable cluster at the deadline.
            left = max(deadline - time.monotonic(), 0.05)
            try:
                metadata = self.handle.list_topics(topic, timeout=min(left, 0.5))
            except ck.KafkaException as exc:
                kerr = _kafka_error_of(exc)
                if kerr is None or kerr.code() not in _UNREACHABLE_CODES:
                    raise translate(exc, self.settings, action) from None
            else:
                self.raise_reported_errors(action)
                return metadata
            self.handle.poll(0)
            if any(error.code() in _AUTH_CODES for error in self.errors):
                raise self.unreachable(action, 0)  # refused access, named as such
            if time.monotonic() >= deadline:
                raise self.unreachable(action, round(time.monotonic() - started, 1)) from None

    def check_reachable(self) -> None:
        """Fail within the connect timeout when no broker answers (or access is refused)."""
        self._metadata(None, "connecting")

    def partition_count(self, topic: str) -> int | None:
        """How many partitions ``topic`` has; None when it does not exist."""
        described = self._metadata(topic, f"describing topic '{topic}'").topics.get(topic)
        if described is None or described.error is not None:
            if described is not None and described.error.code() in _AUTH_CODES:
                raise translate(described.error, self.settings, f"describing topic '{topic}'")
            return None
        return len(described.partitions)

    def input_partition_count(self, topic: str) -> int:
        """How many partitions the input ``topic`` has; KafkaError when it does not exist."""
        count = self.partition_count(topic)
        if count is None:
            raise KafkaError(
                f"input topic '{topic}' does not exist on {self.settings.bootstrap_servers}",
                hint="check --input-topic",
                code="UNKNOWN_TOPIC_OR_PART",
            )
        return count

    def topic_config(self, topic: str, names: Sequence[str]) -> dict[str, str]:
        """The values of the named settings of ``topic`` (defaults included)."""
        resource = ConfigResource(ResourceType.TOPIC, topic)
        with _translated(self.settings, f"reading the settings of topic '{topic}'"):
            future = self.handle.describe_configs(
                [resource], request_timeout=self.settings.connect_timeout_s
            )[resource]
            entries = future.result(timeout=self.settings.connect_timeout_s * 3)
        return {name: entries[name].value for name in names if name in entries}

    def create_topic(
        self, topic: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``topic`` with the broker's default replication; an existing one is fine."""
        action = f"creating topic '{topic}'"
        new_topic = NewTopic(topic, partitions, -1, config=dict(config or {}))
        future = self.handle.create_topics(
            [new_topic], request_timeout=self.settings.connect_timeout_s
        )[topic]
        try:
            future.result(timeout=self.settings.connect_timeout_s * 3)
        except ck.KafkaException as exc:
            kerr = _kafka_error_of(exc)
            if kerr is None or kerr.code() != _E.TOPIC_ALREADY_EXISTS:
                raise translate(exc, self.settings, action) from None
        # Metadata reaches every client a moment after creation; wait until leaders exist.
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while time.monotonic() < deadline:
            described = self._metadata(topic, action).topics.get(topic)
            if described is not None and described.error is None:
                leaders = [p.leader for p in described.partitions.values()]
                if len(leaders) >= partitions and all(leader >= 0 for leader in leaders):
                    return
            time.sleep(0.05)
        raise KafkaError(f"{action}: its partitions have no leader yet", hint="try again")

    def list_offsets(
        self, topic: str, partitions: Sequence[int], spec: str | int
    ) -> dict[int, int]:
        """Offsets per partition: ``"earliest"``, ``"latest"`` (the last stable offset, as
        read_committed consumers see it) or the first offset at or after a timestamp in ms
        (the latest offset where no record is that recent)."""
        if spec == "earliest":
            offset_spec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        elif spec == "latest":
            offset_spec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        else:
            offset_spec = OffsetSpec.for_timestamp(int(spec))
        requests = {ck.TopicPartition(topic, p): offset_spec for p in partitions}
        action = f"reading offsets of topic '{topic}'"
        with _translated(self.settings, action):
            futures = self.handle.list_offsets(
                requests,
                isolation_level=ck.IsolationLevel.READ_COMMITTED,
                request_timeout=self.settings.connect_timeout_s,
            )
            found = {
                tp.partition: future.result(timeout=self.settings.connect_timeout_s * 3).offset
                for tp, future in futures.items()
            }
        if isinstance(spec, int) and any(offset < 0 for offset in found.values()):
            latest = self.list_offsets(topic, partitions, "latest")
            found = {p: latest[p] if offset < 0 else offset for p, offset in found.items()}
        return found


class Consumer(_Client):
    """A consumer in group ``group_id`` reading assigned partitions, committing only on demand."""

    action = "consumer"

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        *,
        read_committed: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            settings,
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                "enable.partition.eof": True,
                **(config or {}),
            },
            defaults={"auto.offset.reset": "earliest"},
        )
        self.group_id = group_id

    def _create(self, config: dict[str, Any]) -> Any:
        return ck.Consumer(config)

    def assign(self, topic: str, offsets: Mapping[int, int]) -> None:
        """Read ``topic``'s partitions from the given offsets (nothing else)."""
        with _translated(self.settings, f"assigning topic '{topic}'"):
            self.handle.assign([ck.TopicPartition(topic, p, o) for p, o in offsets.items()])

    def pause(self, topic: str, partitions: Sequence[int]) -> None:
        """Stop fetching these partitions (records already fetched may still arrive)."""
        with _translated(self.settings, f"pausing topic '{topic}'"):
            self.handle.pause([ck.TopicPartition(topic, p) for p in partitions])

    def consume(
        self, max_records: int, timeout_s: float
    ) -> tuple[list[KafkaRecord], dict[int, int]]:
        """Up to ``max_records`` records, and the partitions found at their end (-> offset)."""
        action = "consuming"
        with _translated(self.settings, action):
            messages = self.handle.consume(max_records, timeout_s)
        records: list[KafkaRecord] = []
        at_end: dict[int, int] = {}
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() == _E._PARTITION_EOF:
                at_end[message.partition()] = message.offset()
            elif (
                error.fatal() or error.code() in _AUTH_CODES or error.code() in _MISSING_TOPIC_CODES
            ):
                raise translate(error, self.settings, f"consuming topic '{message.topic()}'")
        self.raise_reported_errors(action)
        return records, at_end

    def positions(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """The next offset to be read per partition (absent where nothing was read yet)."""
        with _translated(self.settings, f"reading positions in topic '{topic}'"):
            found = self.handle.position([ck.TopicPartition(topic, p) for p in partitions])
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    def committed(self, topic: str, partitions: Sequence[int]) -> dict[int, CommittedOffset]:
        """The group's committed offsets and metadata (absent where none was committed)."""
        action = f"reading committed offsets of group '{self.group_id}'"
        wanted = [ck.TopicPartition(topic, p) for p in partitions]
        timeout = self.settings.connect_timeout_s
        found = self._coordinated(action, lambda: self.handle.committed(wanted, timeout=timeout))
        return {
            tp.partition: CommittedOffset(tp.offset, tp.metadata or "")
            for tp in found
            if tp.offset >= 0
        }

    def commit(
        self, topic: str, offsets: Mapping[int, tuple[int, str]], *, asynchronous: bool = False
    ) -> None:
        """Commit ``{partition: (next offset, metadata)}``, synchronously unless asked not to
        (an asynchronous commit that fails is not reported; a later commit covers it)."""
        action = f"committing offsets of group '{self.group_id}'"
        positions = _positions(topic, offsets)
        if asynchronous:
            with _translated(self.settings, action):
                self.handle.commit(offsets=positions, asynchronous=True)
            return
        self._coordinated(action, lambda: self.handle.commit(offsets=positions, asynchronous=False))

    def _coordinated(self, action: str, call: Callable[[], Any]) -> Any:
        """``call()``, retried while the group coordinator moves or loads (a fresh cluster
        creates its offsets topic on first use), up to the connect timeout."""
        started = time.monotonic()
        delay = 0.05
        while True:
            try:
                return call()
            except ck.KafkaException as exc:
                kerr = _kafka_error_of(exc)
                waited = time.monotonic() - started
                if kerr is not None and kerr.code() in _UNREACHABLE_CODES:
                    raise self.unreachable(action, round(waited, 1)) from None
                transient = kerr is not None and (
                    kerr.code() in _COORDINATOR_CODES or kerr.retriable()
                )
                if not transient or waited > self.settings.connect_timeout_s:
                    raise translate(exc, self.settings, action) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def subscribe(
        self,
        topic: str,
        *,
        on_assign: Callable[[list[int]], None] | None = None,
        on_revoke: Callable[[list[int]], None] | None = None,
        on_lost: Callable[[list[int]], None] | None = None,
    ) -> None:
        """Join the consumer group on ``topic`` and let the group assign its partitions.

        The callbacks get partition numbers: assigned, being revoked (work on them may still be
        committed inside the callback) or lost (another member may own them already: do not
        commit them). They run inside :meth:`consume`. Pass
        ``partition.assignment.strategy=cooperative-sticky`` in ``config`` so that a rebalance
        moves only the partitions it must.
        """

        def adapt(callback: Callable[[list[int]], None]) -> Callable[[Any, list[Any]], None]:
            def call(_consumer: Any, partitions: list[ck.TopicPartition]) -> None:
                callback([tp.partition for tp in partitions])

            return call

        given = {"on_assign": on_assign, "on_revoke": on_revoke, "on_lost": on_lost}
        callbacks = {name: adapt(cb) for name, cb in given.items() if cb is not None}
        with _translated(self.settings, f"subscribing to topic '{topic}'"):
            self.handle.subscribe([topic], **callbacks)

    def seek(self, topic: str, offsets: Mapping[int, int]) -> None:
        """Read assigned partitions again from the given offsets (after an aborted batch).

        A partition no longer assigned is skipped: its new owner starts from the committed
        offset anyway.
        """
        for partition, offset in offsets.items():
            try:
                self.handle.seek(ck.TopicPartition(topic, partition, offset))
            except ck.KafkaException as exc:
                kerr = _kafka_error_of(exc)
                if kerr is None or kerr.code() not in (_E._STATE, _E._UNKNOWN_PARTITION):
                    raise translate(exc, self.settings, f"seeking in topic '{topic}'") from None

    def group_metadata(self) -> Any:
        """The group identity a transactional producer commits offsets for."""
        with _translated(self.settings, "reading the consumer group metadata"):
            return self.handle.consumer_group_metadata()

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            # Closing is best effort: nothing is committed implicitly.
            with contextlib.suppress(ck.KafkaException, RuntimeError):
                handle.close()


def _positions(topic: str, offsets: Mapping[int, tuple[int, str]]) -> list[ck.TopicPartition]:
    return [
        ck.TopicPartition(topic, partition, offset, metadata=metadata)
        for partition, (offset, metadata) in sorted(offsets.items())
    ]


class Producer(_Client):
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
        # Set once librdkafka reports a fatal error (fenced, say): the client is unusable and
        # flushing or aborting it only raises again, from inside its callbacks.
        self.fatal = False

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
            while True:
                try:
                    produce(topic, value, key, partition, timestamp=timestamp, headers=headers)
                    break
                except BufferError:  # the local queue is full: let librdkafka send some
                    handle.poll(0.05)
                except ck.KafkaException as exc:
                    kerr = _kafka_error_of(exc)
                    if kerr is None or kerr.code() != _E.MSG_SIZE_TOO_LARGE:
                        action = f"producing to topic '{topic}'"
                        raise translate(exc, self.settings, action) from None
                    too_large.append(position)
                    break
        return too_large

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
        timeout = max(self.settings.connect_timeout_s, 30.0)
        started = time.monotonic()
        try:
            self.handle.init_transactions(timeout)
        except ck.KafkaException as exc:
            kerr = _kafka_error_of(exc)
            if kerr is not None and kerr.code() in _UNREACHABLE_CODES:
                action = "starting a transactional producer"
                raise self.unreachable(action, round(time.monotonic() - started, 1)) from None
            raise translate(exc, self.settings, "starting a transactional producer") from None

    def begin_transaction(self) -> None:
        with _translated(self.settings, "beginning a transaction"):
            self.handle.begin_transaction()
        self.in_transaction = True

    def send_offsets_to_transaction(
        self, topic: str, offsets: Mapping[int, tuple[int, str]], group_metadata: Any
    ) -> None:
        """Make the consumer group's progress part of the open transaction."""
        self._transactional(
            "committing input offsets in the transaction",
            lambda timeout: self.handle.send_offsets_to_transaction(
                _positions(topic, offsets), group_metadata, timeout
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

    def abort_transaction(self) -> None:
        """Roll back the open transaction, if any (best effort: a fenced one is gone anyway)."""
        if not self.in_transaction or self._handle is None or self.fatal:
            self.in_transaction = False
            return
        self.in_transaction = False
        # Best effort: the broker aborts it anyway on timeout or when the next instance starts.
        with contextlib.suppress(ck.KafkaException):
            self._handle.abort_transaction(self._txn_timeout())

    def _txn_timeout(self) -> float:
        """How long one transactional step may take in all, retries included."""
        return max(self.settings.connect_timeout_s * 3, 30.0)

    def _transactional(self, action: str, call: Callable[[float], Any]) -> None:
        """``call(timeout)``, retried on retriable errors until the transaction timeout.

        The deadline bounds the retries as a whole (each call gets the time left), so a broker
        that died is reported within a few connect timeouts rather than minutes.
        """
        started = time.monotonic()
        deadline = started + self._txn_timeout()
        attempts = 0
        while True:
            attempts += 1
            try:
                call(max(deadline - time.monotonic(), 0.1))
                return
            except ck.KafkaException as exc:
                kerr = _kafka_error_of(exc)
                if kerr is None or kerr.fatal() or kerr.code() in _AUTH_CODES:
                    self.in_transaction = False
                    self.fatal = self.fatal or (kerr is not None and kerr.fatal())
                    raise translate(exc, self.settings, action) from None
                if kerr.txn_requires_abort():
                    self.abort_transaction()
                    raise TransactionAborted(
                        f"{action}: the transaction was rolled back: "
                        f"{self.settings.redact(kerr.str())} [{kerr.name()}]",
                        code=kerr.name(),
                    ) from None
                # 0.1 s .. 1.6 s between tries: a coordinator moving, a broker busy.
                pause = 0.1 * 2 ** min(attempts - 1, 4)
                if not kerr.retriable() or time.monotonic() + pause >= deadline:
                    error = translate(exc, self.settings, action)
                    if kerr.retriable():
                        waited = time.monotonic() - started
                        error.message += (
                            f" (still failing after {attempts} attempt(s) in {waited:.1f}s)"
                        )
                    raise error from None
            time.sleep(pause)

    def close(self) -> None:
        """Abort an open transaction, else deliver what is queued (bounded)."""
        if self._handle is None:
            return
        try:
            if self.fatal:
                pass  # nothing can be delivered or aborted any more; the broker aborts it
            elif self.in_transaction:
                self.abort_transaction()
            else:
                # Best effort: a fenced or failed producer reports nothing more of use here.
                with contextlib.suppress(ck.KafkaException):
                    self._handle.flush(min(self.settings.connect_timeout_s, 10.0))
        finally:
            self._handle = None
