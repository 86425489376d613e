"""``streamscore replay --member NAME``: one worker of a replay shared by a consumer group.

Several processes (on one machine or many) run the same replay command with the same
``--group`` and each its own ``--member``; the group shares IN's partitions among them, and
together they write what one process would: each input offset below the one snapshot of end
offsets, exactly once, into OUT (or the dead letters). How a worker goes:

1. As a single replay does (:mod:`streamscore.replay`): OUT and the dead-letter topic are
   prepared; the transactional producer starts with the worker's own fixed transactional id,
   ``GROUP.NAME``, so a restarted worker fences its killed predecessor and the broker aborts
   the transaction it left open at once; what a broker crash left hanging on the outputs is
   aborted (:mod:`streamscore.kafka.hanging`; a partition may also hold a live peer's open
   transaction, which ends by itself, so the worker waits up to the transaction timeout).
2. If the group's committed offsets already hold a snapshot and every partition is committed
   at its end, the replay is complete: the worker says "already complete" and stops.
3. It joins the group as static member ``NAME`` (``group.instance.id``: a restarted worker
   takes its place back at once, without a rebalance), with an eager assignor (``range``),
   every partition paused until the snapshot is agreed on. Not cooperative-sticky: a static
   member that restarts in a stable group gets its last assignment back and no rebalance
   follows, so partitions a cooperative first round had taken from a member killed before
   the second round would stay unowned, and the replay would never finish. An eager round
   assigns every partition at once.
4. **One snapshot.** The snapshot is taken by the member that owns partition 0, and only by
   it; the others (staying in the group) read the committed offsets again until a snapshot
   is there. Why exactly one snapshot takes effect, even when workers start together:

   * the owner of partition 0 reads the committed offsets, takes the snapshot and commits
     every partition's start with it in one transaction whose offsets carry the member's
     group metadata (KIP-447), all on the thread that polls the consumer: no rebalance
     callback runs in between, so partition 0 cannot move to a live peer before that
     commit is in (a rebalance moves a partition only after its owner released it in a
     callback, and the next owner is assigned it in a later generation);
   * a member that lost partition 0 without knowing it (expelled while paused, say) commits
     with a generation the coordinator no longer accepts (ILLEGAL_GENERATION, UNKNOWN_MEMBER
     or FENCED_INSTANCE_ID): its transaction is aborted, its snapshot never becomes visible,
     and it goes back to reading;
   * offsets are read as *stable* (read_committed consumers send require_stable, KIP-447):
     an offset commit still pending in an open transaction makes the broker answer "unstable"
     and the read is retried until that transaction ends, so a member never reads "no
     snapshot" while one is being committed. The next owner of partition 0 therefore sees
     the committed snapshot, or none because the commit was aborted.

   A snapshot under which nothing was written and that another model or other options
   recorded is replaced by the owner of partition 0, as a single replay does; one whose
   partitions moved already is refused (exit 2).
5. Every owned partition is read from its committed offset up to its end
   (:class:`~streamscore.kafka.group_range_source.GroupRangeSource`); each batch is one
   transaction holding outputs, dead letters and offsets, sent with the group metadata of
   the last poll (KIP-447), so a worker fenced by a rebalance cannot commit. When the group
   revokes or loses partitions, every batch already handed on is rolled back, not committed
   (the revocation waits briefly for the writer to abort it; committing instead can deadlock
   with the rebalance, see :meth:`GroupRangeSource._on_revoke`), and the worker reads the
   partitions it kept again from their committed offsets; likewise after any aborted batch
   (a broker rolling back a slow transaction). A commit that slipped through with the old
   generation before the partitions moved is pending, and their next owner's stable offset
   read waits for it: never read twice, never skipped.
6. A worker whose partitions are all read up to their ends stays in the group, saying which
   partitions it waits for (and warning when they make no progress for a minute), and stops
   (exit 0) once every partition of the snapshot is committed at its end: until then a dead
   peer's partitions can still move to it (after ``session.timeout.ms``, 45 s unless set
   with -X, when that peer does not come back).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from streamscore.errors import KafkaError, ProducerFenced, TransactionAborted
from streamscore.kafka.client import Admin, Consumer, Producer
from streamscore.kafka.codec import JsonDecoder
from streamscore.kafka.dead_letter import DeadLetters
from streamscore.kafka.group_range_source import GroupRangeSource
from streamscore.kafka.group_source import GroupProgress
from streamscore.kafka.hanging import abort_hanging_transactions
from streamscore.kafka.headers import HeaderStamp
from streamscore.kafka.offsets import EndOffsets
from streamscore.kafka.sink import GroupExactlyOnce, KafkaBatch, KafkaSink
from streamscore.kafka.topics import OutputTopics
from streamscore.model.base import Model
from streamscore.pipeline import SourceBatch, run_pipeline
from streamscore.replay import ReplayRun, ReplaySummary, fewer_gc_pauses
from streamscore.scoring import ScoredBatch, Scorer

# Defaults for a worker's consumer; a -X property of the same name wins.
WORKER_CONSUMER_DEFAULTS: dict[str, Any] = {
    # Eager, not cooperative-sticky: see the module docstring, step 3.
    "partition.assignment.strategy": "range",
    # Members hear of a rebalance at their next heartbeat (3 s by default), and nobody reads
    # meanwhile.
    "heartbeat.interval.ms": 1000,
}
DEFAULT_TXN_TIMEOUT_MS = 60_000  # librdkafka's transaction.timeout.ms
REVOKE_WAIT_S = 2.0  # how long a revocation waits for the writer to abort (see source)
MAX_REWINDS = 10  # aborted batches in a row, none written between, before the worker gives up
SNAPSHOT_POLL_S = 0.2  # how often a member waiting for the snapshot reads the offsets


def transactional_id(group: str, member: str) -> str:
    """A worker's fixed transactional id: its restart fences its killed predecessor."""
    return f"{group}.{member}"


