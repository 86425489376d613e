"""The source -> score -> sink loop every command runs, with reading and writing overlapped.

A source yields :class:`SourceBatch` objects on a reader thread, which also converts them
into model feeds; the calling thread runs the model (ONNX Runtime releases the GIL); a writer
thread hands each result to the sink. So the thread that owns the model does little else.
Queues are bounded, so memory stays a few batches deep whatever the input size. A live
source's small batches, read while nothing is in flight, may be finished on the reader
thread instead (``inline_rows``): for them the hand-offs cost more than they overlap.
With ``score_workers`` above 1, that many batches are converted and scored at once on a pool
of threads (each model call on one core, say) and still handed to the sink in order.
"""

from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import pyarrow as pa

from streamscore.mapping import reason_kind
from streamscore.scoring import ScoredBatch

T = TypeVar("T")


class BatchScorer(Protocol):
    """Scores in two steps: ``prepare`` (any thread) then ``run`` (the scoring thread).

    :class:`streamscore.scoring.Scorer` is one; a scorer that needs more than the rows
    is a :class:`SourceBatchScorer`.
    """

    def prepare(self, batch: pa.RecordBatch) -> Any: ...

    def run(self, prepared: Any) -> ScoredBatch: ...


@dataclass
class SourceBatch:
    """Rows read from a source; ``context`` is whatever the sink needs (offsets, file…)."""

    rows: pa.RecordBatch
    context: Any = None


@runtime_checkable
class SourceBatchScorer(Protocol):
    """A scorer that prepares from the whole source batch, context included: one that
    routes rows by their source record (canary keys), :class:`streamscore.rollout.RoutingScorer`.
    """

    def prepare_batch(self, batch: SourceBatch) -> Any: ...

    def run(self, prepared: Any) -> ScoredBatch: ...


