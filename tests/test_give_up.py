"""A run whose broker went away gives up in the time the README states: a failed writer does
not wait for a blocked reader, and a reader whose client reports the broker unreachable gives
up after 3 × the connect timeout rather than the 60 s allowed a merely blocked input."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from streamscore.errors import KafkaError
from streamscore.kafka.client import Consumer, KafkaSettings
from streamscore.kafka.codec import JsonDecoder
from streamscore.kafka.source import PartitionRangeSource
from streamscore.pipeline import Sink, Source, SourceBatch, run_pipeline
from streamscore.scoring import ScoredBatch

ROWS = pa.record_batch({"x": [1.0, 2.0]})


class BlockedAfterOneBatch(Source):
    """One batch, then nothing until stopped (as a reader waiting on a dead broker)."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def batches(self) -> Iterator[SourceBatch]:
        yield SourceBatch(ROWS)
        self.stopped.wait(30)

    def stop(self) -> None:
        self.stopped.set()


class PassThrough:
    def prepare(self, batch: pa.RecordBatch) -> Any:
        return batch

    def run(self, prepared: Any) -> ScoredBatch:
        accepted = np.arange(prepared.num_rows, dtype=np.int64)
        return ScoredBatch(prepared, accepted, np.empty(0, dtype=np.int64), [])


class FailingSink(Sink):
    def write(self, batch: SourceBatch, scored: ScoredBatch) -> None:
        raise KafkaError("committing a transaction: cannot reach Kafka")

    def close(self) -> None:
        raise AssertionError("closed after a failure")

    def abort(self) -> None:
        pass


def test_a_failed_writer_stops_a_blocked_reader_instead_of_waiting_for_it() -> None:
    source = BlockedAfterOneBatch()

    with pytest.raises(KafkaError, match="cannot reach Kafka"):
        run_pipeline(source, PassThrough(), FailingSink())

    assert source.stopped.is_set()  # asked to stop, not left to wait out its 30 s


def test_a_read_gives_up_after_three_connect_timeouts_once_the_broker_is_unreachable() -> None:
    consumer = Consumer(KafkaSettings("127.0.0.1:1", connect_timeout_s=0.5), "give-up-test")
    source = PartitionRangeSource(
        consumer, "in", {0: 0}, {0: 10}, JsonDecoder({"x": pa.float64()}), batch_size=10
    )
    assert source.stall_timeout_s == 60  # what a broker that answers but blocks is allowed
    started = time.monotonic()

    with consumer, pytest.raises(KafkaError) as caught:
        next(iter(source.batches()))

    assert caught.value.code == "_TRANSPORT"
    assert "reading topic 'in': cannot reach Kafka at 127.0.0.1:1" in caught.value.message
    assert time.monotonic() - started < source.stall_timeout_s
