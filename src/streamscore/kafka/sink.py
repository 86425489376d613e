"""Write scored Kafka batches: outputs, dead letters and input progress, committed together.

Each batch from a Kafka source becomes, in order: one output record per scored row (same
key, partition number and timestamp as its input, JSON value, headers naming model and
source), one dead letter per record that could not be decoded or scored, then the input
offsets. How those offsets are committed is the delivery guarantee:

* :class:`ExactlyOnce`: the batch is one Kafka transaction; outputs, dead letters and offsets
  become visible to read_committed consumers together, or (after a crash or abort) not at all.
* :class:`GroupExactlyOnce`: the same in a consumer group (``tail``): the offsets go in with
  the group's *current* generation, which fences a member that lost its partitions.
* :class:`AtLeastOnce`: offsets are committed once the batch's outputs are acknowledged by
  the broker. Batches are produced without waiting; every COMMIT_INTERVAL_S the producer is
  flushed (every record acknowledged) and the offsets of the batches produced so far are
  committed asynchronously, so no batch waits for the one before; :meth:`Delivery.settle`
  commits synchronously when partitions move or the run ends. A crash before a commit
  re-sends those batches on restart: duplicates, no loss.

A batch scored by several model versions (``tail``'s canary and shadow,
:class:`streamscore.rollout.RoutedBatch`) writes each version's rows with headers naming it,
and shadow scores to their own topic. The sink runs on the pipeline's writer thread, so
commits never wait on the reader.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamscore.errors import KafkaError, TransactionAborted
from streamscore.kafka.client import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaRecord,
    OutgoingRecord,
    Producer,
)
from streamscore.kafka.codec import DecodedBatch, encode_values
from streamscore.kafka.dead_letter import OUTPUT_TOO_LARGE, DeadLetters
from streamscore.kafka.headers import HeaderStamp
from streamscore.model.repository import ModelRef
from streamscore.pipeline import Sink, SourceBatch
from streamscore.rollout import RoutedBatch
from streamscore.scoring import ScoredBatch, rejection_kind

# Overlapped at-least-once commits acknowledged offsets this often (and when partitions move
# or the run ends); a crash repeats at most this much work. Fewer commits leave the broker
# more CPU.
COMMIT_INTERVAL_S = 0.5

_NO_ROWS = np.empty(0, dtype=np.int64)

PARTITIONS_MOVED = "PARTITIONS_MOVED"  # a group member's batch read before a rebalance


@dataclass
class KafkaBatch:
    """What a Kafka source hands the sink beside the decoded rows (``SourceBatch.context``)."""

    topic: str
    records: list[KafkaRecord]  # every record of the batch, in the order consumed
    decoded: DecodedBatch  # rows for the model (``SourceBatch.rows``) and decode failures
    commit: dict[int, tuple[int, str]]  # partition -> (next offset, metadata) once written
    advanced: dict[int, int] = field(default_factory=dict)  # partition -> offsets covered


class Delivery(ABC):
    """How a batch's outputs and its input offsets are made durable together."""

    @abstractmethod
    def begin(self) -> None:
        """Called before the batch's first record is produced."""

    @abstractmethod
    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> bool:
        """Make the produced records durable and commit ``offsets`` of ``topic``; True when
        every batch written so far is committed now (False: the commit is deferred)."""

    @abstractmethod
    def abort(self) -> None:
        """Give up the batch in progress (after a failure)."""

    def settle(self, *, wait_for_commit: bool = False) -> bool:
        """Between batches: make what was written durable, when due (or now, with
        ``wait_for_commit``); True when a deferred commit was made."""
        return False


