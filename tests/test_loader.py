"""``scripts/load-sample-topic`` stamps records with their produce time unless told otherwise.

With the sample's weeks-old event times as record timestamps, ``tail``'s end-to-end latency
(output time minus record timestamp) showed the records' age (issue 8 §5).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from streamscore.kafka.loader import main

pytestmark = pytest.mark.kafka

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "transactions"
FIRST_DAY = SAMPLE / "date=2026-11-01" / "part-0.parquet"


def timestamps(bootstrap: str, topic: str, n: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ts-{time.monotonic_ns()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found: list[int] = []
        deadline = time.monotonic() + 30
        while len(found) < n and time.monotonic() < deadline:
            found += [m.timestamp()[1] for m in consumer.consume(100, 0.2) if m.error() is None]
        return found
    finally:
        consumer.close()


def test_records_are_stamped_with_produce_time_by_default(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=1, prefix="loader")
    before = int(time.time() * 1000)

    assert main(["-b", kafka_bootstrap, "--topic", topic, "--limit", "20", str(FIRST_DAY)]) == 0

    after = int(time.time() * 1000)
    stamps = timestamps(kafka_bootstrap, topic, 20)
    assert len(stamps) == 20 and all(before - 1000 <= s <= after + 1000 for s in stamps)


def test_keep_event_time_stamps_records_with_the_event_time(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=1, prefix="loader")
    args = ["-b", kafka_bootstrap, "--topic", topic, "--limit", "20", "--keep-event-time"]

    assert main([*args, str(FIRST_DAY)]) == 0

    events = pq.read_table(FIRST_DAY).column("event_time").slice(0, 20).to_pylist()
    expected = sorted(int(e.timestamp() * 1000) for e in events)
    assert sorted(timestamps(kafka_bootstrap, topic, 20)) == expected
