"""The dead-letter topic: records that could not be scored, kept as they came, with the reason.

A dead letter has the input record's key, value and timestamp, lands in the same partition
number when the dead-letter topic has enough partitions, and carries the output headers plus
``streamscore.error.type`` (a decode failure kind such as ``not_json``, ``rejected`` for a
row the model could not take, ``remote_rejected`` for a row a model server refused) and
``streamscore.error.message``.
"""

from __future__ import annotations

from streamscore.errors import KafkaError
from streamscore.kafka.client import TIMESTAMP_NOT_AVAILABLE, KafkaRecord, Producer
from streamscore.kafka.headers import HeaderStamp
from streamscore.scoring import REJECTED, REMOTE_REJECTED

__all__ = ["OUTPUT_TOO_LARGE", "REJECTED", "REMOTE_REJECTED", "VALUE_OMITTED", "DeadLetters"]

# REJECTED: decoded, but the input mapping or the model rejected the row; REMOTE_REJECTED:
# a model server refused the row (see streamscore.scoring.rejection_kind).
OUTPUT_TOO_LARGE = "output_too_large"  # scored, but the output exceeds the producer's limit
VALUE_OMITTED = "streamscore.value.omitted"


class DeadLetters:
    """Writes records that could not be scored to ``topic`` through ``producer``."""

    def __init__(self, producer: Producer, topic: str, *, same_partitions: bool) -> None:
        self.producer = producer
        self.topic = topic
        self.same_partitions = same_partitions

    def send(self, record: KafkaRecord, stamp: HeaderStamp, kind: str, message: str) -> None:
        """Queue one dead letter (in the producer's open transaction, if any)."""
        partition = record.partition()
        offset = record.offset()
        kind_of_time, timestamp = record.timestamp()
        if kind_of_time == TIMESTAMP_NOT_AVAILABLE:
            timestamp = 0
        headers = stamp.dead_letter(partition, offset, kind, message)
        target = partition if self.same_partitions else -1
        if self.producer.produce(
            self.topic,
            record.value(),
            record.key(),
            partition=target,
            timestamp=timestamp,
            headers=headers,
        ):
            return
        # Larger than this producer may send: keep the reason, drop the value.
        headers.append((VALUE_OMITTED, b"too large for the dead-letter topic"))
        if not self.producer.produce(
            self.topic, None, record.key(), partition=target, timestamp=timestamp, headers=headers
        ):  # even key and headers are too large: never drop a dead letter silently
            raise KafkaError(
                f"dead letter for partition {partition} offset {offset} is too large for "
                f"topic '{self.topic}' even without its value",
                hint="raise the topic's max.message.bytes",
            )
