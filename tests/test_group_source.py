"""The consumer-group source's revocation barrier, and the output topics replay and tail share.

The barrier is what keeps a live rebalance from scoring a record twice: partitions may move
only once every batch already handed to the pipeline is written and its offsets committed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import Producer as RawProducer

from streamscore.errors import KafkaError
from streamscore.kafka.client import Admin, CommittedOffset, Consumer, KafkaSettings
from streamscore.kafka.codec import DecodedBatch
from streamscore.kafka.group_range_source import GroupRangeSource
from streamscore.kafka.group_source import GroupProgress, GroupSource
from streamscore.kafka.offsets import EndOffsets
from streamscore.kafka.topics import prepare_output_topics

WAIT_S = 60


def test_drain_waits_until_every_batch_handed_on_is_written_then_settles() -> None:
    settled: list[float] = []
    progress = GroupProgress(timeout_s=WAIT_S)
    progress.settle = lambda: settled.append(time.monotonic())
    progress.yielded()
    progress.yielded()
    progress.written()
    drained: list[bool] = []
    waiter = threading.Thread(target=lambda: drained.append(progress.drain()))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and not settled  # one batch is still on its way to the sink
    released = time.monotonic()
    progress.written()
    waiter.join(timeout=5)
    assert drained == [True] and len(settled) == 1 and settled[0] >= released


def test_a_worker_done_with_its_partitions_says_which_it_waits_for_and_when_they_stall() -> None:
    offsets = {0: 10, 1: 4, 2: 3}  # committed; the snapshot ends at 10, 8 and 9
    waits: list[tuple[list[int], float]] = []
    callbacks: dict[str, Callable[[list[int]], None]] = {}
    consumer = SimpleNamespace(
        settings=KafkaSettings("127.0.0.1:9"),
        consume=lambda count, timeout_s: ([], {}),  # its own partitions are read to their ends
        group_metadata=lambda: None,
        subscribe=lambda topic, **given: callbacks.update(given),
    )
    source = GroupRangeSource(
        consumer,  # type: ignore[arg-type]
        "in",
        SimpleNamespace(decode=_no_decode),  # type: ignore[arg-type]
        GroupProgress(),
        threading.Event(),
        batch_size=10,
        check_interval_s=0,
        committed=lambda ps: {p: CommittedOffset(offsets[p], "") for p in ps},
        on_wait=lambda partitions, stalled_s: waits.append((partitions, stalled_s)),
        stall_report_s=0.2,
    )
    source.subscribe()
    source.start(EndOffsets.take({0: 0, 1: 0, 2: 0}, {0: 10, 1: 8, 2: 9}, "model"))
    callbacks["on_revoke"]([])  # an (eager) rebalance: nothing to read until it assigns
    batches = source.batches()
    next(batches)
    next(batches)
    assert waits == []  # not done: it may be assigned partitions to read
    callbacks["on_assign"]([])  # nothing for this worker: it waits for its peers
    next(batches)
    assert waits == [([1, 2], 0.0)]  # said once, when it starts waiting
    offsets[1] = 6
    next(batches)
    assert len(waits) == 1  # progress: nothing to say
    time.sleep(0.25)
    next(batches)
    assert len(waits) == 2 and waits[1][0] == [1, 2] and waits[1][1] >= 0.2  # stalled
    offsets.update({1: 8, 2: 9})
    assert next(batches, None) is None and source.complete


def test_a_failed_sink_releases_the_barrier_without_settling() -> None:
    progress = GroupProgress(timeout_s=WAIT_S)
    progress.settle = lambda: pytest.fail("settled after the sink failed")
    progress.yielded()
    drained: list[bool] = []
    waiter = threading.Thread(target=lambda: drained.append(progress.drain()))
    waiter.start()
    progress.abandon()
    waiter.join(timeout=5)
    assert drained == [False]


def _no_decode(values: list[bytes | None]) -> DecodedBatch:
    empty = pa.RecordBatch.from_pydict({})
    return DecodedBatch(empty, np.empty(0, dtype=np.int64), None, [])


@pytest.mark.kafka
def test_partitions_move_to_a_new_member_only_after_the_batches_handed_on_are_written(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=2)
    group = f"{topic}-g"
    producer = RawProducer({"bootstrap.servers": kafka_bootstrap})
    for i in range(20):
        producer.produce(topic, b"{}", f"k{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0

    progress = GroupProgress(timeout_s=WAIT_S)
    settled = threading.Event()
    progress.settle = settled.set
    draining = threading.Event()
    drain = progress.drain

    def watched_drain() -> bool:
        draining.set()
        return drain()

    progress.drain = watched_drain  # type: ignore[method-assign]
    changes: list[tuple[str, list[int], float]] = []
    stop = threading.Event()
    config = {
        "partition.assignment.strategy": "cooperative-sticky",
        "auto.offset.reset": "earliest",
    }
    with Consumer(KafkaSettings(kafka_bootstrap), group, config=config) as consumer:
        source = GroupSource(
            consumer, topic, _no_decode, progress, stop, max_batch=20, max_wait_ms=2000,
            on_change=lambda how, parts: changes.append((how, parts, time.monotonic())),
        )  # fmt: skip
        source.subscribe()
        batches = source.batches()
        first = next(b for b in batches if b.context.records)  # handed on, not yet written
        assert first.context.records
        handed = [first]

        def keep_reading() -> None:  # the revocation arrives inside consume()
            for batch in batches:
                if batch.context.records:
                    handed.append(batch)
                if stop.is_set():
                    return

        reader = threading.Thread(target=keep_reading, daemon=True)
        reader.start()
        joined = threading.Event()
        checked = threading.Event()

        def second_member() -> None:
            other = RawConsumer({**config, "bootstrap.servers": kafka_bootstrap, "group.id": group})
            other.subscribe([topic], on_assign=lambda c, parts: parts and joined.set())
            deadline = time.monotonic() + WAIT_S
            while not joined.is_set() and time.monotonic() < deadline:
                other.poll(0.1)
            checked.wait(WAIT_S)  # leaving hands its partition back to the first member
            other.close()

        member = threading.Thread(target=second_member, daemon=True)
        member.start()
        assert draining.wait(WAIT_S), "the first member never saw a revocation"
        time.sleep(1)
        # The barrier holds: nothing settled, nothing moved while the batch is unwritten.
        assert not settled.is_set() and not joined.is_set()
        assert not any(how == "revoked" for how, _, _ in changes)
        written_at = time.monotonic()
        for _ in handed:  # the sink wrote what was handed on: the partitions may move now
            progress.written()
        assert joined.wait(WAIT_S), "the second member never got a partition"
        revoked = [(parts, at) for how, parts, at in changes if how == "revoked"]
        assert settled.is_set() and len(revoked) == 1 and revoked[0][1] >= written_at
        assert progress.owned == {0, 1} - set(revoked[0][0])
        checked.set()
        member.join(timeout=WAIT_S)
        stop.set()
        reader.join(timeout=WAIT_S)


@pytest.mark.kafka
def test_replay_and_tail_share_one_output_topic_setup(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    source = unique_topic(partitions=3)
    prefix = f"shared-{uuid.uuid4().hex[:8]}"
    out, shadow, dlq = f"{prefix}.out", f"{prefix}.shadow", f"{prefix}.dlq"
    settings = KafkaSettings(kafka_bootstrap)
    with Admin(settings) as admin:
        admin.create_topic(shadow, 3, {"max.message.bytes": "4000"})
        wanted = {"retention.ms": "86400000", "cleanup.policy": "delete"}
        found = admin.topic_config(source, list(wanted))

        topics = prepare_output_topics(admin, source, [out, shadow], dlq)

        assert topics.partitions == 3 and topics.dead_letters_same_partitions
        assert topics.max_message_bytes == 4000  # the smallest limit of the outputs
        assert topics.producer_defaults() == {"message.max.bytes": 4000}
        for topic in (out, dlq):
            assert admin.partition_count(topic) == 3
        inherited = admin.topic_config(out, list(wanted))
        assert inherited == found  # outputs keep the input's retention and cleanup policy
        assert admin.topic_config(dlq, ["retention.ms"]) == {"retention.ms": found["retention.ms"]}

        few = f"{prefix}.few"
        admin.create_topic(few, 2)
        with pytest.raises(KafkaError, match="has 2 partition\\(s\\) but input topic"):
            prepare_output_topics(admin, source, [few], dlq)
