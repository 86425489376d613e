"""Output topics of a Kafka run, created or checked the same way for ``replay`` and ``tail``.

Every output keeps its input's partition number, so outputs (scores, shadow scores) need at
least the input's partitions; the dead-letter topic may have fewer (its records then go where
the partitioner puts them). Topics created here get the input's partition count and its
retention (outputs keep their input's timestamps: with the broker's default, scored history
older than 7 days would be deleted at once). The smallest ``max.message.bytes`` of the output
topics is reported, so a producer refuses an oversized record itself and it becomes an
``output_too_large`` dead letter instead of failing the broker request (a whole transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamscore.errors import KafkaError
from streamscore.kafka.client import Admin


@dataclass(frozen=True)
class OutputTopics:
    """What the producer needs to know of the topics prepared."""

    partitions: int  # the input topic's
    dead_letters_same_partitions: bool  # the dead-letter topic has at least as many
    max_message_bytes: int | None  # the smallest limit of the output topics, if any
    output_partitions: dict[str, list[int]]  # every partition of the outputs and dead letters

    def producer_defaults(self) -> dict[str, int]:
        """librdkafka defaults that make the producer refuse records the broker would."""
        limit = self.max_message_bytes
        return {"message.max.bytes": limit} if limit else {}


def prepare_output_topics(
    admin: Admin, input_topic: str, outputs: Sequence[str], dead_letter_topic: str
) -> OutputTopics:
    """Create or check ``outputs`` and ``dead_letter_topic`` against ``input_topic``.

    Raises KafkaError when the input is missing or an output has fewer partitions.
    """
    count = admin.input_partition_count(input_topic)
    inherited = admin.topic_config(input_topic, ["retention.ms", "cleanup.policy"])
    output_partitions: dict[str, list[int]] = {}
    for topic in outputs:
        found = admin.partition_count(topic)
        output_partitions[topic] = list(range(max(found or 0, count)))
        if found is None:
            admin.create_topic(topic, count, inherited)
        elif found < count:
            raise KafkaError(
                f"output topic '{topic}' has {found} partition(s) but input topic "
                f"'{input_topic}' has {count}; each output goes to its input's partition",
                hint="add partitions to the output topic or write into a new one",
            )
    if admin.partition_count(dead_letter_topic) is None:
        retention = {k: v for k, v in inherited.items() if k == "retention.ms"}
        admin.create_topic(dead_letter_topic, count, retention)
    dead_letter_partitions = admin.partition_count(dead_letter_topic) or 0
    output_partitions[dead_letter_topic] = list(range(dead_letter_partitions))
    limits = [
        int(admin.topic_config(topic, ["max.message.bytes"]).get("max.message.bytes", 0))
        for topic in (*outputs, dead_letter_topic)
    ]
    return OutputTopics(
        partitions=count,
        dead_letters_same_partitions=dead_letter_partitions >= count,
        max_message_bytes=min((limit for limit in limits if limit > 0), default=None),
        output_partitions=output_partitions,
    )
