"""``streamscore tail``: score a live topic in a consumer group until stopped.

``tail`` runs the pipeline every command runs (:func:`streamscore.pipeline.run_pipeline`),
with three parts of its own:

* source: :class:`~streamscore.kafka.group_source.GroupSource`, a consumer group member
  (cooperative-sticky assignment) yielding micro-batches of ``max_batch`` records, or what
  came within ``max_wait_ms`` of a batch's first record. When the group revokes partitions,
  the batches already handed on are written and committed before they move (the revocation
  barrier); records of partitions *lost* are dropped uncommitted;
* scorer: :class:`~streamscore.rollout.RoutingScorer`, the primary model (hot-reloaded when
  MODEL is ``REPO/NAME``, a registry alias or a model URL without a version,
  :mod:`streamscore.model.watch`; a new version is checked against
  recent input records before it serves), a ``canary`` scoring a stable share of keys and a
  ``shadow`` scoring every record into its own topic (:mod:`streamscore.routing`);
* sink: replay's :class:`~streamscore.kafka.sink.KafkaSink` (same output values, headers and
  dead letters; topics prepared by :func:`streamscore.kafka.topics.prepare_output_topics`,
  so an output over the topic's size limit is an ``output_too_large`` dead letter), with one
  of two delivery policies:

  - at-least-once (default, :class:`~streamscore.kafka.sink.AtLeastOnce`): offsets are
    committed once the outputs are acknowledged, every half second for all batches produced
    since, so no batch waits for the one before; a crash before a commit scores those
    records again (duplicates, no loss);
  - exactly-once (:class:`~streamscore.kafka.sink.GroupExactlyOnce`): one transaction per
    batch holds outputs, dead letters, shadow results and the offsets, sent with the group's
    current generation (which fences a member that lost its partitions). A crashed process's
    open transaction is aborted by the broker after ``transaction.timeout.ms`` (10 s here
    unless set with -X).

A batch that cannot be written (a transaction aborted, outputs not acknowledged) stops the
pipeline; the owned partitions are read again from their committed offsets and the pipeline
restarts, a few times at most before the run fails. A fenced producer (another process took
over) fails at once. A model server that stays away through its retries (RemoteUnavailable)
is an outage, not bad data: nothing of the batch was written, consumption pauses (the
member stays in the group) until every remote model answers its readiness probe, then the
owned partitions are read again from their committed offsets; nothing is dead-lettered.
Likewise, when the version of a followed server model goes away (404 / NOT_FOUND mid-run),
consumption pauses for up to ``VANISHED_GRACE_S`` until the server answers with another
version that fits, which then serves (otherwise the ModelError stands).

Stopping: setting ``stop`` (the CLI sets it on SIGINT/SIGTERM with
:func:`streamscore.shutdown.stop_on_signals`) stops fetching; the batch in flight is finished
and committed, the group left, and the run returns.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson

from streamscore.config import TailOptions
from streamscore.errors import (
    KafkaError,
    ModelError,
    ProducerFenced,
    RemoteUnavailable,
    StreamscoreError,
    TransactionAborted,
)
from streamscore.kafka.client import Admin, Consumer, Producer
from streamscore.kafka.dead_letter import DeadLetters
from streamscore.kafka.group_source import GroupProgress, GroupSource
from streamscore.kafka.sink import (
    PARTITIONS_MOVED,
    AtLeastOnce,
    Delivery,
    GroupExactlyOnce,
    KafkaBatch,
    KafkaSink,
    PartWritten,
)
from streamscore.kafka.topics import OutputTopics, prepare_output_topics
from streamscore.metrics import TailMetrics
from streamscore.model import ModelRef, resolve_model
from streamscore.model.watch import ModelWatcher, reload_source
from streamscore.pipeline import SourceBatch, run_pipeline
from streamscore.remote import is_model_url
from streamscore.remote.breaker import breaker_states
from streamscore.reporting import Reporter, SilentReporter
from streamscore.rollout import Arm, RoutedBatch, RoutingScorer, Serving, check_fits, prepare_arm
from streamscore.routing import compare_scores, resolve_version
from streamscore.scoring import ScoredBatch

GIL_SWITCH_INTERVAL_S = 0.0005
# Batches up to this many records read while none is in flight are scored and written on the
# reading thread (see run_pipeline): a quiet topic's records skip two thread hand-offs.
INLINE_ROWS = 256
MAX_BATCH_ATTEMPTS = 5
REVOKE_WAIT_S = 2.0  # exactly-once: how long a revocation waits for the writer to abort
RETRY_BACKOFF_S = 1.0
STATS_INTERVAL_MS = 1000
SERVER_PROBE_S = 1.0  # how often a paused tail asks a model server whether it is back
# How long a server model's version that went away mid-run waits for its successor.
VANISHED_GRACE_S = 30.0

# Defaults for live serving; a -X property of the same name wins.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "partition.assignment.strategy": "cooperative-sticky",
    "enable.partition.eof": False,
}
PRODUCER_DEFAULTS: dict[str, Any] = {"linger.ms": 1}
TRANSACTIONAL_DEFAULTS: dict[str, Any] = {"transaction.timeout.ms": 10000}


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
    outage_pauses: int = 0  # times consumption paused for a model server outage
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
    # The pipeline's threads hand each batch on twice; a thread woken for it may wait for the
    # GIL up to the switch interval (5 ms by default) while another decodes: keep it short.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        return TailRun(options, reporter, stop or threading.Event()).execute()
    finally:
        sys.setswitchinterval(interval)
        reporter.close()


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
        # Exactly-once rolls back the batches in flight on a revocation (see GroupSource):
        # the barrier only waits briefly for the writer to abort them.
        self.progress = GroupProgress(REVOKE_WAIT_S) if options.exactly_once else GroupProgress()
        self.scorer = RoutingScorer(options.input_topic, self._current)
        self._events: deque[Mapping[str, Any]] = deque()  # from the watcher thread
        self._last_status = time.monotonic()
        self._failed_attempts = 0

    # --- set-up ------------------------------------------------------------------------------

    def execute(self) -> TailSummary:
        o = self.options
        started = time.perf_counter()
        with Admin(o.kafka) as admin:
            admin.check_reachable()
            outputs = [o.output_topic]
            if o.shadow is not None:
                outputs.append(o.shadow_output_topic)
            topics = prepare_output_topics(admin, o.input_topic, outputs, o.dead_letter_topic)
        defaults = {**PRODUCER_DEFAULTS, **topics.producer_defaults()}
        transactional_id = None
        if o.exactly_once:
            defaults.update(TRANSACTIONAL_DEFAULTS)
            transactional_id = f"streamscore-tail.{o.group}.{uuid.uuid4().hex[:12]}"
        consumer_config = {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self._on_stats}
        consumer_defaults = {**CONSUMER_DEFAULTS, "auto.offset.reset": o.start_from}
        with (
            self.metrics,
            Producer(o.kafka, transactional_id=transactional_id, defaults=defaults) as producer,
            Consumer(
                o.kafka, o.group, config=consumer_config, defaults=consumer_defaults
            ) as consumer,
        ):
            producer.poll()  # connects while the models load: the first batch does not wait
            self.serving = self._first_serving()
            if o.metrics_port is not None:
                self.summary.metrics_port = self.metrics.serve(o.metrics_port)
            if o.exactly_once:
                producer.init_transactions()
            source = GroupSource(
                consumer,
                o.input_topic,
                self.scorer.decode,
                self.progress,
                self.stop,
                max_batch=o.max_batch,
                max_wait_ms=o.max_wait_ms,
                on_change=self._on_change,
                fence_on_revoke=o.exactly_once,
            )
            sink = self._sink(producer, consumer, source, topics)
            source.subscribe()
            self._announce(topics.partitions)
            with self.watcher or contextlib.nullcontext():
                self._serve(source, sink)
                self._tick(force_status=True)
            consumer.close()  # leaves the group now, so its partitions move at once
        return self._summarize(sink, time.perf_counter() - started)

    def _sink(
        self, producer: Producer, consumer: Consumer, source: GroupSource, topics: OutputTopics
    ) -> KafkaSink:
        o = self.options
        delivery: Delivery
        if o.exactly_once:
            delivery = GroupExactlyOnce(
                producer,
                consumer,
                may_commit=self.progress.may_commit,
                metadata=source.group_metadata,
            )
        else:
            delivery = AtLeastOnce(
                producer,
                consumer,
                owned=lambda: self.progress.owned,
                on_commit_error=self._on_commit_error,
            )
        dead_letters = DeadLetters(
            producer, o.dead_letter_topic, same_partitions=topics.dead_letters_same_partitions
        )
        sink = KafkaSink(
            producer,
            delivery,
            o.output_topic,
            dead_letters,
            shadow_topic=o.shadow_output_topic if o.shadow is not None else None,
            progress=self.progress,
            observe=self._observe,
        )
        self.progress.settle = lambda: sink.settle(wait_for_commit=True)
        return sink

    def _first_serving(self) -> Serving:
        """Load the models; watch MODEL's repository or registry alias when it names one."""
        o, s = self.options, self.options.scoring
        primary = prepare_arm(
            "primary", s.model if is_model_url(s.model) else resolve_model(s.model, s.registry), s
        )
        canary = shadow = None
        if o.canary is not None:
            canary = prepare_arm(
                "canary", resolve_version(s.model, o.canary.version, s.registry), s
            )
        if o.shadow is not None:
            shadow = prepare_arm("shadow", resolve_version(s.model, o.shadow, s.registry), s)
        watched = reload_source(s.model, s.registry, s.remote)
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

    def _announce(self, partitions: int) -> None:
        o = self.options
        self.reporter.event(
            {
                "event": "info",
                "phase": "started",
                "message": f"tail: group '{o.group}' scoring '{o.input_topic}' ({partitions} "
                f"partitions) into '{o.output_topic}' ({self.summary.delivery})",
                "models": {arm.role: arm.ref.full_label for arm in self.serving.arms},
                "metrics_port": self.summary.metrics_port,
            }
        )

    def _summarize(self, sink: KafkaSink, seconds: float) -> TailSummary:
        summary, counts = self.summary, sink.counts
        summary.records_read = counts.records
        summary.records_scored = counts.scored
        summary.records_dead_lettered = counts.dead_lettered
        summary.seconds = round(seconds, 3)
        if seconds > 0:
            summary.records_per_second = round(counts.records / seconds, 1)
        summary.serving = {arm.role: arm.ref.full_label for arm in self.serving.arms}
        summary.model_lineage = {a.role: a.ref.lineage for a in self.serving.arms if a.ref.lineage}
        return summary

    # --- models ------------------------------------------------------------------------------

    def _prepare_new_primary(self, ref: ModelRef) -> Arm:
        """Runs on the watcher thread: load, then check against recent input records."""
        arm = prepare_arm("primary", ref, self.options.scoring)
        features = self.options.scoring.features
        check_fits(arm, list(self.scorer.recent), self.serving.primary.fields, features)
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

    # --- the pipeline ------------------------------------------------------------------------

    def _serve(self, source: GroupSource, sink: KafkaSink) -> None:
        """Run the pipeline until stopped; after a batch that could not be written, read the
        owned partitions again from their committed offsets (reading those offsets needs the
        cluster too: a failure there counts as one more attempt)."""
        rewind = False
        while True:
            self.progress.restart()
            try:
                if rewind:
                    source.rewind()
                    rewind = False
                # A full batch means a backlog: it goes through the threads, to overlap.
                inline = min(INLINE_ROWS, self.options.max_batch - 1)
                run_pipeline(source, self.scorer, sink, on_batch=self._on_batch, inline_rows=inline)
                return
            except ProducerFenced:
                raise
            except TransactionAborted as exc:
                if exc.code != PARTITIONS_MOVED:
                    self._retry_or_raise(exc)
                # else a rebalance took partitions while batches were in flight: they are
                # rolled back, and the partitions kept are read again at once.
                rewind = True
            except RemoteUnavailable as exc:
                # An outage, not bad data: scoring comes before anything of the batch is
                # produced, so nothing of it was written. Inside a revocation the barrier is
                # released at once (the revoked partitions go to their next owner uncommitted);
                # the ones kept are read again from their committed offsets once it answers.
                self._wait_for_model_servers(source, exc)
                rewind = True
            except ModelError as exc:
                if not self._wait_for_successor(source, exc):
                    raise
                rewind = True  # nothing of the batch was written (as for an outage)
            except KafkaError as exc:
                self._retry_or_raise(exc)
                rewind = True

    def _retry_or_raise(self, exc: KafkaError) -> None:
        """A batch could not be written: back off before reading it again, or give up."""
        self._failed_attempts += 1
        self.summary.batches_retried += 1
        self.metrics.error("batch_retry")
        if self._failed_attempts >= MAX_BATCH_ATTEMPTS or self.stop.is_set():
            raise exc
        self.reporter.event(
            {"event": "warning", "message": f"{exc.one_line()}; reading the batch again"}
        )
        self.stop.wait(RETRY_BACKOFF_S * self._failed_attempts)

    def _on_batch(self, batch: SourceBatch, scored: ScoredBatch) -> None:
        """On the thread that scored the batch, between batches: reload events and the status."""
        self._tick()

    def _observe(self, context: KafkaBatch, scored: ScoredBatch, parts: list[PartWritten]) -> None:
        """On the writer thread, once a batch is written: metrics and counts."""
        m, records = self.metrics, context.records
        self._failed_attempts = 0
        self.summary.batches += 1
        m.observe_batch(len(records))
        routed = scored.parts if isinstance(scored, RoutedBatch) else ()
        stamps: list[int] = []
        for written, part in zip(parts, routed, strict=True):
            m.observe_scored(
                written.model.version, written.rows, written.written, written.dead_lettered,
                part.seconds,
            )  # fmt: skip
            if written.dead_lettered:
                m.error("rejected", written.dead_lettered)
            for i in part.part.index[part.scored.accepted].tolist():
                kind, stamp = records[i].timestamp()
                if kind and stamp > 0:
                    stamps.append(stamp)
        failures = context.decoded.failures
        if failures:
            m.observe_undecodable(len(failures))
            for failure in failures:
                m.error(failure.kind)
        if isinstance(scored, RoutedBatch) and scored.shadow is not None:
            self._compare(scored)
        if stamps:  # output time: produced (at-least-once) or committed (exactly-once)
            m.observe_end_to_end(time.time() - np.asarray(stamps, dtype=np.float64) / 1000)

    def _compare(self, routed: RoutedBatch) -> None:
        """Shadow agreement with what was published, on the rows both scored."""
        shadow = routed.shadow
        assert shadow is not None
        self.metrics.inference.labels(shadow.arm.ref.version).observe(shadow.seconds)
        for part in routed.parts:
            published = part.scored
            on_rows = ScoredBatch(
                published.scores, part.rows[published.accepted], part.rows[published.rejected], []
            )
            agreement = compare_scores(on_rows, shadow.scored)
            self.metrics.observe_shadow(
                agreement.score_diffs, agreement.rows, agreement.label_flips
            )

    def _wait_for_model_servers(self, source: GroupSource, exc: RemoteUnavailable) -> None:
        """Pause consumption (memory stays bounded, nothing is skipped) until every remote
        model answers its readiness probe, then resume."""
        source.pause()
        self.summary.outage_pauses += 1
        self.metrics.error("model_server_outage")
        self.reporter.event(
            {"event": "warning", "message": f"{exc.one_line()}; consumption paused"}
        )
        models = [arm.scorer.model for arm in self.serving.arms]
        probes = [probe for m in models if (probe := getattr(m, "probe", None)) is not None]
        self._paused_until(source, lambda: all(probe() for probe in probes))
        self.reporter.event(
            {"event": "info", "message": "model server answers again; consumption resumed"}
        )

    def _wait_for_successor(self, source: GroupSource, exc: ModelError) -> bool:
        """The version of a watched server model that tail pinned went away mid-run (its
        server answers 404 / NOT_FOUND: a version replaced in place, say). Pause consumption
        for up to VANISHED_GRACE_S, asking the server which version answers the model's
        unversioned URL now; one that loads and fits serves from the batch that failed on, as
        a reload would. False (the error stands) for any other model error, or when no
        version came."""
        primary = self.serving.primary
        watcher = self.watcher
        probe = getattr(primary.scorer.model, "probe", None)
        if watcher is None or not primary.ref.server or probe is None:
            return False
        with contextlib.suppress(StreamscoreError):
            if probe():
                return False  # the primary answers: the error is not its version's
        self.reporter.event(
            {
                "event": "warning",
                "message": f"{exc.one_line()}; consumption paused, waiting up to "
                f"{VANISHED_GRACE_S:g}s for the server to answer with another version",
            }
        )

        def switched() -> bool:
            with contextlib.suppress(StreamscoreError):  # no version yet, or an outage
                watcher.check_now()
            return watcher.current is not primary

        return self._paused_until(source, switched, within_s=VANISHED_GRACE_S)

    def _paused_until(
        self, source: GroupSource, ready: Callable[[], bool], *, within_s: float | None = None
    ) -> bool:
        """Pause consumption (memory stays bounded, nothing is skipped; the member stays in
        the group) until ``ready()`` or a stop, then resume. False when ``within_s`` passed
        first: consumption stays paused, the run is failing."""
        source.pause()
        deadline = None if within_s is None else time.monotonic() + within_s
        while not self.stop.is_set():
            source.idle()
            done = ready()
            self._tick()  # status, and model_loaded / model_rejected events
            if done:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.stop.wait(SERVER_PROBE_S)
        source.resume()
        return True

    # --- group membership, statistics, reporting ---------------------------------------------

    def _on_change(self, how: str, partitions: list[int]) -> None:
        if how != "assigned":
            topic = self.options.input_topic
            self.metrics.forget_partitions((topic, p) for p in partitions)
        owned = sorted(self.progress.owned)
        self.reporter.event({"event": how, "partitions": sorted(partitions), "owned": owned})

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
        for partition in list(self.progress.owned):
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
        servers = breaker_states()
        if servers:
            self.metrics.set_model_servers({url: state.value for url, state in servers.items()})
        now = time.monotonic()
        if force_status or now - self._last_status >= self.options.status_interval_s:
            self._last_status = now
            self.reporter.event({"event": "status", **self.metrics.status().as_dict()})