class ExactlyOnce(Delivery):
    """Transactions holding outputs, dead letters and the offsets (send_offsets_to_transaction).

    With ``commit_interval_s`` 0, one transaction per batch. Otherwise a transaction spans
    the batches of up to that many seconds: it is committed by the first batch written after
    the interval, by :meth:`settle` when due (a quiet moment) or forced (a revocation, the end
    of the run); an abort rolls back every batch of it. Fewer commits cost the broker and the
    writer less (each is a round trip and a marker per partition), and readers see outputs
    up to the interval later. Kept well below ``transaction.timeout.ms``.
    """

    def __init__(
        self, producer: Producer, group_metadata: Any, *, commit_interval_s: float = 0.0
    ) -> None:
        self.producer = producer
        self.group_metadata = group_metadata
        self.commit_interval_s = commit_interval_s
        self._lock = threading.RLock()  # settle may run on another thread (a revocation)
        self._topic = ""
        self._offsets: dict[int, tuple[int, str]] = {}  # of the batches in the transaction
        self._opened_at = 0.0

    def begin(self) -> None:
        with self._lock:
            if not self.producer.in_transaction:
                self.producer.begin_transaction()
                self._opened_at = time.monotonic()

    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> bool:
        with self._lock:
            self._topic = topic
            self._offsets.update(offsets)
            if time.monotonic() - self._opened_at < self.commit_interval_s:
                return False
            self._commit_open()
            return True

    def settle(self, *, wait_for_commit: bool = False) -> bool:
        with self._lock:
            if not self.producer.in_transaction:
                return False
            due = time.monotonic() - self._opened_at >= self.commit_interval_s
            if not (due or wait_for_commit):
                return False
            self._commit_open()
            return True

    def _commit_open(self) -> None:
        offsets, self._offsets = self._offsets, {}
        if offsets:
            self.producer.send_offsets_to_transaction(
                self._topic, offsets, self._current_group_metadata()
            )
        self.producer.commit_transaction()

    def _current_group_metadata(self) -> Any:
        return self.group_metadata

    def abort(self) -> None:
        with self._lock:
            self._offsets = {}
            self.producer.abort_transaction()


class GroupExactlyOnce(ExactlyOnce):
    """Exactly-once in a consumer group: offsets go in with the group's *current* generation.

    ``may_commit()`` (a group source's :meth:`GroupProgress.may_commit`) says whether the
    batch was read before the member lost partitions (or, for a replay worker, had some
    revoked): such a batch is aborted, never committed with the generation the member got
    afterwards (another member may read the same records). It judges one batch per
    transaction. ``metadata()``, when given, returns the group metadata the reading
    thread saw last: librdkafka answers ``consumer.group_metadata()`` from another thread only
    once a rebalance callback in progress returned, so a writer asking for it would wait out a
    revocation barrier that waits for that writer.
    """

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        *,
        may_commit: Callable[[], bool] = lambda: True,
        metadata: Callable[[], Any] | None = None,
        commit_interval_s: float = 0.0,
    ) -> None:
        if commit_interval_s:  # may_commit judges the newest batch: one per transaction
            raise ValueError("a group member commits every batch (commit_interval_s=0)")
        super().__init__(producer, None, commit_interval_s=commit_interval_s)
        self.consumer = consumer
        self.may_commit = may_commit
        self.metadata = metadata or consumer.group_metadata
        self._read_metadata: Any = None

    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> bool:
        self._read_metadata = self.metadata()
        # After reading the generation: a batch of a generation that lost its partitions is
        # either refused by the coordinator (old generation) or caught here (new one).
        if not self.may_commit():
            self._read_metadata = None
            raise TransactionAborted(
                f"the group took partitions of topic '{topic}' from this member while a batch "
                "was being written; it is rolled back",
                code=PARTITIONS_MOVED,
            )
        try:
            return super().commit(topic, offsets)
        finally:
            self._read_metadata = None  # a deferred commit reads the generation again

    def _current_group_metadata(self) -> Any:
        """The generation read in :meth:`commit` before ``may_commit`` (else the current one)."""
        metadata, self._read_metadata = self._read_metadata, None
        return metadata if metadata is not None else self.metadata()


