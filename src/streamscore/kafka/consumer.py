"""The consumer: assigned partitions or a group subscription, committing only on demand."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import confluent_kafka as ck

from streamscore.kafka.base import (
    CommittedOffset,
    KafkaClient,
    KafkaRecord,
    topic_positions,
)
from streamscore.kafka.retry import Retry
from streamscore.kafka.settings import KafkaSettings
from streamscore.kafka.translation import (
    AUTH_CODES,
    COORDINATOR_CODES,
    MISSING_TOPIC_CODES,
    UNREACHABLE_CODES,
    kafka_error_of,
    translate,
    translated,
)

_E = ck.KafkaError


class Consumer(KafkaClient):
    """A consumer in group ``group_id`` reading assigned partitions, committing only on demand."""

    action = "consumer"

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        *,
        read_committed: bool = True,
        config: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """``config`` is forced; ``defaults`` yield to the user's -X/--config properties."""
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
            defaults={"auto.offset.reset": "earliest", **(defaults or {})},
        )
        self.group_id = group_id

    def _create(self, config: dict[str, Any]) -> Any:
        return ck.Consumer(config)

    def assign(self, topic: str, offsets: Mapping[int, int]) -> None:
        """Read ``topic``'s partitions from the given offsets (nothing else).

        The topic's metadata is fetched first: a consumer that has only spoken to its group
        coordinator (committed offsets) otherwise started fetching up to a second later
        (measured: 0.95 s in most runs, against 10 ms with the metadata at hand). Best effort
        and brief: a cluster that does not answer is reported by the reads, as before.
        """
        with contextlib.suppress(ck.KafkaException):
            self.handle.list_topics(topic, timeout=min(self.settings.connect_timeout_s, 1.0))
        with translated(self.settings, f"assigning topic '{topic}'"):
            self.handle.assign([ck.TopicPartition(topic, p, o) for p, o in offsets.items()])

    def pause(self, topic: str, partitions: Sequence[int]) -> None:
        """Stop fetching these partitions (records already fetched may still arrive)."""
        with translated(self.settings, f"pausing topic '{topic}'"):
            self.handle.pause([ck.TopicPartition(topic, p) for p in partitions])

    def resume(self, topic: str, partitions: Sequence[int]) -> None:
        """Fetch these partitions again after :meth:`pause`."""
        with translated(self.settings, f"resuming topic '{topic}'"):
            self.handle.resume([ck.TopicPartition(topic, p) for p in partitions])

    def consume(
        self, max_records: int, timeout_s: float
    ) -> tuple[list[KafkaRecord], dict[int, int]]:
        """Up to ``max_records`` records, and the partitions found at their end (-> offset)."""
        action = "consuming"
        with translated(self.settings, action):
            messages = self.handle.consume(max_records, timeout_s)
        records: list[KafkaRecord] = []
        at_end: dict[int, int] = {}
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() == _E._PARTITION_EOF:
                at_end[message.partition()] = message.offset()
            elif error.fatal() or error.code() in AUTH_CODES or error.code() in MISSING_TOPIC_CODES:
                raise translate(error, self.settings, f"consuming topic '{message.topic()}'")
        self.raise_reported_errors(action)
        return records, at_end

    def positions(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """The next offset to be read per partition (absent where nothing was read yet)."""
        with translated(self.settings, f"reading positions in topic '{topic}'"):
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
        positions = topic_positions(topic, offsets)
        if asynchronous:
            with translated(self.settings, action):
                self.handle.commit(offsets=positions, asynchronous=True)
            return
        self._coordinated(action, lambda: self.handle.commit(offsets=positions, asynchronous=False))

    def _coordinated(self, action: str, call: Callable[[], Any]) -> Any:
        """``call()``, retried while the group coordinator moves or loads (a fresh cluster
        creates its offsets topic on first use), up to the connect timeout."""

        def transient(exc: ck.KafkaException) -> bool:
            kerr = kafka_error_of(exc)
            if kerr is None or kerr.code() in UNREACHABLE_CODES:
                return False
            return kerr.code() in COORDINATOR_CODES or bool(kerr.retriable())

        retry = Retry(self.settings.connect_timeout_s, first_s=0.05, max_s=1.0)
        try:
            return retry.run(lambda _left: call(), transient)
        except ck.KafkaException as exc:
            kerr = kafka_error_of(exc)
            if kerr is not None and kerr.code() in UNREACHABLE_CODES:
                raise self.unreachable(action, round(retry.elapsed_s, 1)) from None
            raise translate(exc, self.settings, action) from None

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
        with translated(self.settings, f"subscribing to topic '{topic}'"):
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
                kerr = kafka_error_of(exc)
                if kerr is None or kerr.code() not in (_E._STATE, _E._UNKNOWN_PARTITION):
                    raise translate(exc, self.settings, f"seeking in topic '{topic}'") from None

    def group_metadata(self) -> Any:
        """The group identity a transactional producer commits offsets for."""
        with translated(self.settings, "reading the consumer group metadata"):
            return self.handle.consumer_group_metadata()

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            # Closing is best effort: nothing is committed implicitly.
            with contextlib.suppress(ck.KafkaException, RuntimeError):
                handle.close()