class GroupReplayRun(ReplayRun):
    """One worker of a shared replay; use :func:`streamscore.replay.run_replay` with
    ``options.member`` set."""

    def _attempt(
        self,
        admin: Admin,
        topics: OutputTopics,
        model: Model,
        scorer: Scorer,
        decoder: JsonDecoder,
        summary: ReplaySummary,
    ) -> None:
        o = self.options
        assert o.member is not None
        partitions = list(range(topics.partitions))
        with (
            Producer(
                o.kafka,
                transactional_id=transactional_id(o.group_id, o.member),
                defaults=topics.producer_defaults(),
            ) as producer,
            # Not a member: reads the offsets as committed, without waiting for the offsets
            # peers' open transactions hold (a read_committed consumer would: KIP-447).
            Consumer(o.kafka, o.group_id, read_committed=False) as reader,
            Consumer(
                o.kafka,
                o.group_id,
                config={"group.instance.id": o.member},
                defaults=WORKER_CONSUMER_DEFAULTS,
            ) as consumer,
        ):
            producer.init_transactions()  # fences our predecessor, aborts its transaction
            self._abort_hanging_of_worker(admin, producer, reader, topics, partitions)
            committed = reader.committed(o.input_topic, partitions)
            found = EndOffsets.from_committed(committed, o.group_id)
            if found is not None and self._is_complete(found, found.positions(committed)):
                self._check_identity(found, model)
                self._finished_already(found, summary)
                return
            progress = GroupProgress(timeout_s=REVOKE_WAIT_S)
            source = GroupRangeSource(
                consumer,
                o.input_topic,
                decoder,
                progress,
                threading.Event(),
                batch_size=o.scoring.batch_size,
                committed=lambda partitions: reader.committed(o.input_topic, partitions),
                pending_wait_s=self._pending_wait_s(),
                on_change=self._on_change,
                on_wait=self._on_wait,
            )
            delivery = GroupExactlyOnce(
                producer, consumer, may_commit=progress.may_commit, metadata=source.group_metadata
            )
            source.subscribe()
            snapshot, positions, taken = self._agree_on_snapshot(
                admin, source, consumer, reader, partitions, model, delivery
            )
            summary.resumed = not taken
            summary.start_offsets = {p: r.start for p, r in snapshot.ranges.items()}
            summary.end_offsets = {p: r.end for p, r in snapshot.ranges.items()}
            self._announce(snapshot, positions, summary.resumed)
            untouched = all(positions[p] == r.start for p, r in snapshot.ranges.items())
            source.start(snapshot)
            sink = KafkaSink(
                producer,
                delivery,
                o.output_topic,
                DeadLetters(
                    producer,
                    o.dead_letter_topic,
                    same_partitions=topics.dead_letters_same_partitions,
                ),
                HeaderStamp(model.ref, o.input_topic),
                progress=progress,
            )
            try:
                self._serve(source, scorer, sink, progress, summary, check_first=untouched)
            finally:
                self._count(sink, summary)

    # --- before reading ------------------------------------------------------------------------

    def _abort_hanging_of_worker(
        self,
        admin: Admin,
        producer: Producer,
        reader: Consumer,
        topics: OutputTopics,
        partitions: list[int],
    ) -> None:
        """As a single replay, with the group metadata of a non-member (so the aborted offsets
        need no generation) and, for peers' open transactions, up to the transaction timeout."""
        o = self.options
        wait_s = self._pending_wait_s()
        aborted = abort_hanging_transactions(
            admin, producer, topics.output_partitions, o.input_topic,
            {p: (0, "") for p in partitions}, reader.group_metadata(), wait_s=wait_s,
        )  # fmt: skip
        for stuck in aborted:  # a peer's transaction in progress, or ours a crash left open
            self.reporter.event(
                {
                    "event": "info",
                    "message": f"a transaction was open on {stuck} (offsets {stuck.stable}-"
                    f"{stuck.end - 1}): a peer's, or one a crash left (aborted); it ended",
                }
            )

    def _pending_wait_s(self) -> float:
        """How long a dead peer's transaction may hold offsets or outputs: until the broker
        rolls it back (``transaction.timeout.ms``), plus a connect timeout."""
        o = self.options
        timeout_ms = dict(o.kafka.properties).get("transaction.timeout.ms", DEFAULT_TXN_TIMEOUT_MS)
        return o.kafka.connect_timeout_s + float(timeout_ms) / 1000

    def _agree_on_snapshot(
        self,
        admin: Admin,
        source: GroupRangeSource,
        consumer: Consumer,
        reader: Consumer,
        partitions: list[int],
        model: Model,
        delivery: GroupExactlyOnce,
    ) -> tuple[EndOffsets, dict[int, int], bool]:
        """The one snapshot of this replay (see the module docstring, step 4): its ranges,
        the committed positions, and whether this member took it."""
        o = self.options
        identity = self.identity(model)
        waiting_said = False
        while True:
            source.serve()  # joins, keeps the membership, runs the group's callbacks
            committed = reader.committed(o.input_topic, partitions)
            found = EndOffsets.from_committed(committed, o.group_id)
            owner = 0 in source.progress.owned
            if owner and self._pending_snapshot_landed(consumer, found):
                continue  # a snapshot commit pending until now: read everything again
            if found is not None:
                positions = found.positions(committed)
                untouched = all(positions[p] == r.start for p, r in found.ranges.items())
                if found.identity == identity or not untouched:
                    self._check_identity(found, model)
                    return found, positions, False
            if owner:
                if found is None and not o.allow_nonempty_output:
                    self._refuse_nonempty_output(admin)
                try:
                    taken = self._take_snapshot(admin, partitions, model, delivery)
                except TransactionAborted as exc:  # fenced: partition 0 moved meanwhile
                    self.reporter.event(
                        {"event": "warning", "message": f"{exc.one_line()}; reading again"}
                    )
                    continue
                return taken, {p: r.start for p, r in taken.ranges.items()}, True
            if not waiting_said:
                waiting_said = True
                self.reporter.event(
                    {
                        "event": "info",
                        "message": f"worker '{o.member}' waits for the member that owns "
                        f"partition 0 of '{o.input_topic}' to take the snapshot",
                        "member": o.member,
                    }
                )
            source.stopped.wait(SNAPSHOT_POLL_S)

    def _pending_snapshot_landed(self, consumer: Consumer, found: EndOffsets | None) -> bool:
        """Whether partition 0's *stable* offset names another snapshot than the committed
        offsets just read: a snapshot commit (a former owner's) was still pending then.

        Only the owner of partition 0 asks, and only for partition 0: no peer commits there,
        so the read waits at most for a transaction of a former owner, never starves behind
        peers' commits of their own partitions (which a stable read of every partition
        would, with peers committing batch after batch).
        """
        o = self.options
        deadline = time.monotonic() + self._pending_wait_s()
        while True:  # a former owner that died inside a transaction holds it until rolled back
            try:
                offsets = consumer.committed(o.input_topic, [0])
                break
            except KafkaError:
                if time.monotonic() >= deadline:
                    raise
        stable = EndOffsets.from_committed(offsets, o.group_id)
        stable_run = stable.run_id if stable is not None else None
        return stable_run != (found.run_id if found is not None else None)

    def _is_complete(self, snapshot: EndOffsets, positions: dict[int, int]) -> bool:
        return all(positions[p] >= r.end for p, r in snapshot.ranges.items())

    def _finished_already(self, snapshot: EndOffsets, summary: ReplaySummary) -> None:
        summary.resumed = summary.complete = True
        summary.start_offsets = {p: r.start for p, r in snapshot.ranges.items()}
        summary.end_offsets = {p: r.end for p, r in snapshot.ranges.items()}
        self._announce(snapshot, {p: r.end for p, r in snapshot.ranges.items()}, True)

    # --- reading -----------------------------------------------------------------------------

    def _serve(
        self,
        source: GroupRangeSource,
        scorer: Scorer,
        sink: KafkaSink,
        progress: GroupProgress,
        summary: ReplaySummary,
        *,
        check_first: bool,
    ) -> None:
        """Run the pipeline until the replay is complete; after an aborted batch (a rebalance,
        lost partitions), read the owned partitions again from their committed offsets."""
        on_progress = self._progress(check_first=check_first)
        read: set[int] = set()

        def on_batch(batch: SourceBatch, scored: ScoredBatch) -> None:
            on_progress(batch, scored)
            context: KafkaBatch = batch.context
            read.update(record.partition() for record in context.records)

        rewinds = 0
        try:
            while True:
                progress.restart()
                try:
                    with fewer_gc_pauses():
                        run_pipeline(source, scorer, sink, on_batch=on_batch)
                    return
                except ProducerFenced:
                    raise
                except TransactionAborted as exc:
                    rewinds = rewinds + 1 if not progress.wrote_any() else 1
                    if rewinds > MAX_REWINDS or sink.producer.fatal:
                        raise  # a producer the broker fenced (timed out) starts afresh
                    self.reporter.event(
                        {"event": "warning", "message": f"{exc.one_line()}; reading again"}
                    )
                    source.rewind()
        finally:
            summary.partitions_read = sorted(read)

    def _count(self, sink: KafkaSink, summary: ReplaySummary) -> None:
        counts = sink.counts
        summary.records_read += counts.records
        summary.records_scored += counts.scored
        summary.records_dead_lettered += counts.dead_lettered
        for kind, count in counts.dead_letter_kinds.items():
            summary.dead_letter_kinds[kind] = summary.dead_letter_kinds.get(kind, 0) + count

    def _on_change(self, how: str, partitions: list[int]) -> None:
        if not partitions:  # a rebalance that gave this member nothing
            return
        self.reporter.event(
            {"event": how, "partitions": sorted(partitions), "member": self.options.member}
        )

    def _on_wait(self, partitions: list[int], stalled_s: float) -> None:
        o = self.options
        if not stalled_s:
            message = (
                f"worker '{o.member}' read its partitions to their ends; it waits until "
                f"partitions {partitions} of '{o.input_topic}' are committed at their ends "
                "by the workers that own them"
            )
        else:
            message = (
                f"partitions {partitions} of '{o.input_topic}' made no progress for "
                f"{stalled_s:.0f}s: check that the workers owning them run (a stopped "
                "worker's partitions move to the others after session.timeout.ms)"
            )
        self.reporter.event(
            {
                "event": "warning" if stalled_s else "info",
                "message": message,
                "member": o.member,
                "waiting_for": partitions,
            }
        )
