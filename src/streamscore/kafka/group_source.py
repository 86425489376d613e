"""Read a live topic in a consumer group, in micro-batches, with a barrier on revocation.

The group assigns this process its partitions (cooperative-sticky: a rebalance moves only
the partitions it must). A batch closes at ``max_batch`` records or ``max_wait_ms`` after its
first record; when nothing came for a moment the source yields an empty batch, so the
pipeline still ticks (status, commits of acknowledged offsets) and a stop is noticed.

Revocation barrier: when the group takes partitions away, records collected but not yet
handed on are dropped (nothing of them was written or committed: their next owner reads
them), and the callback waits until the sink has written every batch already handed on and
their offsets are committed (:class:`GroupProgress`). Only then may the partitions move, so
a record is never scored by two members unless a commit failed. With ``fence_on_revoke``
(exactly-once) the batches handed on are rolled back instead: during the rebalance the
coordinator holds a transactional offset commit ("rebalance in progress") until this
callback returns, and librdkafka answers ``group_metadata()`` on another thread only then,
so a barrier waiting for such a commit waits for itself. The writer aborts them (it commits
with :meth:`GroupSource.group_metadata`, read on the polling thread, and asks
:meth:`GroupProgress.may_commit` first), the callback waits briefly for that, and the
partitions kept are read again from their committed offsets. Exactly once does not depend on
that wait: a commit of the old generation is refused once the partitions moved, and one the
coordinator accepted before is pending, which the next owner's stable offset read
(read_committed, KIP-447) waits for. Partitions *lost* (the
group went on without us) are dropped at once: another member may own them already, so
every batch handed on before the loss is fenced (:meth:`GroupProgress.may_commit` is False
while the writer holds one): a sink must abort it rather than commit it with the generation
the member gets when it rejoins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from streamscore.kafka.client import Consumer, KafkaRecord
from streamscore.kafka.codec import DecodedBatch
from streamscore.kafka.sink import KafkaBatch
from streamscore.pipeline import Source, SourceBatch

IDLE_POLL_S = 0.1  # consume() is not interruptible by signals: keep each wait short
BARRIER_TIMEOUT_S = 60.0  # a revocation waits this long at most for the writer

_EMPTY_ROWS = pa.RecordBatch.from_pydict({})
_NO_ROWS = np.empty(0, dtype=np.int64)


class GroupProgress:
    """What the source handed on against what the sink wrote: the revocation barrier.

    The source counts each batch of records it yields, the sink each one it wrote (and,
    exactly-once, committed); :meth:`drain` waits until they meet, then calls ``settle``
    (at-least-once: wait for acknowledgements and commit synchronously). :meth:`abandon`
    (the sink failed) releases any wait.
    """

    def __init__(self, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
        self.settle: Callable[[], None] = lambda: None
        self.timeout_s = timeout_s
        self.owned: set[int] = set()  # partitions assigned to this member now
        self._cond = threading.Condition()
        self._yielded = 0
        self._written = 0
        self._fenced_through = 0  # batches handed on before partitions were lost
        self._abandoned = False

    def yielded(self) -> None:
        with self._cond:
            self._yielded += 1

    def written(self) -> None:
        with self._cond:
            self._written += 1
            self._cond.notify_all()

    def lost(self) -> None:
        """Partitions were lost: no batch handed on so far may be committed any more."""
        with self._cond:
            self._fenced_through = self._yielded

    def may_commit(self) -> bool:
        """Whether the batch the writer is about to commit was handed on after the last loss
        (batches are written in the order they were handed on)."""
        with self._cond:
            return self._written + 1 > self._fenced_through

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._cond.notify_all()

    def wrote_any(self) -> bool:
        """Whether the writer wrote a batch since :meth:`restart`."""
        with self._cond:
            return self._written > 0

    def restart(self) -> None:
        """Before the pipeline runs again (after a failed batch)."""
        with self._cond:
            self._yielded = self._written = self._fenced_through = 0
            self._abandoned = False

    def drain(self) -> bool:
        """Wait until every batch handed on is written, then settle; False if abandoned."""
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._abandoned or self._written >= self._yielded, self.timeout_s
            )
            if not done or self._abandoned:
                return False
        self.settle()
        return True


class GroupSource(Source):
    """Micro-batches of ``topic`` as consumer group member; runs until ``stop`` is set.

    ``decode`` turns a batch's values into rows (the serving models' decoder);
    ``on_change(how, partitions)`` hears of assignments, revocations and losses.
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        decode: Callable[[list[bytes | None]], DecodedBatch],
        progress: GroupProgress,
        stopped: threading.Event,
        *,
        max_batch: int,
        max_wait_ms: int,
        on_change: Callable[[str, list[int]], None] = lambda how, partitions: None,
        fence_on_revoke: bool = False,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.decode = decode
        self.progress = progress
        self.stopped = stopped  # the run is asked to stop: finish what was collected
        self._halted = threading.Event()  # the pipeline failed: return at once
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_change = on_change
        self._pending: list[KafkaRecord] = []
        self._first: dict[int, int] = {}  # first offset handed on per partition since assigned
        self._closed_at = 0.0  # when the last micro-batch closed (monotonic)
        self._paused = False  # consumption paused (a model server outage)
        self.fence_on_revoke = fence_on_revoke  # exactly-once: roll back, not commit (above)
        self._metadata: Any = None  # the group metadata as of the last poll

    def subscribe(self) -> None:
        self.consumer.subscribe(
            self.topic, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def batches(self) -> Iterator[SourceBatch]:
        while not self.stopped.is_set() and not self._halted.is_set():
            yield self._batch(self._collect())
        if self._pending and not self._halted.is_set():  # collected when the stop came
            yield self._batch(self._take_pending())

    def stop(self) -> None:
        """The pipeline stopped early (a batch could not be written): stop reading."""
        self._halted.set()

    def rewind(self) -> None:
        """After a batch could not be written: read every owned partition again from its
        committed offset (or, before any commit, the first offset handed on)."""
        self._halted.clear()
        self._pending = []
        owned = sorted(self.progress.owned)
        if not owned:
            return
        committed = self.consumer.committed(self.topic, owned)
        offsets = {p: committed[p].offset for p in owned if p in committed}
        for partition in owned:
            if partition not in offsets and partition in self._first:
                offsets[partition] = self._first[partition]
        self.consumer.seek(self.topic, offsets)

    def pause(self) -> None:
        """Between pipeline runs (a model server is away): stop fetching every owned
        partition, and those assigned meanwhile, until :meth:`resume`. Records fetched before
        are dropped: :meth:`rewind` reads them again."""
        self._paused = True
        self._pending = []
        owned = sorted(self.progress.owned)
        if owned:
            self.consumer.pause(self.topic, owned)

    def idle(self) -> None:
        """While paused: poll once, so the group's callbacks run and membership is kept."""
        self._poll(1, IDLE_POLL_S)

    def group_metadata(self) -> Any:
        """The group metadata as of the last poll, for the writer's commits: read on this
        (the polling) thread, outside rebalance callbacks. A batch committed with it after a
        rebalance is refused (ILLEGAL_GENERATION) and read again: never committed twice."""
        return self._metadata if self._metadata is not None else self.consumer.group_metadata()

    def _poll(self, count: int, timeout_s: float) -> tuple[list[KafkaRecord], dict[int, int]]:
        found = self.consumer.consume(count, timeout_s)
        self._metadata = self.consumer.group_metadata()  # callbacks are over: answered at once
        return found

    def resume(self) -> None:
        """Fetch the owned partitions again after :meth:`pause`."""
        self._paused = False
        self._pending = []
        owned = sorted(self.progress.owned)
        if owned:
            self.consumer.resume(self.topic, owned)

    # --- one micro-batch ---------------------------------------------------------------------

    def _batch(self, records: list[KafkaRecord]) -> SourceBatch:
        if not records:
            idle = DecodedBatch(_EMPTY_ROWS, _NO_ROWS, None, [])
            return SourceBatch(_EMPTY_ROWS, KafkaBatch(self.topic, [], idle, {}))
        commit: dict[int, tuple[int, str]] = {}
        for record in records:
            partition, offset = record.partition(), record.offset()
            self._first.setdefault(partition, offset)
            commit[partition] = (offset + 1, "")
        decoded = self.decode([record.value() for record in records])
        self.progress.yielded()
        return SourceBatch(decoded.rows, KafkaBatch(self.topic, records, decoded, commit))

    def _take_pending(self) -> list[KafkaRecord]:
        records, self._pending = self._pending, []
        return records

    def _collect(self) -> list[KafkaRecord]:
        """One micro-batch: up to max_batch records, or what came within max_wait of the
        first. Empty when nothing came for a moment.

        A first record that was already waiting came after the previous batch closed, so its
        wait counts from then: no record waits for more than about max_wait plus one batch.
        """
        deadline: float | None = None
        while not self.stopped.is_set() and not self._halted.is_set():
            room = self.max_batch - len(self._pending)
            if room <= 0:
                break
            final = False
            if deadline is None:  # consume() waits for all it asks for: ask for one first
                asked = time.monotonic()
                got, _ = self._poll(1, IDLE_POLL_S)
                arrived = time.monotonic()
                if arrived - asked < 0.001:  # it was waiting already
                    arrived = self._closed_at
            else:
                wait = deadline - time.monotonic()
                final = wait < 0.001  # librdkafka counts whole milliseconds
                got, _ = self._poll(room, 0 if final else min(wait, IDLE_POLL_S))
            self._pending.extend(got)  # a rebalance inside consume() may have taken the rest
            if not self._pending:
                if not got:
                    return []
                continue
            if deadline is None:
                deadline = arrived + self.max_wait_s
            elif final:
                break
        self._closed_at = time.monotonic()
        return self._take_pending()

    # --- group membership (called inside consume(), on the reader thread) --------------------

    def _on_assign(self, partitions: list[int]) -> None:
        self.progress.owned.update(partitions)
        if self._paused:  # through a model server outage, new partitions wait too
            self.consumer.pause(self.topic, partitions)
        self.on_change("assigned", partitions)

    def _on_revoke(self, partitions: list[int]) -> None:
        """The barrier: what was handed on is written and committed before they move (with
        ``fence_on_revoke``: rolled back, see the module docstring)."""
        self._drop(partitions)
        if self.fence_on_revoke:
            self.progress.lost()
        self.progress.drain()
        self._forget(partitions, "revoked")

    def _on_lost(self, partitions: list[int]) -> None:
        """Another member may own these already: drop their records uncommitted."""
        self._drop(partitions)
        self.progress.lost()
        self._forget(partitions, "lost")

    def _drop(self, partitions: list[int]) -> None:
        gone = set(partitions)
        self._pending = [r for r in self._pending if r.partition() not in gone]

    def _forget(self, partitions: list[int], how: str) -> None:
        self.progress.owned.difference_update(partitions)
        for partition in partitions:
            self._first.pop(partition, None)
        self.on_change(how, partitions)
