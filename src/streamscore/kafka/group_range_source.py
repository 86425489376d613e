"""A replay worker's share of the input: group-assigned partitions, each read up to its end.

Workers of one replay (:mod:`streamscore.replay_group`) subscribe to IN in one consumer group,
as ``tail`` does (:class:`~streamscore.kafka.group_source.GroupSource`: the revocation
barrier, records of lost partitions dropped), with an eager assignor. What this source
adds is the replay's end: each partition the group assigns is read from its committed offset
(the snapshot's first transaction committed every partition's start) up to its end offset in
the snapshot, then paused, and its end offset itself is committed (in a transaction of
offsets only when no record was left to carry it). So the replay is complete exactly when
every partition's committed offset has reached its end, which every worker can read. As in
:class:`~streamscore.kafka.source.PartitionRangeSource`, the end is judged by position:
markers and aborted records occupy offsets a read_committed consumer never returns.

Until :meth:`start` is given the snapshot, assigned partitions stay paused (the worker is a
member, so it may own partition 0 and take the snapshot, but reads nothing). After that the
source runs until every partition of the snapshot is committed at its end (checked every
``check_interval_s`` once this worker has nothing left to read) or it is stopped. A worker
whose partitions are done therefore stays in the group, and a dead peer's partitions can
move to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping

from streamscore.errors import KafkaError
from streamscore.kafka.client import CommittedOffset, Consumer, KafkaRecord
from streamscore.kafka.codec import JsonDecoder
from streamscore.kafka.group_source import IDLE_POLL_S, GroupProgress, GroupSource
from streamscore.kafka.offsets import EndOffsets
from streamscore.kafka.sink import KafkaBatch
from streamscore.kafka.source import DEFAULT_MAX_WAIT_S, UNREACHABLE_CONNECT_TIMEOUTS
from streamscore.pipeline import SourceBatch

CHECK_INTERVAL_S = 0.5  # how often a worker with nothing left to read asks if all are done
CHECK_FAILURES = 3  # completion checks that may fail in a row before the run fails
STALL_REPORT_S = 60.0  # waiting on peers' partitions that long without progress is reported


class GroupRangeSource(GroupSource):
    """Batches of up to ``batch_size`` records of the partitions the group assigns, each up to
    its end in the snapshot; see the module docstring."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        decoder: JsonDecoder,
        progress: GroupProgress,
        stopped: threading.Event,
        *,
        batch_size: int,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        check_interval_s: float = CHECK_INTERVAL_S,
        committed: Callable[[list[int]], Mapping[int, CommittedOffset]] | None = None,
        pending_wait_s: float = 0.0,
        on_change: Callable[[str, list[int]], None] = lambda how, partitions: None,
        on_wait: Callable[[list[int], float], None] = lambda partitions, stalled_s: None,
        stall_report_s: float = STALL_REPORT_S,
    ) -> None:
        """``on_wait(partitions, stalled_s)`` hears which partitions of the snapshot are not
        committed at their end yet, once this worker has nothing left to read: when it starts
        waiting (``stalled_s`` 0), and when their committed offsets have not moved for
        ``stall_report_s`` (a peer stopped or cut off), again every ``stall_report_s``.
        ``committed(partitions)`` reads the committed offsets for the completion check;
        better not as a read_committed consumer (this one) does: that read waits while any
        peer's transaction holds offsets, and peers commit batch after batch.
        ``pending_wait_s``: how long a stable read of the owned partitions may keep failing
        (a dead peer's transaction holding their offsets until the broker rolls it back)."""
        super().__init__(
            consumer,
            topic,
            decoder.decode,
            progress,
            stopped,
            max_batch=batch_size,
            max_wait_ms=max(1, int(max_wait_s * 1000)),
            on_change=on_change,
            fence_on_revoke=True,
        )
        self.snapshot: EndOffsets | None = None
        self.remaining: set[int] = set()  # owned partitions not read to their end yet
        self.complete = False  # every partition of the snapshot is committed at its end
        self.check_interval_s = check_interval_s
        self.pending_wait_s = pending_wait_s
        self.committed = committed or (lambda partitions: consumer.committed(topic, partitions))
        self.unreachable_timeout_s = (
            UNREACHABLE_CONNECT_TIMEOUTS * consumer.settings.connect_timeout_s
        )
        self._next: dict[int, int] = {}  # next offset per partition of the batch collected
        self._position: dict[int, int] = {}  # next offset handed on, per owned partition
        self._last_check = 0.0
        self._last_progress = time.monotonic()
        self._check_failures = 0
        self._paused = True  # until start(): partitions assigned meanwhile are paused
        self.on_wait = on_wait
        self.stall_report_s = stall_report_s
        self._waiting: dict[int, int] | None = None  # peers' unfinished partitions -> offset
        self._waiting_since = 0.0  # when they last moved
        self._rebalancing = False  # partitions revoked, the new assignment not here yet

    # --- before the snapshot -----------------------------------------------------------------

    def serve(self) -> None:
        """Before :meth:`start`: poll once (partitions stay paused), so the group's callbacks
        run and this member joins and keeps its membership."""
        self.idle()

    def idle(self) -> None:
        self._consume(1)

    def _consume(self, count: int) -> tuple[list[KafkaRecord], dict[int, int]]:
        return self._poll(count, IDLE_POLL_S)

    def start(self, snapshot: EndOffsets) -> None:
        """Read the owned partitions, from their committed offsets, up to ``snapshot``."""
        self.snapshot = snapshot
        self.rewind()
        super().resume()

    # --- the batches -------------------------------------------------------------------------

    def batches(self) -> Iterator[SourceBatch]:
        assert self.snapshot is not None, "start() first"
        while not self.stopped.is_set() and not self._halted.is_set():
            yield self._range_batch(self._collect_range())
            if not self.remaining and self._replay_complete():
                self.complete = True
                return

    def rewind(self) -> None:
        """Read every owned partition again from its committed offset (after an aborted
        batch), finished ones included: their end may not have been committed.

        The offsets are read as stable, so a partition just taken over from a worker that
        died inside a transaction is read once the broker rolled that back (up to
        ``pending_wait_s``), not from an offset that transaction may still commit.
        """
        deadline = time.monotonic() + self.pending_wait_s
        while True:
            try:
                super().rewind()
                break
            except KafkaError:
                if time.monotonic() >= deadline:
                    raise
        self._next.clear()
        self._position.clear()
        owned = sorted(self.progress.owned)
        self.remaining = set(owned)
        if owned and not self._paused:
            self.consumer.resume(self.topic, owned)

    def _collect_range(self) -> list[KafkaRecord]:
        """One micro-batch: up to max_batch records of the owned partitions below their ends,
        or what came within max_wait of the first; ends reached meanwhile are in ``_next``."""
        snapshot = self.snapshot
        assert snapshot is not None
        started = time.monotonic()
        while not self.stopped.is_set() and not self._halted.is_set():
            room = self.max_batch - len(self._pending)
            if room <= 0:
                break
            # Callbacks run inside consume(): a revocation drops _pending/_next of its partitions.
            got, at_end = self._consume(room if self.remaining else 1)
            for record in got:
                partition, offset = record.partition(), record.offset()
                if partition not in self.remaining:
                    continue  # fetched before its partition was paused, or finished
                end = snapshot.ranges[partition].end
                if offset >= end:  # appended after the snapshot
                    self._finish(partition)
                    continue
                self._pending.append(record)
                self._next[partition] = offset + 1
                if offset + 1 >= end:
                    self._finish(partition)
            for partition, offset in at_end.items():
                if partition in self.remaining and offset >= snapshot.ranges[partition].end:
                    self._finish(partition)
            if not got and self.remaining:
                positions = self.consumer.positions(self.topic, sorted(self.remaining))
                for partition, offset in positions.items():
                    if offset >= snapshot.ranges[partition].end:
                        self._finish(partition)
            now = time.monotonic()
            if got or self._next or not self.remaining:
                self._last_progress = now
            else:
                self._give_up_if_unreachable(now)
            if not self._pending and not self._next and (not got or not self.remaining):
                break  # a quiet moment (or nothing left to read): let the pipeline tick
            if (self._pending or self._next) and (
                now - started >= self.max_wait_s or not self.remaining
            ):
                break
        return self._take_pending()

    def _give_up_if_unreachable(self, now: float) -> None:
        """Partitions left to read, nothing read for 3 connect timeouts, and the client
        reported the cluster unreachable meanwhile: the broker is gone (as for a replay)."""
        waited = now - self._last_progress
        if waited <= self.unreachable_timeout_s:
            return
        reported = self.consumer.unreachable_at
        if reported is not None and reported >= self._last_progress - self.unreachable_timeout_s:
            raise self.consumer.unreachable(f"reading topic '{self.topic}'", round(waited, 1))

    def _finish(self, partition: int) -> None:
        """Everything below the end offset is read: commit the end, stop fetching."""
        assert self.snapshot is not None
        self.remaining.discard(partition)
        self._next[partition] = self.snapshot.ranges[partition].end
        self.consumer.pause(self.topic, [partition])

    def _range_batch(self, records: list[KafkaRecord]) -> SourceBatch:
        next_offsets, self._next = self._next, {}
        if not next_offsets:  # idle: the pipeline ticks (rows shaped for the scorer)
            idle = self.decode([])
            return SourceBatch(idle.rows, KafkaBatch(self.topic, [], idle, {}))
        snapshot = self.snapshot
        assert snapshot is not None
        first: dict[int, int] = {}
        for record in records:
            first.setdefault(record.partition(), record.offset())
        commit: dict[int, tuple[int, str]] = {}
        advanced: dict[int, int] = {}
        for partition, offset in next_offsets.items():
            start = self._position.get(partition, first.get(partition, offset))
            advanced[partition] = max(0, offset - start)
            self._position[partition] = offset
            self._first.setdefault(partition, first.get(partition, offset))
            commit[partition] = (offset, snapshot.metadata(partition))
        decoded = self.decode([record.value() for record in records])
        self.progress.yielded()
        context = KafkaBatch(self.topic, records, decoded, commit, advanced)
        return SourceBatch(decoded.rows, context)

    def _replay_complete(self) -> bool:
        """Whether every partition of the snapshot is committed at its end (asked at most
        every ``check_interval_s``; an offset still pending in a peer's transaction does not
        count: done means committed)."""
        snapshot = self.snapshot
        assert snapshot is not None
        now = time.monotonic()
        if now - self._last_check < self.check_interval_s:
            return False
        self._last_check = now
        try:
            committed = self.committed(sorted(snapshot.ranges))
        except KafkaError:
            self._check_failures += 1
            if self._check_failures >= CHECK_FAILURES:
                raise
            return False
        self._check_failures = 0
        waiting = {
            p: committed[p].offset if p in committed else -1
            for p, r in snapshot.ranges.items()
            if p not in committed or committed[p].offset < r.end
        }
        if waiting:
            self._report_wait(waiting, now)
        return not waiting

    def _report_wait(self, waiting: dict[int, int], now: float) -> None:
        if self._rebalancing:  # nothing to read only until the new assignment comes
            return
        if self._waiting is None:
            self.on_wait(sorted(waiting), 0.0)
            self._waiting_since = now
        elif waiting != self._waiting:
            self._waiting_since = now  # progress
        elif now - self._waiting_since >= self.stall_report_s:
            self.on_wait(sorted(waiting), now - self._waiting_since)
            self._waiting_since = now  # said again after another stall_report_s
        self._waiting = waiting

    # --- group membership --------------------------------------------------------------------

    def _on_assign(self, partitions: list[int]) -> None:
        if self.snapshot is not None:
            self.remaining.update(partitions)
            if partitions:
                self._waiting = None  # reading again: a later wait is reported afresh
        self._rebalancing = False
        if not self._paused and partitions:
            # A partition this member read to its end before is paused still (librdkafka
            # keeps the flag across assignments): it must be read again up to its end.
            self.consumer.resume(self.topic, partitions)
        super()._on_assign(partitions)

    def _drop(self, partitions: list[int]) -> None:
        self._rebalancing = True  # revoked or lost: an (eager) assignment follows
        super()._drop(partitions)
        for partition in partitions:
            self._next.pop(partition, None)
            self._position.pop(partition, None)
            self.remaining.discard(partition)