class Source(ABC):
    """Produces batches of rows. Implement :meth:`batches`; it runs on a reader thread."""

    @abstractmethod
    def batches(self) -> Iterator[SourceBatch]:
        """Yield batches in order until the source is exhausted."""

    def stop(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Called from another thread when the run stops early (the writer failed): make
        :meth:`batches` return soon. Only a source that can wait long needs it."""


class Sink(ABC):
    """Receives each scored batch with its source batch. Implement :meth:`write`.

    All three run on one thread at a time. ``write`` gets batches in source order;
    ``close`` runs once after the last write when everything went well; ``abort`` instead
    when anything failed, so the sink can drop partial output.
    """

    @abstractmethod
    def write(self, batch: SourceBatch, scored: ScoredBatch) -> None:
        """Persist scores (and route rejected rows)."""

    @abstractmethod
    def close(self) -> None:
        """Make the output durable and visible."""

    @abstractmethod
    def abort(self) -> None:
        """Discard partial output."""


@dataclass
class PipelineStats:
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    batches: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    # CPU seconds of each pipeline thread (read: reading and feed conversion, and whole
    # batches finished inline; score: the model and output columns, and with score_workers
    # all the pool's threads and the conversion; write: the sink), to see which one limits
    # a run.
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, scored: ScoredBatch) -> None:
        self.batches += 1
        self.rows_scored += len(scored.accepted)
        self.rows_rejected += len(scored.rejected)
        self.rows_in += len(scored.accepted) + len(scored.rejected)
        for reason in scored.reasons:
            kind = reason_kind(reason)
            self.reasons[kind] = self.reasons.get(kind, 0) + 1


_DONE = object()
READER_EXIT_TIMEOUT_S = 30.0  # a source blocked longer than this is left behind


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Counter:
    """A number several threads change."""

    def __init__(self) -> None:
        self.value: float = 0
        self._lock = threading.Lock()

    def add(self, delta: float) -> None:
        with self._lock:
            self.value += delta


class _Stage(Generic[T]):
    """A thread feeding or draining a bounded queue, passing its exception on."""

    def __init__(self, depth: int) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def run_pipeline(
    source: Source,
    scorer: BatchScorer | SourceBatchScorer,
    sink: Sink,
    *,
    on_batch: Callable[[SourceBatch, ScoredBatch], None] | None = None,
    depth: int = 2,
    inline_rows: int = 0,
    score_workers: int = 1,
) -> PipelineStats:
    """Read, score and write every batch of ``source``; return row counts.

    ``on_batch`` runs after each batch is scored, before it is written (progress, error
    policy); an exception there stops the pipeline and aborts the sink.
    A scorer with an ``in_flight`` attribute (a remote model's concurrency) gets that many
    prepared batches queued, so that many requests can be out while one is scored.

    ``inline_rows``: a batch of at most that many rows read while no batch is in flight is
    scored and written on the reader thread at once. A live source's small batches then
    skip the two hand-offs between threads (each a wake-up and a wait for the GIL, a large
    part of a small batch's latency on a busy machine); batches read while others are in
    flight go through the threads, so work still overlaps under load. Sink calls stay on
    one thread at a time: a batch goes inline only once every batch before it is written.

    ``score_workers``: convert and score that many batches at once, each on a thread of a
    pool (the scorer's ``prepare`` and ``run`` must be thread-safe; an ONNX Runtime session
    is), while the reader only reads. A model given one core per call then uses N cores
    with no synchronisation inside a call, where one call split over N intra-op threads
    waits for its slowest thread, and a core the reader or writer takes slows every call.
    ``on_batch`` and the sink still see batches one at a time, in source order.
    """
    depth = max(depth, getattr(scorer, "in_flight", 0))
    stats = PipelineStats()
    reader: _Stage[tuple[SourceBatch, Any]] = _Stage(depth)
    writer: _Stage[tuple[SourceBatch, ScoredBatch]] = _Stage(depth)
    errors: list[BaseException] = []
    handed = _Counter()  # batches handed to the scoring thread and not written yet
    # Held by the reader while it finishes a batch inline: an abort from the calling thread
    # (an exception there, Ctrl-C) waits for that write and stops the next one.
    inline = threading.Lock()

    whole_batch = isinstance(scorer, SourceBatchScorer)  # checked once: it costs microseconds

    def prepare(batch: SourceBatch) -> Any:
        if whole_batch:
            return scorer.prepare_batch(batch)  # type: ignore[union-attr]
        return scorer.prepare(batch.rows)  # type: ignore[union-attr]

    def score(batch: SourceBatch, prepared: Any) -> ScoredBatch:
        return scored_in_order(batch, scorer.run(prepared))

    def scored_in_order(batch: SourceBatch, scored: ScoredBatch) -> ScoredBatch:
        stats.add(scored)
        if on_batch is not None:
            on_batch(batch, scored)
        return scored

    pool = (
        _ScoringPool(lambda batch: scorer.run(prepare(batch)), score_workers)
        if score_workers > 1
        else None
    )

    def read() -> None:
        try:
            for batch in source.batches():
                # A scoring pool's threads convert their own batches: the reader only reads.
                prepared = prepare(batch) if pool is None else None
                if batch.rows.num_rows <= inline_rows and handed.value == 0:
                    if prepared is None:
                        prepared = prepare(batch)
                    with inline:  # nothing ahead of it
                        if reader.stop.is_set():  # the run failed meanwhile: the sink aborts
                            return
                        sink.write(batch, score(batch, prepared))
                    continue
                handed.add(1)
                if not reader.put((batch, prepared)):
                    return
        except BaseException as exc:  # handed to the calling thread
            reader.put(_Failure(exc))
            return
        finally:
            stats.cpu_seconds["read"] = time.thread_time()
        reader.put(_DONE)

    def write() -> None:
        try:
            while True:
                item = writer.queue.get()
                if item is _DONE:
                    return
                try:
                    sink.write(*item)
                except BaseException as exc:
                    errors.append(exc)
                    writer.stop.set()
                    return
                handed.add(-1)
        finally:
            stats.cpu_seconds["write"] = time.thread_time()

    threads = [
        threading.Thread(target=read, name="streamscore-reader", daemon=True),
        threading.Thread(target=write, name="streamscore-writer", daemon=True),
    ]
    for thread in threads:
        thread.start()
    started = time.thread_time()
    try:
        if pool is not None:
            pool.serve(reader, writer, errors, scored_in_order)
        else:
            while not errors:
                try:
                    # Not forever: a writer that failed must not wait for a slow reader.
                    item = reader.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _DONE:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                batch, prepared = item
                if not writer.put((batch, score(batch, prepared))):
                    break
    except BaseException:
        writer.stop.set()
        _drain(writer.queue)
        writer.queue.put(_DONE)
        threads[1].join()
        reader.stop.set()
        # After the batch the reader may be writing inline, unless it is stuck in it.
        waited = inline.acquire(timeout=READER_EXIT_TIMEOUT_S)
        try:
            sink.abort()
        finally:
            if waited:
                inline.release()
        raise
    finally:
        stats.cpu_seconds["score"] = time.thread_time() - started
        if pool is not None:
            stats.cpu_seconds["score"] += pool.close()
        reader.stop.set()
        source.stop()
        _drain(reader.queue)
        # A source may use a client its owner closes once we return (a Kafka consumer must
        # not be closed while a thread is inside it): wait until the reader has left it.
        threads[0].join(timeout=READER_EXIT_TIMEOUT_S)
    writer.put(_DONE)
    threads[1].join()
    if errors:
        sink.abort()
        raise errors[0]
    try:
        sink.close()
    except BaseException:  # e.g. a full disk while finishing the file: drop the partial output
        sink.abort()
        raise
    return stats


class _ScoringPool:
    """Scores up to ``workers`` batches at once on a thread pool; the calling thread hands
    them on in source order."""

    def __init__(self, score: Callable[[SourceBatch], ScoredBatch], workers: int) -> None:
        self.score = score  # a batch's rows converted and scored
        self.workers = workers
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="streamscore-score")
        self.in_flight: deque[tuple[SourceBatch, Future[ScoredBatch]]] = deque()
        self.cpu = _Counter()

    def _run(self, batch: SourceBatch) -> ScoredBatch:
        started = time.thread_time()
        try:
            return self.score(batch)
        finally:
            self.cpu.add(time.thread_time() - started)

    def serve(
        self,
        reader: _Stage[Any],
        writer: _Stage[Any],
        errors: list[BaseException],
        finish: Callable[[SourceBatch, ScoredBatch], ScoredBatch],
    ) -> None:
        """Take batches from ``reader`` until it is done, score them, put them on ``writer``."""
        reading = True
        while not errors:
            head = self.in_flight[0][1] if self.in_flight else None
            if head is not None and (head.done() or not reading or self._full()):
                batch, future = self.in_flight.popleft()
                if not writer.put((batch, finish(batch, future.result()))):
                    return
                continue
            if not reading:
                return
            try:
                # A short wait while a batch is scored, so it is handed on soon after.
                item = reader.queue.get(timeout=0.1 if head is None else 0.002)
            except queue.Empty:
                continue
            if item is _DONE:
                reading = False
            elif isinstance(item, _Failure):
                raise item.exc
            else:
                batch, _ = item  # not prepared: the pool converts it
                self.in_flight.append((batch, self.executor.submit(self._run, batch)))

    def _full(self) -> bool:
        return len(self.in_flight) >= self.workers

    def close(self) -> float:
        """Wait for the calls still running (their results are dropped); the pool's CPU."""
        for _, future in self.in_flight:
            future.cancel()
        self.executor.shutdown(wait=True)
        return self.cpu.value


def _drain(q: queue.Queue[Any]) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
