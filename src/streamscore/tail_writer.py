"""How ``tail`` writes one micro-batch and commits it.

The records are decoded, split between the published arms (primary, canary), scored, and
written through replay's :class:`~streamscore.kafka.sink.KafkaSink` (same output values,
headers and dead letters), one sink per arm and topic, so every output names the version
that scored it. Shadow scores go to the shadow topic the same way. Then the commit:

* exactly-once (:class:`GroupExactlyOnce`): the batch is one transaction, its offsets sent
  with the consumer group's current generation, so a member that lost its partitions is
  fenced;
* at-least-once: the offsets are committed only once the outputs are acknowledged. The
  acknowledgment of batch N is awaited (:meth:`BatchWriter.settle`) just before batch N+1's
  outputs are produced, so it overlaps N+1's collection and scoring; acknowledged offsets
  are committed asynchronously every COMMIT_INTERVAL_S, and synchronously when asked
  (partitions revoked, stopping).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from streamscore.config import TailOptions
from streamscore.errors import KafkaError
from streamscore.kafka.client import Consumer, KafkaRecord, Producer
from streamscore.kafka.codec import DecodedBatch
from streamscore.kafka.dead_letter import DeadLetters
from streamscore.kafka.headers import HeaderStamp
from streamscore.kafka.sink import Delivery, ExactlyOnce, KafkaBatch, KafkaSink
from streamscore.metrics import TailMetrics
from streamscore.pipeline import SourceBatch
from streamscore.rollout import Arm, Serving, subset
from streamscore.routing import compare_scores
from streamscore.scoring import ScoredBatch

# At-least-once commits acknowledged offsets this often (and when idle, revoked, stopping);
# a crash repeats at most this much work. Fewer commits leave the broker more CPU.
COMMIT_INTERVAL_S = 0.5

_NO_ROWS = np.empty(0, dtype=np.int64)
_EMPTY_ROWS = pa.RecordBatch.from_pydict({})
_NOTHING_SCORED = ScoredBatch(_EMPTY_ROWS, _NO_ROWS, _NO_ROWS, [])


class _Deferred(Delivery):
    """Lets several KafkaSinks write one batch; the writer begins and commits it once."""

    def begin(self) -> None:
        pass

    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> None:
        pass

    def abort(self) -> None:
        pass


class GroupExactlyOnce(ExactlyOnce):
    """Exactly-once in a consumer group: offsets go in with the group's *current* generation."""

    def __init__(self, producer: Producer, consumer: Consumer) -> None:
        super().__init__(producer, None)
        self.consumer = consumer

    def commit(self, topic: str, offsets: Mapping[int, tuple[int, str]]) -> None:
        self.group_metadata = self.consumer.group_metadata()
        super().commit(topic, offsets)


@dataclass
class _Share:
    """One arm's part of a batch: the decoded rows it scored and what came of them."""

    arm: Arm
    rows: np.ndarray  # positions in the decoded batch
    part: DecodedBatch
    scored: ScoredBatch
    seconds: float
    written: int = 0
    dead: int = 0


@dataclass(frozen=True)
class Unacknowledged:
    """At-least-once: a written batch whose offsets wait for its outputs' acknowledgment."""

    first: dict[int, int]  # partition -> first offset (where to read again on failure)
    commit: dict[int, tuple[int, str]]


@dataclass
class WriterCounts:
    """Records of the batches written so far."""

    records_read: int = 0
    records_scored: int = 0
    records_dead_lettered: int = 0
    batches: int = 0


