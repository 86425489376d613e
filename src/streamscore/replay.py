"""``streamscore replay``: rescore a topic's history into another topic, exactly once, and stop.

Kappa-style reprocessing: every record of the input topic, from its beginning (or a
timestamp) up to the end offsets seen at the start, is scored by the model into the output
topic; then the run exits. How a run goes:

1. The cluster must answer within the connect timeout; IN must exist; OUT and the dead-letter
   topic are created with IN's partition count when missing (fewer partitions is an error),
   since each output goes to its input's partition number.
2. The transactional producer starts. Its transactional id is fixed per replay, so this
   fences a previous instance still running and aborts the transaction it left open. A
   transaction a broker crash left hanging on OUT or the dead-letter topic is aborted too
   (:mod:`streamscore.kafka.hanging`), before anything is written.
3. The consumer group's committed offsets are read. Their metadata holds the replay's
   snapshot of end offsets (:mod:`streamscore.kafka.offsets`): then the run resumes from the
   committed offsets and stops at the same ends. Without one, the ends are snapshot now and
   committed with every partition's start offset in a first transaction.
4. Records flow through the pipeline: a Kafka source that stops at the ends, the scorer, and
   a sink that writes outputs, dead letters and offsets in transactions that each span up
   to ``commit_interval_s`` of batches (one per batch with 0).
5. A transaction that had to be aborted leaves the consumer ahead of the committed offsets,
   so the run starts over from step 3 with fresh clients (a few times at most), committing
   every batch from then on.

With ``options.member`` set, the run is one worker of a replay several processes share
through a consumer group: :mod:`streamscore.replay_group`.

With ``exactly_once=False`` there are no transactions: offsets are committed once outputs
are acknowledged (the wait overlaps the next batch); a crash in between repeats those
batches on restart.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from streamscore.config import ReplayOptions
from streamscore.errors import MappingError, TransactionAborted, UsageError
from streamscore.kafka.client import Admin, Consumer, Producer
from streamscore.kafka.codec import MISSING_FIELD, JsonDecoder
from streamscore.kafka.dead_letter import DeadLetters
from streamscore.kafka.hanging import abort_hanging_transactions
from streamscore.kafka.headers import HeaderStamp
from streamscore.kafka.offsets import EndOffsets
from streamscore.kafka.sink import AtLeastOnce, Delivery, ExactlyOnce, KafkaBatch, KafkaSink
from streamscore.kafka.source import PartitionRangeSource
from streamscore.kafka.topics import OutputTopics, prepare_output_topics
from streamscore.model.base import Model, close_model, open_model
from streamscore.pipeline import SourceBatch, run_pipeline
from streamscore.reporting import Reporter, SilentReporter
from streamscore.scoring import ScoredBatch, Scorer, scorer_for_records

MAX_ATTEMPTS = 3


@dataclass
class ReplaySummary:
    """The outcome of one replay run (records count what this run committed)."""

    input_topic: str
    output_topic: str
    dlq_topic: str
    group: str
    model: str
    model_version: str
    model_sha256: str
    delivery: str  # exactly-once | at-least-once
    model_server: str | None = None  # a remote model's server (its base URL)
    model_lineage: dict[str, str] = field(default_factory=dict)  # registry, alias, run_id
    resumed: bool = False
    records_read: int = 0
    records_scored: int = 0
    records_dead_lettered: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    records_per_second: float = 0.0
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    complete: bool = False  # every partition is read up to its end offset
    member: str | None = None  # this worker, in a replay shared by several (--member)
    partitions_read: list[int] = field(default_factory=list)  # those this worker read from

    def as_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        if payload["model_server"] is None:  # an embedded model
            del payload["model_server"]
        if payload["member"] is None:  # one process replays every partition
            del payload["member"], payload["partitions_read"]
        return payload


def run_replay(options: ReplayOptions, reporter: Reporter | None = None) -> ReplaySummary:
    """Replay ``options.input_topic`` into ``options.output_topic``; see the module docstring.

    Raises KafkaError (cluster, topics), MappingError (the model cannot read the records),
    ModelError or UsageError; records that cannot be scored go to the dead-letter topic.
    With a remote model, a server outage raises RemoteUnavailable: the open transaction is
    aborted (nothing of it is visible) and a rerun resumes exactly once.
    """
    reporter = reporter or SilentReporter()
    try:
        if options.member is not None:
            from streamscore.replay_group import GroupReplayRun

            return GroupReplayRun(options, reporter).execute()
        return ReplayRun(options, reporter).execute()
    finally:
        reporter.close()


class ReplayRun:
    """One execution of ``streamscore replay``; use :func:`run_replay`."""

    def __init__(self, options: ReplayOptions, reporter: Reporter) -> None:
        self.options = options
        self.reporter = reporter
        self.started = time.perf_counter()
        self.tasks_added = False
        self.commit_interval_s = options.commit_interval_s

    def execute(self) -> ReplaySummary:
        s = self.options.scoring
        # The model and its input mapping first: a mistake there touches no topic.
        # No spinning: the reader and writer threads need the cores between model calls.
        model = open_model(
            s.model,
            provider=s.provider,
            threads=s.call_threads,
            spin=False,
            remote=s.remote,
            registry=s.registry,
        )
        try:
            return self._execute(model)
        finally:
            close_model(model)

    def _execute(self, model: Model) -> ReplaySummary:
        o, s = self.options, self.options.scoring
        scorer, fields = scorer_for_records(
            model, features=s.features, outputs=s.outputs, reject_nan=s.reject_nan
        )
        decoder = JsonDecoder(fields, s.keep, max_record_bytes=o.max_record_bytes)
        summary = self._summary(model)
        with Admin(o.kafka) as admin:
            admin.check_reachable()
            topics = prepare_output_topics(
                admin, o.input_topic, [o.output_topic], o.dead_letter_topic
            )
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    self._attempt(admin, topics, model, scorer, decoder, summary)
                    summary.complete = True
                    break
                except TransactionAborted as exc:
                    if attempt == MAX_ATTEMPTS:
                        raise
                    # Retries commit every batch: a batch that keeps failing then costs only
                    # itself, not the batches before it in its transaction.
                    self.commit_interval_s = 0.0
                    self.reporter.event(
                        {"event": "warning", "message": f"{exc.one_line()}; resuming"}
                    )
        summary.seconds = round(time.perf_counter() - self.started, 3)
        if summary.seconds > 0:
            summary.records_per_second = round(summary.records_read / summary.seconds, 1)
        return summary

    def _summary(self, model: Model) -> ReplaySummary:
        o, ref = self.options, model.ref
        return ReplaySummary(
            input_topic=o.input_topic,
            output_topic=o.output_topic,
            dlq_topic=o.dead_letter_topic,
            group=o.group_id,
            model=ref.name,
            model_version=ref.version,
            model_sha256=ref.sha256,
            delivery="exactly-once" if o.exactly_once else "at-least-once",
            model_server=ref.server or None,
            model_lineage=ref.lineage,
            member=o.member,
        )

    def identity(self, model: Model) -> str:
        """Digest of what decides the outputs; a resumed replay must match it."""
        o = self.options
        return o.scoring.digest(
            output_topic=o.output_topic,
            dead_letter_topic=o.dead_letter_topic,
            model_sha256=model.ref.sha256,
            from_timestamp_ms=o.from_timestamp_ms,
        )

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
        transactional_id = o.group_id if o.exactly_once else None
        defaults = topics.producer_defaults()
        partitions = list(range(topics.partitions))
        with (
            Producer(o.kafka, transactional_id=transactional_id, defaults=defaults) as producer,
            Consumer(o.kafka, o.group_id) as consumer,
        ):
            if o.exactly_once:
                producer.init_transactions()  # before reading offsets: fences a zombie first
                self._abort_hanging(admin, producer, consumer, topics, partitions)
            committed = consumer.committed(o.input_topic, partitions)
            snapshot = EndOffsets.from_committed(committed, o.group_id)
            delivery: Delivery = (
                ExactlyOnce(
                    producer, consumer.group_metadata(), commit_interval_s=self.commit_interval_s
                )
                if o.exactly_once
                else AtLeastOnce(producer, consumer)
            )
            positions = snapshot.positions(committed) if snapshot is not None else {}
            # A snapshot under which nothing was written yet (e.g. the first batch showed the
            # wrong model) binds nobody: take a fresh one for this model and these options.
            untouched = snapshot is not None and all(
                positions[p] == r.start for p, r in snapshot.ranges.items()
            )
            if snapshot is None and not o.allow_nonempty_output:
                self._refuse_nonempty_output(admin)
            if snapshot is None or (untouched and snapshot.identity != self.identity(model)):
                snapshot = self._take_snapshot(admin, partitions, model, delivery)
                positions = {p: r.start for p, r in snapshot.ranges.items()}
                untouched = True
            else:
                self._check_identity(snapshot, model)
                summary.resumed = True
            summary.start_offsets = {p: r.start for p, r in snapshot.ranges.items()}
            summary.end_offsets = {p: r.end for p, r in snapshot.ranges.items()}
            self._announce(snapshot, positions, summary.resumed)
            source = PartitionRangeSource(
                consumer,
                o.input_topic,
                positions,
                summary.end_offsets,
                decoder,
                batch_size=o.scoring.batch_size,
                metadata=snapshot.metadata,
            )
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
            )
            try:
                on_batch = self._progress(check_first=untouched)
                with fewer_gc_pauses():
                    run_pipeline(source, scorer, sink, on_batch=on_batch)
            finally:
                counts = sink.counts
                summary.records_read += counts.records
                summary.records_scored += counts.scored
                summary.records_dead_lettered += counts.dead_lettered
                for kind, count in counts.dead_letter_kinds.items():
                    kinds = summary.dead_letter_kinds
                    kinds[kind] = kinds.get(kind, 0) + count

    def _abort_hanging(
        self,
        admin: Admin,
        producer: Producer,
        consumer: Consumer,
        topics: OutputTopics,
        partitions: list[int],
    ) -> None:
        """Abort what a broker crash left open on the outputs, before reading offsets."""
        o = self.options
        # Any offsets do: the transaction carrying them is aborted, which drops a pending
        # offset commit of the crashed run with them.
        offsets = {p: (0, "") for p in partitions}
        aborted = abort_hanging_transactions(
            admin, producer, topics.output_partitions, o.input_topic, offsets,
            consumer.group_metadata(),
        )  # fmt: skip
        for stuck in aborted:
            self.reporter.event(
                {
                    "event": "warning",
                    "message": f"aborted a transaction left open on {stuck} (offsets "
                    f"{stuck.stable}-{stuck.end - 1}, e.g. by a broker crash) before resuming",
                }
            )

    def _refuse_nonempty_output(self, admin: Admin) -> None:
        """A fresh replay into an OUT that already holds records would duplicate them."""
        o = self.options
        partitions = list(range(admin.partition_count(o.output_topic) or 0))
        if not partitions:
            return
        ends = admin.list_offsets(o.output_topic, partitions, "latest")
        starts = admin.list_offsets(o.output_topic, partitions, "earliest")
        held = sum(ends[p] - starts[p] for p in partitions)
        if held > 0:
            raise UsageError(
                f"output topic '{o.output_topic}' is not empty ({held:,} offsets written), and "
                f"group '{o.group_id}' has no replay in progress (another group, or its offsets "
                "expired): a new replay would duplicate them",
                hint="replay into a new --output-topic, resume with the --group that wrote it, "
                "or pass --allow-nonempty-output",
            )

    def _take_snapshot(
        self, admin: Admin, partitions: list[int], model: Model, delivery: Delivery
    ) -> EndOffsets:
        """Snapshot the end offsets now and commit every start with them, before any output."""
        o = self.options
        ends = admin.list_offsets(o.input_topic, partitions, "latest")
        start_spec = o.from_timestamp_ms if o.from_timestamp_ms is not None else "earliest"
        starts = admin.list_offsets(o.input_topic, partitions, start_spec)
        snapshot = EndOffsets.take(starts, ends, self.identity(model))
        delivery.begin()
        delivery.commit(
            o.input_topic,
            snapshot.commit_offsets({p: r.start for p, r in snapshot.ranges.items()}),
        )
        delivery.settle(wait_for_commit=True)  # at-least-once: the snapshot is kept now
        return snapshot

    def _check_identity(self, snapshot: EndOffsets, model: Model) -> None:
        if snapshot.identity == self.identity(model):
            return
        o = self.options
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.taken_at_ms / 1000))
        raise UsageError(
            f"replay {snapshot.run_id} into '{o.output_topic}' (group '{o.group_id}', started "
            f"{started}) used another model, other scoring options or other topics",
            hint="resume with the same --model, --features, --outputs, --keep, --reject-nan "
            "and --from-timestamp, or replay into a new --output-topic",
        )

    def _announce(self, snapshot: EndOffsets, positions: dict[int, int], resumed: bool) -> None:
        o = self.options
        left = sum(max(0, r.end - positions[p]) for p, r in snapshot.ranges.items())
        if left == 0 and resumed:
            phase, message = "complete", "is already complete; nothing to do"
        else:
            phase = "resumed" if resumed else "started"
            message = f"{phase}: {left:,} offset(s) to go"
        worker = f", worker '{o.member}'" if o.member is not None else ""
        event = {
            "event": "info",
            "message": f"replay of '{o.input_topic}' into '{o.output_topic}' (group "
            f"'{o.group_id}'{worker}) {message}",
            "phase": phase,
            "run": snapshot.run_id,
            "end_offsets": {p: r.end for p, r in snapshot.ranges.items()},
        }
        if o.member is not None:
            event["member"] = o.member
        self.reporter.event(event)
        if self.tasks_added:  # a retry after an aborted transaction: the bars exist
            return
        self.tasks_added = True
        for p, r in snapshot.ranges.items():
            key = f"partition-{p}"
            done = max(0, positions[p] - r.start)
            self.reporter.add_task(key, f"{o.input_topic}[{p}]", r.size, completed=done)

    def _progress(self, *, check_first: bool) -> Callable[[SourceBatch, ScoredBatch], None]:
        """Per-partition progress; with ``check_first``, the first batch must fit the model."""
        first = check_first

        def on_batch(batch: SourceBatch, scored: ScoredBatch) -> None:
            nonlocal first
            context: KafkaBatch = batch.context
            if first:
                _fail_if_no_record_fits(context)
                first = False
            for partition, amount in context.advanced.items():
                if amount:
                    self.reporter.advance(f"partition-{partition}", amount)

        return on_batch


@contextlib.contextmanager
def fewer_gc_pauses(allocations: int = 100_000) -> Iterator[None]:
    """Run the cyclic garbage collector rarely while records stream through.

    Every record makes a few short-lived objects (message, dict, tuples), freed by reference
    counting; but CPython also runs a collection every 700 allocations, and its full
    collections walk every live object: measured at ~13 % of a replay's time (1 s of 7.5 s
    for 200,000 records, all holding the GIL). The default comes back on exit.
    """
    before = gc.get_threshold()
    gc.set_threshold(allocations, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _fail_if_no_record_fits(context: KafkaBatch) -> None:
    """A first batch whose every record lacks a model field means the wrong model or topic:
    stop before writing anything rather than dead-letter the whole topic."""
    failures = context.decoded.failures
    if not failures or context.decoded.rows.num_rows or len(failures) != len(context.records):
        return
    if any(failure.kind != MISSING_FIELD for failure in failures):
        return
    sample = context.records[failures[0].index].value() or b"{}"
    try:
        present = sorted(orjson.loads(sample))[:12]
    except (orjson.JSONDecodeError, TypeError):
        present = []
    raise MappingError(
        f"no record in the first {len(failures)} of topic '{context.topic}' has the fields the "
        f"model reads: {failures[0].message}",
        hint=f"fields found: {', '.join(present) or 'none'}; check --model and --features, "
        "or skip older records with --from-timestamp",
    )
