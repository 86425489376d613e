"""The shared pipeline: every batch written once, in source order, one sink call at a time;
small batches read while nothing is in flight are finished on the reader thread (``tail``'s
latency), and a failure there aborts the sink as any other."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from streamscore.errors import KafkaError
from streamscore.pipeline import Sink, Source, SourceBatch, run_pipeline
from streamscore.scoring import ScoredBatch

WAIT_S = 10.0


def rows(first: int, count: int) -> pa.RecordBatch:
    return pa.record_batch({"x": np.arange(first, first + count, dtype=np.float64)})


class Batches(Source):
    """Batches of the given sizes, numbered row by row; ``pause_s`` between them."""

    def __init__(self, sizes: list[int], pause_s: float = 0.0) -> None:
        self.sizes = sizes
        self.pause_s = pause_s

    def batches(self) -> Iterator[SourceBatch]:
        first = 0
        for size in self.sizes:
            yield SourceBatch(rows(first, size), context=first)
            first += size
            time.sleep(self.pause_s)


class PassThrough:
    def prepare(self, batch: pa.RecordBatch) -> Any:
        return batch

    def run(self, prepared: Any) -> ScoredBatch:
        accepted = np.arange(prepared.num_rows, dtype=np.int64)
        return ScoredBatch(prepared, accepted, np.empty(0, dtype=np.int64), [])


class Recording(Sink):
    """Records what it wrote and on which thread; fails if two calls overlap."""

    def __init__(self, write_s: float = 0.0, fail_at: int | None = None) -> None:
        self.write_s = write_s
        self.fail_at = fail_at
        self.written: list[int] = []  # first row of each batch, in write order
        self.threads: list[str] = []
        self.aborted = self.closed = False
        self._busy = threading.Lock()

    def write(self, batch: SourceBatch, scored: ScoredBatch) -> None:
        assert self._busy.acquire(blocking=False), "two sink calls at once"
        try:
            if batch.context == self.fail_at:
                raise KafkaError("the broker refused the batch")
            time.sleep(self.write_s)
            self.written.append(batch.context)
            self.threads.append(threading.current_thread().name)
        finally:
            self._busy.release()

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def starts(sizes: list[int]) -> list[int]:
    return [sum(sizes[:i]) for i in range(len(sizes))]


def test_small_batches_read_while_nothing_is_in_flight_are_written_by_the_reader() -> None:
    sizes = [3] * 5
    sink = Recording()

    run_pipeline(Batches(sizes, pause_s=0.02), PassThrough(), sink, inline_rows=10)

    assert sink.written == starts(sizes)
    assert set(sink.threads) == {"streamscore-reader"}
    assert sink.closed


def test_without_inline_rows_every_batch_goes_through_the_writer_thread() -> None:
    sizes = [3] * 5
    sink = Recording()

    run_pipeline(Batches(sizes, pause_s=0.02), PassThrough(), sink)

    assert set(sink.threads) == {"streamscore-writer"}


def test_batches_behind_work_in_flight_keep_their_order_and_are_written_once() -> None:
    # Large batches go through the threads and a slow sink keeps them in flight, so the
    # small ones between them must wait their turn rather than be written at once.
    sizes = [1, 50, 2, 2, 50, 1, 1, 3, 50, 2] * 3
    sink = Recording(write_s=0.005)

    stats = run_pipeline(Batches(sizes), PassThrough(), sink, inline_rows=10)

    assert sink.written == starts(sizes)
    assert stats.rows_scored == sum(sizes)
    assert {"streamscore-reader", "streamscore-writer"} <= set(sink.threads)


def test_a_failure_writing_a_batch_on_the_reader_aborts_the_run() -> None:
    sizes = [3] * 4
    sink = Recording(fail_at=6)

    with pytest.raises(KafkaError, match="refused the batch"):
        run_pipeline(Batches(sizes, pause_s=0.01), PassThrough(), sink, inline_rows=10)

    assert sink.written == [0, 3]
    assert sink.aborted and not sink.closed


class _Interrupted(Exception):
    """Raised in the calling thread by a signal handler, as Ctrl-C raises KeyboardInterrupt."""


class Watched(Sink):
    """Says whether ``abort`` ran while a write was under way; the write of the batch
    starting at ``interrupt_at`` interrupts the calling thread and then gives an abort a
    second to come in."""

    def __init__(self, interrupt_at: int) -> None:
        self.interrupt_at = interrupt_at
        self.interrupted = threading.Event()  # set by the calling thread's signal handler
        self.written: list[int] = []
        self.writing = False
        self.aborted_while_writing = False
        self.aborted = threading.Event()

    def write(self, batch: SourceBatch, scored: ScoredBatch) -> None:
        self.writing = True
        try:
            if batch.context == self.interrupt_at:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                assert self.interrupted.wait(WAIT_S)
                self.aborted.wait(1.0)
            self.written.append(batch.context)
        finally:
            self.writing = False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted_while_writing = self.aborted_while_writing or self.writing
        self.aborted.set()


def test_ctrl_c_aborts_the_sink_only_after_the_batch_the_reader_writes_inline() -> None:
    """An exception in the calling thread (Ctrl-C) while the reader writes a batch inline:
    the sink is aborted once that write is over, and nothing is written after the abort."""
    sizes = [3] * 20
    sink = Watched(interrupt_at=3)

    def interrupt(signum: int, frame: Any) -> None:
        sink.interrupted.set()
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with pytest.raises(_Interrupted):
            run_pipeline(Batches(sizes, pause_s=0.01), PassThrough(), sink, inline_rows=10)
    finally:
        signal.signal(signal.SIGUSR1, previous)

    assert sink.written == [0, 3]
    assert sink.aborted.is_set() and not sink.aborted_while_writing


def test_after_the_writer_thread_fails_no_batch_is_written_inline() -> None:
    """A batch the writer thread could not write stays in flight: the small batches read
    after it are not written by the reader (they would follow a batch never written)."""
    sizes = [50] + [1] * 30
    sink = Recording(fail_at=0)

    with pytest.raises(KafkaError, match="refused the batch"):
        run_pipeline(Batches(sizes, pause_s=0.005), PassThrough(), sink, inline_rows=10)

    assert sink.written == []
    assert sink.aborted and not sink.closed


class SlowConcurrent(PassThrough):
    """Scores slowly, later batches faster (so they finish first), and records how many
    calls ran at once; fails on the batch starting at ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.running = self.most = 0
        self._lock = threading.Lock()

    def run(self, prepared: Any) -> ScoredBatch:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            first = int(prepared.column("x")[0].as_py())
            time.sleep(0.05 if first % 20 == 0 else 0.01)
            if first == self.fail_at:
                raise ValueError("the model failed")
            return super().run(prepared)
        finally:
            with self._lock:
                self.running -= 1


def test_score_workers_run_batches_at_once_and_hand_them_on_in_source_order() -> None:
    sizes = [10] * 12
    sink, scorer = Recording(), SlowConcurrent()
    seen: list[int] = []

    stats = run_pipeline(
        Batches(sizes), scorer, sink, score_workers=3,
        on_batch=lambda batch, _: seen.append(batch.context),
    )  # fmt: skip

    assert scorer.most == 3
    assert sink.written == seen == starts(sizes)
    assert stats.rows_scored == sum(sizes) and sink.closed and not sink.aborted


def test_a_failure_in_a_score_worker_aborts_the_run_after_the_batches_before_it() -> None:
    sizes = [10] * 12
    sink = Recording()

    with pytest.raises(ValueError, match="the model failed"):
        run_pipeline(Batches(sizes), SlowConcurrent(fail_at=50), sink, score_workers=2)

    assert sink.aborted and not sink.closed
    assert sink.written == starts(sizes)[: len(sink.written)]
    assert 50 not in sink.written