class BatchWriter:
    """Writes and commits ``tail``'s micro-batches; see the module docstring."""

    def __init__(
        self,
        options: TailOptions,
        producer: Producer,
        consumer: Consumer,
        metrics: TailMetrics,
        on_commit_error: Callable[[KafkaError], None],
    ) -> None:
        self.options = options
        self.producer = producer
        self.consumer = consumer
        self.metrics = metrics
        self.on_commit_error = on_commit_error
        self.delivery: Delivery | None = None  # at-least-once: see settle()
        if options.exactly_once:
            self.delivery = GroupExactlyOnce(producer, consumer)
        self.dead_letters = DeadLetters(producer, options.dead_letter_topic, same_partitions=True)
        self.counts = WriterCounts()
        self.unacked: Unacknowledged | None = None
        self._settled: dict[int, tuple[int, str]] = {}  # acknowledged, not yet committed
        self._last_commit = time.monotonic()
        self._sinks: dict[tuple[str, str], KafkaSink] = {}

    # --- one batch ---------------------------------------------------------------------------

    def write(
        self,
        serving: Serving,
        records: list[KafkaRecord],
        first: dict[int, int],
        commit: dict[int, tuple[int, str]],
    ) -> None:
        """Decode, score and produce one batch; exactly-once also commits it here.

        Raises KafkaError when the batch (or, at-least-once, the one before) could not be
        written: the caller reads them again from their first offsets.
        """
        o = self.options
        decoded = serving.decoder.decode([record.value() for record in records])
        shares = [
            self._score(arm, rows, decoded)
            for arm, rows in serving.split(o.input_topic, records, decoded)
        ]
        shadow = None
        if serving.shadow is not None and decoded.rows.num_rows:
            everything = np.arange(decoded.rows.num_rows, dtype=np.int64)
            shadow = self._score(serving.shadow, everything, decoded)
        if self.delivery is None:
            self.settle()  # the previous batch: acknowledged by now, as a rule
        else:
            self.delivery.begin()
        for share in shares:
            self._produce(o.output_topic, share, records, share.scored)
        if shadow is not None:  # shadow scores only: its rejections are not dead letters
            scores_only = ScoredBatch(shadow.scored.scores, shadow.scored.accepted, _NO_ROWS, [])
            self._produce(o.shadow_output_topic, shadow, records, scores_only)
            self._compare(shadow, shares)
        if decoded.failures:
            only_failures = DecodedBatch(_EMPTY_ROWS, _NO_ROWS, None, decoded.failures)
            self._sink(o.output_topic, serving.primary).write(
                SourceBatch(_EMPTY_ROWS, KafkaBatch(o.input_topic, records, only_failures, {})),
                _NOTHING_SCORED,
            )
        stamps = self._account(records, decoded, shares)
        if self.delivery is None:
            self.producer.poll()
            self.unacked = Unacknowledged(first, commit)
        else:
            self.delivery.commit(o.input_topic, commit)
        if len(stamps):  # output time: produced (at-least-once) or committed (exactly-once)
            self.metrics.observe_end_to_end(time.time() - stamps)

    def abort(self) -> None:
        """After a failed write: drop the open transaction (exactly-once)."""
        if self.delivery is not None:
            self.delivery.abort()

    def _score(self, arm: Arm, rows: np.ndarray, decoded: DecodedBatch) -> _Share:
        part = subset(decoded, rows)
        began = time.perf_counter()
        scored = arm.scorer.score(part.rows)
        return _Share(arm, rows, part, scored, time.perf_counter() - began)

    def _sink(self, topic: str, arm: Arm) -> KafkaSink:
        key = (topic, arm.ref.sha256)
        sink = self._sinks.get(key)
        if sink is None:
            stamp = HeaderStamp(arm.ref, self.options.input_topic)
            sink = KafkaSink(self.producer, _Deferred(), topic, self.dead_letters, stamp)
            self._sinks[key] = sink
        return sink

    def _produce(
        self, topic: str, share: _Share, records: list[KafkaRecord], scored: ScoredBatch
    ) -> None:
        """Queue outputs, and dead letters for rejected rows, through replay's KafkaSink."""
        sink = self._sink(topic, share.arm)
        before = (sink.counts.scored, sink.counts.dead_lettered)
        context = KafkaBatch(self.options.input_topic, records, share.part, {})
        sink.write(SourceBatch(share.part.rows, context), scored)
        share.written = sink.counts.scored - before[0]
        share.dead = sink.counts.dead_lettered - before[1]

    def _compare(self, shadow: _Share, shares: list[_Share]) -> None:
        """Shadow agreement with what was published, on the rows both scored."""
        self.metrics.inference.labels(shadow.arm.ref.version).observe(shadow.seconds)
        for share in shares:
            published = share.scored
            on_rows = ScoredBatch(
                published.scores, share.rows[published.accepted], share.rows[published.rejected], []
            )
            agreement = compare_scores(on_rows, shadow.scored)
            self.metrics.observe_shadow(
                agreement.score_diffs, agreement.rows, agreement.label_flips
            )

    def _account(
        self, records: list[KafkaRecord], decoded: DecodedBatch, shares: list[_Share]
    ) -> np.ndarray:
        """Count the batch; return the input timestamps (seconds) of its outputs."""
        m, counts = self.metrics, self.counts
        m.observe_batch(len(records))
        counts.batches += 1
        counts.records_read += len(records)
        stamps: list[int] = []
        for share in shares:
            m.observe_scored(
                share.arm.ref.version, len(share.rows), share.written, share.dead, share.seconds
            )
            counts.records_scored += share.written
            counts.records_dead_lettered += share.dead
            if share.dead:
                m.error("rejected", share.dead)
            for i in share.part.index[share.scored.accepted].tolist():
                kind, stamp = records[i].timestamp()
                if kind and stamp > 0:
                    stamps.append(stamp)
        if decoded.failures:
            m.observe_undecodable(len(decoded.failures))
            counts.records_dead_lettered += len(decoded.failures)
            for failure in decoded.failures:
                m.error(failure.kind)
        return np.asarray(stamps, dtype=np.float64) / 1000

    # --- at-least-once commits ---------------------------------------------------------------

    def settle(self, *, wait_for_commit: bool = False) -> None:
        """At-least-once: wait until the last batch's outputs are acknowledged (raises
        KafkaError if any could not be delivered); commit acknowledged offsets every
        COMMIT_INTERVAL_S, or now and synchronously with ``wait_for_commit``."""
        batch = self.unacked
        if batch is not None:
            self.producer.flush()
            self.unacked = None
            self._settled.update(batch.commit)
        due = time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S
        if self._settled and (due or wait_for_commit):
            offsets, self._settled = self._settled, {}
            self._last_commit = time.monotonic()
            try:
                self.consumer.commit(
                    self.options.input_topic, offsets, asynchronous=not wait_for_commit
                )
            except KafkaError as exc:  # a later commit covers these offsets
                self.on_commit_error(exc)

    def take_unacked_starts(self) -> dict[int, int]:
        """First offsets of the batch awaiting acknowledgment, which is given up."""
        batch, self.unacked = self.unacked, None
        return dict(batch.first) if batch is not None else {}

    def forget(self, partitions: set[int]) -> None:
        """Partitions lost to another member: never commit them."""
        if self.unacked is not None:
            keep = {p: c for p, c in self.unacked.commit.items() if p not in partitions}
            self.unacked = Unacknowledged(self.unacked.first, keep)
        self._settled = {p: c for p, c in self._settled.items() if p not in partitions}
