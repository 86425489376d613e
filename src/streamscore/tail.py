"""``streamscore tail``: score a live topic in a consumer group until stopped.

Every process of the group reads the partitions the group gives it (cooperative-sticky
assignment, so a rebalance moves only the partitions it must) and loops: collect a
micro-batch (``max_batch`` records, or ``max_wait_ms`` after its first record), decode,
score, write, commit. Decoding, output values, headers and dead letters are replay's
(:mod:`streamscore.kafka`: JsonDecoder, KafkaSink, DeadLetters, HeaderStamp).

Delivery:

* at-least-once (default): a batch's offsets are committed only once its outputs are
  acknowledged by the broker. That wait overlaps the next batch (collected, decoded and
  scored meanwhile), and offsets are committed asynchronously every half second, so
  neither adds to latency; a crash before a commit scores those records again (duplicates,
  no loss);
* exactly-once: one transaction per batch holds outputs, dead letters, shadow results and
  the offsets (send_offsets_to_transaction with the group's current generation, which fences
  a member that lost its partitions). A crashed process's open transaction is aborted by the
  broker after ``transaction.timeout.ms`` (10 s here unless set with -X).

A batch that cannot be written (a transaction aborted, outputs not acknowledged) is read
again from its first offsets, a few times at most before the run fails. When the group
revokes partitions, the records already collected are scored and committed first; records of
partitions *lost* (another member may own them) are dropped uncommitted.

Rollout: the primary model serves most records and is hot-reloaded when MODEL is
``REPO/NAME`` (:mod:`streamscore.model.watch`); a new version is checked against recent input
records before it serves. ``canary`` scores a stable share of keys; ``shadow`` scores every
record into its own topic and reports agreement (:mod:`streamscore.routing`).

Stopping: setting ``stop`` (the CLI sets it on SIGINT/SIGTERM with
:func:`streamscore.shutdown.stop_on_signals`) stops fetching; the batch in flight is finished
and committed, the group left, and the run returns.

How a batch is written and committed lives in :mod:`streamscore.tail_writer`; the models
serving, in :mod:`streamscore.rollout`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from streamscore.config import TailOptions
from streamscore.errors import KafkaError, StreamscoreError
from streamscore.kafka.client import Admin, Consumer, KafkaRecord, Producer
from streamscore.metrics import TailMetrics
from streamscore.model import ModelRef, resolve_model
from streamscore.model.watch import ModelWatcher, reload_source
from streamscore.reporting import Reporter, SilentReporter
from streamscore.rollout import Arm, Serving, check_fits, prepare_arm
from streamscore.routing import resolve_version
from streamscore.tail_writer import BatchWriter

IDLE_POLL_S = 0.1  # consume() is not interruptible by signals: keep each wait short
RECENT_RECORDS = 200  # input values a new model version is tried on before it serves
MAX_BATCH_ATTEMPTS = 5
RETRY_BACKOFF_S = 1.0
STATS_INTERVAL_MS = 1000

# Defaults for live serving; a -X property of the same name wins.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "partition.assignment.strategy": "cooperative-sticky",
    "enable.partition.eof": False,
}
PRODUCER_DEFAULTS: dict[str, Any] = {"linger.ms": 1}
TRANSACTIONAL_DEFAULTS: dict[str, Any] = {"transaction.timeout.ms": 10000}
FENCED_CODES = frozenset({"_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"})


@dataclass
class TailSummary:
    """What one tail process did before it stopped."""

    input_topic: str
    output_topic: str
    group: str
    delivery: str
    records_read: int = 0
    records_scored: int = 0
    records_dead_lettered: int = 0
    batches: int = 0
    batches_retried: int = 0
    reloads: int = 0
    versions_rejected: int = 0
    serving: dict[str, str] = field(default_factory=dict)
    model_lineage: dict[str, dict[str, str]] = field(default_factory=dict)  # role: registry...
    seconds: float = 0.0
    records_per_second: float = 0.0
    metrics_port: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_tail(
    options: TailOptions, reporter: Reporter | None = None, *, stop: threading.Event | None = None
) -> TailSummary:
    """Score ``options.input_topic`` until ``stop`` is set; see the module docstring.

    Raises KafkaError (cluster, topics, a batch that cannot be written), ModelError,
    MappingError or UsageError.
    """
    reporter = reporter or SilentReporter()
    try:
        return TailRun(options, reporter, stop or threading.Event()).execute()
    finally:
        reporter.close()


def _client_config(options: TailOptions, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` minus what the user set with -X or --config."""
    given = {key for key, _ in options.kafka.properties}
    return {key: value for key, value in defaults.items() if key not in given}