class AtLeastOnce(Delivery):
    """Outputs acknowledged first, offsets committed after (see the module docstring).

    ``owned()`` names the partitions this member may commit (a group member must not commit
    partitions it lost); ``on_commit_error`` hears of a failed commit, which a later one
    covers. :meth:`settle` may run on another thread than the writes (a revocation).
    """

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        *,
        owned: Callable[[], Collection[int]] | None = None,
        on_commit_error: Callable[[KafkaError], None] = lambda exc: None,
        commit_interval_s: float = COMMIT_INTERVAL_S,
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.owned = owned
        self.on_commit_error = on_commit_error
        self.commit_interval_s = commit_interval_s
        self._lock = threading.RLock()
        self._produced: dict[int, tuple[int, str]] = {}  # offsets of batches not committed
        self._last_commit = time.monotonic()

    def begin(self) -> None:
        self.settle()  # every COMMIT_INTERVAL_S, between two batches

    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> bool:
        """The batch is produced: its offsets wait for the next settle (it counts as
        written now: a crash repeats it, never loses it)."""
        self.topic = topic
        with self._lock:
            self.producer.poll()
            self._produced.update(offsets)
        return True

    def settle(self, *, wait_for_commit: bool = False) -> bool:
        """When due (or now, synchronously, with ``wait_for_commit``): wait until every
        record produced is acknowledged (KafkaError if any could not be delivered), then
        commit the offsets of the batches they came from."""
        with self._lock:
            due = time.monotonic() - self._last_commit >= self.commit_interval_s
            if not self._produced or not (due or wait_for_commit):
                return False
            self.producer.flush()
            offsets, self._produced = self._produced, {}
            if self.owned is not None:
                owned = set(self.owned())
                offsets = {p: c for p, c in offsets.items() if p in owned}
            self._last_commit = time.monotonic()
            if not offsets:
                return False
            try:
                self.consumer.commit(self.topic, offsets, asynchronous=not wait_for_commit)
            except KafkaError as exc:
                self.on_commit_error(exc)
            return False  # its batches counted when written

    def abort(self) -> None:
        """Give up what is not acknowledged yet: its offsets are never committed."""
        with self._lock:
            self._produced = {}


@dataclass
class SinkCounts:
    """Records written by committed batches only (an aborted batch counts nothing; at least
    once, a batch counts once produced)."""

    records: int = 0
    scored: int = 0
    dead_lettered: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)


class WriteProgress(Protocol):
    """Hears of each batch the sink wrote, and of its failure (a group source's barrier)."""

    def written(self) -> None: ...

    def abandon(self) -> None: ...


@dataclass(frozen=True)
class PartWritten:
    """What came of one model version's rows in a batch."""

    model: ModelRef
    rows: int  # rows it scored
    written: int  # outputs produced
    dead_lettered: int  # rejected or too large


# Called after each batch is committed: its context, its scores, and per part what came of it.
BatchObserver = Callable[[KafkaBatch, ScoredBatch, list[PartWritten]], None]


