"""Write scored Kafka batches: outputs, dead letters and input progress, committed together.

Each batch from a Kafka source becomes, in order: one output record per scored row (same
key, partition number and timestamp as its input, JSON value, headers naming model and
source), one dead letter per record that could not be decoded or scored, then the input
offsets. How those offsets are committed is the delivery guarantee:

* :class:`ExactlyOnce`: the batch is one Kafka transaction; outputs, dead letters and offsets
  become visible to read_committed consumers together, or (after a crash or abort) not at all.
* :class:`AtLeastOnce`: outputs are flushed (acknowledged by the broker), then the consumer
  commits the offsets. A crash in between re-sends that batch on restart: duplicates, no loss.

The sink runs on the pipeline's writer thread, so commits never wait on the reader.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
from streamscore.pipeline import Sink, SourceBatch
from streamscore.scoring import ScoredBatch, rejection_kind


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
    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> None:
        """Make the produced records durable and commit ``offsets`` of ``topic``."""

    @abstractmethod
    def abort(self) -> None:
        """Give up the batch in progress (after a failure)."""


class ExactlyOnce(Delivery):
    """One transaction per batch; offsets go into it with send_offsets_to_transaction."""

    def __init__(self, producer: Producer, group_metadata: Any) -> None:
        self.producer = producer
        self.group_metadata = group_metadata

    def begin(self) -> None:
        self.producer.begin_transaction()

    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> None:
        if offsets:
            self.producer.send_offsets_to_transaction(topic, offsets, self.group_metadata)
        self.producer.commit_transaction()

    def abort(self) -> None:
        self.producer.abort_transaction()


class AtLeastOnce(Delivery):
    """Outputs acknowledged first, offsets committed after: nothing lost, maybe repeated."""

    def __init__(self, producer: Producer, consumer: Consumer) -> None:
        self.producer = producer
        self.consumer = consumer

    def begin(self) -> None:
        pass

    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> None:
        self.producer.flush()
        if offsets:
            self.consumer.commit(topic, offsets)

    def abort(self) -> None:
        pass  # what was sent stays sent; uncommitted offsets make a restart send it again


@dataclass
class SinkCounts:
    """Records written by committed batches only (an aborted batch counts nothing)."""

    records: int = 0
    scored: int = 0
    dead_lettered: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)


class KafkaSink(Sink):
    """Scores to ``output_topic`` and failures to the dead letters, committed per batch."""

    def __init__(
        self,
        producer: Producer,
        delivery: Delivery,
        output_topic: str,
        dead_letters: DeadLetters,
        stamp: HeaderStamp,
    ) -> None:
        self.producer = producer
        self.delivery = delivery
        self.output_topic = output_topic
        self.dead_letters = dead_letters
        self.stamp = stamp
        self.counts = SinkCounts()

    def write(self, batch: SourceBatch, scored: ScoredBatch) -> None:
        context: KafkaBatch = batch.context
        records, decoded = context.records, context.decoded
        kinds: dict[str, int] = {}
        self.delivery.begin()
        written = self._produce_scores(context, scored, kinds)
        index = decoded.index.tolist()
        for row, reason in zip(scored.rejected.tolist(), scored.reasons, strict=True):
            self._dead_letter(records[index[row]], rejection_kind(reason), reason, kinds)
        for failure in decoded.failures:
            self._dead_letter(records[failure.index], failure.kind, failure.message, kinds)
        self.delivery.commit(context.topic, context.commit)
        counts = self.counts
        counts.records += len(records)
        counts.scored += written
        for kind, count in kinds.items():
            counts.dead_lettered += count
            counts.dead_letter_kinds[kind] = counts.dead_letter_kinds.get(kind, 0) + count

    def _produce_scores(
        self, context: KafkaBatch, scored: ScoredBatch, kinds: dict[str, int]
    ) -> int:
        if not len(scored.accepted):
            return 0
        values = encode_values(context.decoded.passthrough, scored.accepted, scored.scores)
        records, index = context.records, context.decoded.index.tolist()
        headers_for = self.stamp.output
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
        too_large = self.producer.produce_many(self.output_topic, outgoing)
        for position in too_large:
            size = len(outgoing[position][0] or b"")
            message = f"scored output of {size:,} bytes is too large to produce"
            self._dead_letter(sources[position], OUTPUT_TOO_LARGE, message, kinds)
        return len(outgoing) - len(too_large)

    def _dead_letter(
        self, record: KafkaRecord, kind: str, message: str, kinds: dict[str, int]
    ) -> None:
        self.dead_letters.send(record, self.stamp, kind, message)
        kinds[kind] = kinds.get(kind, 0) + 1

    def close(self) -> None:
        pass  # every batch was committed in write()

    def abort(self) -> None:
        self.delivery.abort()