class TailRun:
    """One ``streamscore tail`` process; use :func:`run_tail`."""

    def __init__(self, options: TailOptions, reporter: Reporter, stop: threading.Event) -> None:
        self.options = options
        self.reporter = reporter
        self.stop = stop
        self.metrics = TailMetrics()
        self.summary = TailSummary(
            input_topic=options.input_topic,
            output_topic=options.output_topic,
            group=options.group,
            delivery="exactly-once" if options.exactly_once else "at-least-once",
        )
        self.watcher: ModelWatcher[Arm] | None = None
        self._pending: list[KafkaRecord] = []
        self._assigned: set[int] = set()
        self._recent: list[bytes | None] = []
        self._events: deque[Mapping[str, Any]] = deque()  # from the watcher thread
        self._last_status = time.monotonic()
        self._failed_attempts = 0
        self._closed_at = 0.0  # when the last micro-batch closed (monotonic)

    # --- set-up ------------------------------------------------------------------------------

    def execute(self) -> TailSummary:
        o = self.options
        started = time.perf_counter()
        with Admin(o.kafka) as admin:
            admin.check_reachable()
            partitions = self._prepare_topics(admin)
        producer_config = _client_config(o, PRODUCER_DEFAULTS)
        transactional_id = None
        if o.exactly_once:
            producer_config.update(_client_config(o, TRANSACTIONAL_DEFAULTS))
            transactional_id = f"streamscore-tail.{o.group}.{uuid.uuid4().hex[:12]}"
        consumer_config = {
            **_client_config(o, {**CONSUMER_DEFAULTS, "auto.offset.reset": o.start_from}),
            "statistics.interval.ms": STATS_INTERVAL_MS,
            "stats_cb": self._on_stats,
        }
        with (
            self.metrics,
            Producer(o.kafka, transactional_id=transactional_id, config=producer_config) as p,
            Consumer(o.kafka, o.group, config=consumer_config) as consumer,
        ):
            self.consumer = consumer
            p.poll()  # connects while the models load: the first batch does not wait for it
            self.serving = self._first_serving()
            if o.metrics_port is not None:
                self.summary.metrics_port = self.metrics.serve(o.metrics_port)
            if o.exactly_once:
                p.init_transactions()
            self.writer = BatchWriter(o, p, consumer, self.metrics, self._on_commit_error)
            consumer.subscribe(
                o.input_topic,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._announce(partitions)
            with self.watcher or contextlib.nullcontext():
                self._loop()
                if self._pending:  # collected when the stop came: finish them
                    self._process(self._take_pending())
                self.writer.settle(wait_for_commit=True)
                self._tick(force_status=True)
            consumer.close()  # leaves the group now, so its partitions move at once
        return self._summarize(time.perf_counter() - started)

    def _first_serving(self) -> Serving:
        """Load the models; watch MODEL's repository or registry alias when it names one."""
        o, s = self.options, self.options.scoring
        primary = prepare_arm("primary", resolve_model(s.model, s.registry), s)
        canary = shadow = None
        if o.canary is not None:
            canary = prepare_arm(
                "canary", resolve_version(s.model, o.canary.version, s.registry), s
            )
        if o.shadow is not None:
            shadow = prepare_arm("shadow", resolve_version(s.model, o.shadow, s.registry), s)
        watched = reload_source(s.model, s.registry)
        if watched is not None:
            self.watcher = ModelWatcher(
                watched,
                primary,
                primary.ref,
                self._prepare_new_primary,
                interval_s=o.reload_interval_s,
                on_event=self._events.append,
            )
        serving = Serving.build(
            primary,
            canary,
            o.canary,
            shadow,
            keep=s.keep,
            max_record_bytes=o.max_record_bytes,
        )
        self.metrics.set_models({arm.role: arm.ref for arm in serving.arms})
        return serving

    def _prepare_topics(self, admin: Admin) -> int:
        """IN's partition count; OUT, the dead-letter and shadow topics created or checked."""
        o = self.options
        count = admin.input_partition_count(o.input_topic)
        outputs = [o.output_topic, o.dead_letter_topic]
        if o.shadow is not None:
            outputs.append(o.shadow_output_topic)
        for topic in outputs:
            found = admin.partition_count(topic)
            if found is None:
                admin.create_topic(topic, count)
            elif found < count:
                raise KafkaError(
                    f"topic '{topic}' has {found} partition(s) but input topic "
                    f"'{o.input_topic}' has {count}; each output goes to its input's partition",
                    hint="add partitions to it or choose another topic",
                )
        return count

    def _announce(self, partitions: int) -> None:
        o = self.options
        self.reporter.event(
            {
                "event": "info",
                "phase": "started",
                "message": f"tail: group '{o.group}' scoring '{o.input_topic}' ({partitions} "
                f"partitions) into '{o.output_topic}' ({self.summary.delivery})",
                "models": {arm.role: arm.ref.label for arm in self.serving.arms},
                "metrics_port": self.summary.metrics_port,
            }
        )

    def _summarize(self, seconds: float) -> TailSummary:
        summary, counts = self.summary, self.writer.counts
        summary.records_read = counts.records_read
        summary.records_scored = counts.records_scored
        summary.records_dead_lettered = counts.records_dead_lettered
        summary.batches = counts.batches
        summary.seconds = round(seconds, 3)
        if seconds > 0:
            summary.records_per_second = round(counts.records_read / seconds, 1)
        summary.serving = {arm.role: arm.ref.label for arm in self.serving.arms}
        summary.model_lineage = {a.role: a.ref.lineage for a in self.serving.arms if a.ref.lineage}
        return summary

    # --- models ------------------------------------------------------------------------------

    def _prepare_new_primary(self, ref: ModelRef) -> Arm:
        """Runs on the watcher thread: load, then check against recent input records."""
        arm = prepare_arm("primary", ref, self.options.scoring)
        features = self.options.scoring.features
        check_fits(arm, list(self._recent), self.serving.primary.fields, features)
        return arm

    def _current(self) -> Serving:
        """The serving set for the next batch, with a newly loaded primary if there is one."""
        serving = self.serving
        if self.watcher is not None and self.watcher.current is not serving.primary:
            serving = Serving.build(
                self.watcher.current,
                serving.canary,
                serving.canary_spec,
                serving.shadow,
                keep=self.options.scoring.keep,
                max_record_bytes=self.options.max_record_bytes,
            )
            self.serving = serving
            self.summary.reloads += 1
            self.metrics.set_models({arm.role: arm.ref for arm in serving.arms})
        return serving

    # --- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stop.is_set():
            records = self._collect()
            if records:
                self._process(records)
            else:  # a quiet moment: commit what was written
                self._settle_or_retry()
            self._tick()

    def _take_pending(self) -> list[KafkaRecord]:
        records, self._pending = self._pending, []
        return records

    def _collect(self) -> list[KafkaRecord]:
        """One micro-batch: up to max_batch records, or what came within max_wait of the
        first. Empty when nothing came for a moment (so the loop can report and stop).

        A first record that was already waiting came after the previous batch closed, so its
        wait counts from then: no record waits for more than about max_wait plus one batch.
        """
        o = self.options
        deadline: float | None = None
        while not self.stop.is_set():
            room = o.max_batch - len(self._pending)
            if room <= 0:
                break
            final = False
            if deadline is None:  # consume() waits for all it asks for: ask for one first
                asked = time.monotonic()
                got, _ = self.consumer.consume(1, IDLE_POLL_S)
                arrived = time.monotonic()
                if arrived - asked < 0.001:  # it was waiting already
                    arrived = self._closed_at
            else:
                wait = deadline - time.monotonic()
                final = wait < 0.001  # librdkafka counts whole milliseconds
                got, _ = self.consumer.consume(room, 0 if final else min(wait, IDLE_POLL_S))
            self._pending.extend(got)  # a rebalance inside consume() may have taken the rest
            if not self._pending:
                if not got:
                    return []
                continue
            if deadline is None:
                deadline = arrived + o.max_wait_ms / 1000
            elif final:
                break
        self._closed_at = time.monotonic()
        return self._take_pending()

    def _process(self, records: list[KafkaRecord]) -> None:
        """Score and write one batch, reading it again if it cannot be written."""
        first: dict[int, int] = {}
        commit: dict[int, tuple[int, str]] = {}
        for record in records:
            partition, offset = record.partition() or 0, record.offset() or 0
            first.setdefault(partition, offset)
            commit[partition] = (offset + 1, "")
        self._recent = [record.value() for record in records[-RECENT_RECORDS:]]
        try:
            self.writer.write(self._current(), records, first, commit)
        except KafkaError as exc:
            if exc.code in FENCED_CODES:
                raise
            self.writer.abort()
            # The batch written before may not be acknowledged either: read both again.
            rewind = {**first, **self.writer.take_unacked_starts()}
            self._retry_later(rewind, exc)
            return
        self._failed_attempts = 0

    def _settle_or_retry(self, *, wait_for_commit: bool = False) -> None:
        try:
            self.writer.settle(wait_for_commit=wait_for_commit)
        except KafkaError as exc:
            self._retry_later(self.writer.take_unacked_starts(), exc)

    def _retry_later(self, first: dict[int, int], exc: StreamscoreError) -> None:
        """Nothing of the batch counts: read it again from its first offsets."""
        self._failed_attempts += 1
        self.summary.batches_retried += 1
        self.metrics.error("batch_retry")
        if self._failed_attempts >= MAX_BATCH_ATTEMPTS:
            raise exc
        self.reporter.event(
            {"event": "warning", "message": f"{exc.one_line()}; reading the batch again"}
        )
        self.consumer.seek(self.options.input_topic, first)
        self.stop.wait(RETRY_BACKOFF_S * self._failed_attempts)

    # --- group membership, statistics, reporting ---------------------------------------------

    def _on_assign(self, partitions: list[int]) -> None:
        self._assigned.update(partitions)
        self.reporter.event(
            {"event": "assigned", "partitions": sorted(partitions), "owned": sorted(self._assigned)}
        )

    def _on_revoke(self, partitions: list[int]) -> None:
        """Finish and commit what was collected before the partitions move."""
        if self._pending:
            self._process(self._take_pending())
        self._settle_or_retry(wait_for_commit=True)
        self._forget(partitions, "revoked")

    def _on_lost(self, partitions: list[int]) -> None:
        """Another member may own these already: drop their records uncommitted."""
        lost = set(partitions)
        self._pending = [r for r in self._pending if (r.partition() or 0) not in lost]
        self.writer.forget(lost)
        self._forget(partitions, "lost")

    def _forget(self, partitions: list[int], how: str) -> None:
        self._assigned.difference_update(partitions)
        self.metrics.forget_partitions((self.options.input_topic, p) for p in partitions)
        self.reporter.event(
            {"event": how, "partitions": sorted(partitions), "owned": sorted(self._assigned)}
        )

    def _on_commit_error(self, exc: KafkaError) -> None:
        self.metrics.error("commit")
        self.reporter.event(
            {"event": "warning", "message": f"{exc.one_line()}; a later commit covers it"}
        )

    def _on_stats(self, text: str) -> None:
        """librdkafka statistics (every second): consumer lag of the partitions owned."""
        try:
            stats = orjson.loads(text)
            partitions = stats["topics"][self.options.input_topic]["partitions"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        for partition in list(self._assigned):
            lag = partitions.get(str(partition), {}).get("consumer_lag", -1)
            if isinstance(lag, int) and lag >= 0:
                self.metrics.set_lag(self.options.input_topic, partition, lag)

    def _tick(self, *, force_status: bool = False) -> None:
        """Between batches: report model watcher events and, now and then, the status."""
        while self._events:
            event = self._events.popleft()
            if event.get("event") == "model_rejected":
                self.metrics.error("reload")
                self.summary.versions_rejected += 1
            self.reporter.event(event)
        if self.watcher is not None:
            self._current()  # a reload shows in the status and metrics even when idle
        now = time.monotonic()
        if force_status or now - self._last_status >= self.options.status_interval_s:
            self._last_status = now
            self.reporter.event({"event": "status", **self.metrics.status().as_dict()})