class KafkaSink(Sink):
    """Scores to ``output_topic`` and failures to the dead letters, committed per batch.

    ``stamp`` names the model of a single-model run (replay); a :class:`RoutedBatch` names
    its own. ``shadow_topic`` receives a routed batch's shadow scores; ``progress`` hears of
    every batch written (a group source's revocation barrier); ``observe`` of what came of it.
    """

    def __init__(
        self,
        producer: Producer,
        delivery: Delivery,
        output_topic: str,
        dead_letters: DeadLetters,
        stamp: HeaderStamp | None = None,
        *,
        shadow_topic: str | None = None,
        progress: WriteProgress | None = None,
        observe: BatchObserver | None = None,
    ) -> None:
        self.producer = producer
        self.delivery = delivery
        self.output_topic = output_topic
        self.dead_letters = dead_letters
        self.stamp = stamp
        self.shadow_topic = shadow_topic
        self.progress = progress
        self.observe = observe
        self.counts = SinkCounts()
        # Batches written but not committed yet (a transaction spanning several): counted,
        # and observed, once committed; dropped by an abort.
        self._uncommitted: list[tuple[KafkaBatch, ScoredBatch, list[PartWritten], Any]] = []
        self._lock = threading.Lock()
        self._stamps: dict[tuple[str, str], HeaderStamp] = {}

    def write(self, batch: SourceBatch, scored: ScoredBatch) -> None:
        context: KafkaBatch = batch.context
        records, decoded = context.records, context.decoded
        if not records and not context.commit:  # a quiet moment: commit what was written
            self.settle()
            return
        kinds: dict[str, int] = {}
        self.delivery.begin()
        parts: list[PartWritten] = []
        if isinstance(scored, RoutedBatch):
            for part in scored.parts:
                stamp = self._stamp_for(part.arm.ref, context.topic)
                parts.append(self._write_part(context, part.part, part.scored, stamp, kinds))
            if scored.shadow is not None and self.shadow_topic is not None:
                shadow = scored.shadow  # its scores only: its rejections are not dead letters
                only = ScoredBatch(shadow.scored.scores, shadow.scored.accepted, _NO_ROWS, [])
                stamp = self._stamp_for(shadow.arm.ref, context.topic)
                self._produce_scores(self.shadow_topic, context, shadow.part, only, stamp, kinds)
            failure_stamp = self._stamp_for(scored.parts[0].arm.ref, context.topic)
        else:
            assert self.stamp is not None, "a single-model sink needs its stamp"
            failure_stamp = self.stamp
            parts.append(self._write_part(context, decoded, scored, failure_stamp, kinds))
        for failure in decoded.failures:
            record = records[failure.index]
            self._dead_letter(record, failure_stamp, failure.kind, failure.message, kinds)
        with self._lock:
            self._uncommitted.append((context, scored, parts, kinds))
        if self.delivery.commit(context.topic, context.commit):
            self._committed()
        if self.progress is not None:
            self.progress.written()

    def settle(self, *, wait_for_commit: bool = False) -> None:
        """Commit what the delivery deferred, when due (or now, with ``wait_for_commit``)."""
        if self.delivery.settle(wait_for_commit=wait_for_commit):
            self._committed()

    def _committed(self) -> None:
        """Every batch written so far is committed: count it and tell the observer."""
        with self._lock:
            done, self._uncommitted = self._uncommitted, []
        counts = self.counts
        for context, scored, parts, kinds in done:
            counts.records += len(context.records)
            counts.scored += sum(part.written for part in parts)
            for kind, count in kinds.items():
                counts.dead_lettered += count
                counts.dead_letter_kinds[kind] = counts.dead_letter_kinds.get(kind, 0) + count
            if self.observe is not None:
                self.observe(context, scored, parts)

    def _stamp_for(self, model: ModelRef, topic: str) -> HeaderStamp:
        key = (model.sha256, topic)
        stamp = self._stamps.get(key)
        if stamp is None:
            stamp = self._stamps[key] = HeaderStamp(model, topic)
        return stamp

    def _write_part(
        self,
        context: KafkaBatch,
        decoded: DecodedBatch,
        scored: ScoredBatch,
        stamp: HeaderStamp,
        kinds: dict[str, int],
    ) -> PartWritten:
        """One model version's outputs, and dead letters for the rows it rejected."""
        before = sum(kinds.values())
        written = self._produce_scores(self.output_topic, context, decoded, scored, stamp, kinds)
        index = decoded.index.tolist()
        for row, reason in zip(scored.rejected.tolist(), scored.reasons, strict=True):
            self._dead_letter(
                context.records[index[row]], stamp, rejection_kind(reason), reason, kinds
            )
        dead = sum(kinds.values()) - before
        return PartWritten(stamp.model, decoded.rows.num_rows, written, dead)

    def _produce_scores(
        self,
        topic: str,
        context: KafkaBatch,
        decoded: DecodedBatch,
        scored: ScoredBatch,
        stamp: HeaderStamp,
        kinds: dict[str, int],
    ) -> int:
        if not len(scored.accepted):
            return 0
        values = encode_values(decoded.passthrough, scored.accepted, scored.scores)
        records, index = context.records, decoded.index.tolist()
        headers_for = stamp.output
        sources: list[KafkaRecord] = []
        outgoing: list[OutgoingRecord] = []
        for row, value in zip(scored.accepted.tolist(), values, strict=True):
            record = records[index[row]]
            partition = record.partition()
            kind_of_time, timestamp = record.timestamp()
            if kind_of_time == TIMESTAMP_NOT_AVAILABLE:
                timestamp = 0
            headers = headers_for(partition, record.offset())
            sources.append(record)
            outgoing.append((value, record.key(), partition, timestamp, headers))
        too_large = self.producer.produce_many(topic, outgoing)
        for position in too_large:
            size = len(outgoing[position][0] or b"")
            message = f"scored output of {size:,} bytes is too large to produce"
            self._dead_letter(sources[position], stamp, OUTPUT_TOO_LARGE, message, kinds)
        return len(outgoing) - len(too_large)

    def _dead_letter(
        self,
        record: KafkaRecord,
        stamp: HeaderStamp,
        kind: str,
        message: str,
        kinds: dict[str, int],
    ) -> None:
        self.dead_letters.send(record, stamp, kind, message)
        kinds[kind] = kinds.get(kind, 0) + 1

    def close(self) -> None:
        self.settle(wait_for_commit=True)

    def abort(self) -> None:
        with self._lock:
            self._uncommitted = []
        self.delivery.abort()
        if self.progress is not None:
            self.progress.abandon()
