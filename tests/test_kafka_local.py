"""The local test broker (scripts/kafka-local) is a working Kafka: topics, groups, transactions."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.kafka


def _consume_values(bootstrap: str, topic: str, expected: int, timeout_s: float = 10) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    values: list[str] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            values.append(message.value().decode())
        # Committing proves the one-replica __consumer_offsets topic works.
        consumer.commit(asynchronous=False)
        # Anything still to come would be a message the test did not expect.
        extra = consumer.poll(0.5)
        assert extra is None or extra.error() is not None, extra.value()
    finally:
        consumer.close()
    return values


def test_plain_and_committed_transactional_messages_are_read_back_but_aborted_ones_are_not(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=2)

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(5):
        producer.produce(topic, key=str(i), value=f"plain-{i}")
    assert producer.flush(10) == 0

    # A transactional producer needs the one-replica __transaction_state topic.
    transactional = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{topic}-tx"}
    )
    transactional.init_transactions(10)
    transactional.begin_transaction()
    for i in range(3):
        transactional.produce(topic, key=str(i), value=f"committed-{i}")
    transactional.commit_transaction(10)
    transactional.begin_transaction()
    transactional.produce(topic, value="aborted")
    transactional.abort_transaction(10)

    values = _consume_values(kafka_bootstrap, topic, expected=8)

    assert sorted(values) == sorted(
        [f"plain-{i}" for i in range(5)] + [f"committed-{i}" for i in range(3)]
    )
