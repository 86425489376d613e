"""``streamscore replay`` against the real broker: Kappa consistency with ``batch``, exactly
once across SIGKILLs, dead letters, and the one-line failures (missing topic, unreachable
broker, records the model cannot read)."""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from helpers.runs import invoke
from streamscore.batch import run_batch
from streamscore.cli.replay import parse_timestamp_ms
from streamscore.config import BatchOptions, KeepColumns, ReplayOptions, ScoringOptions
from streamscore.errors import MappingError, TransactionAborted, UsageError
from streamscore.kafka import headers as h
from streamscore.kafka.client import Admin, KafkaSettings
from streamscore.kafka.loader import load_parquet
from streamscore.replay import ReplaySummary, run_replay
from streamscore.reporting import RecordingReporter

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data" / "transactions" / "date=2026-11-01" / "part-0.parquet"
MODEL = REPO / "sample_data" / "models" / "fraud"
FEATURES = [f"f{i:02d}" for i in range(30)]


# ---------------------------------------------------------------- helpers


def sample_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows of the sample data as JSON-ready dicts (event_time as ISO text)."""
    rows = pq.read_table(SAMPLE).slice(start, n).to_pylist()
    for row in rows:
        row["event_time"] = row["event_time"].isoformat()
    return rows


def produce(
    bootstrap: str, topic: str, values: Sequence[bytes | None], keys: Sequence[bytes]
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key, value in zip(keys, values, strict=True):
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def produce_rows(bootstrap: str, topic: str, rows: list[dict[str, Any]]) -> None:
    keys = [str(row.get("transaction_id", row.get("id"))).encode() for row in rows]
    produce(bootstrap, topic, [orjson.dumps(row) for row in rows], keys)


def read_topic(
    bootstrap: str, topic: str, timeout_s: float = 30, *, committed: bool = True
) -> list[Message]:
    """Every record a read_committed consumer (or, with ``committed=False``, a
    read_uncommitted one) sees in ``topic``, up to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Message] = []
        at_end: dict[int, int] = {}  # partition -> the offset its end was reached at
        deadline = time.monotonic() + timeout_s
        settle_until = time.monotonic() + STABLE_END_WAIT_S
        while time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.1):
                if message.error() is None:
                    records.append(message)
                else:
                    at_end[message.partition()] = message.offset()
            if len(at_end) < len(partitions):
                continue
            # A transaction's commit returns before its markers reach every partition: a
            # read_committed reader's end (the stable offset) may lag the last write briefly.
            behind = _behind_high_watermark(consumer, topic, at_end) if committed else set()
            if not behind or time.monotonic() > settle_until:
                break
            for partition in behind:
                del at_end[partition]
        assert len(at_end) == len(partitions), f"{topic} not read to its end in {timeout_s}s"
        return records
    finally:
        consumer.close()


STABLE_END_WAIT_S = 5.0  # longer than a commit's markers take; an open transaction stays open


def _behind_high_watermark(consumer: Consumer, topic: str, ends: dict[int, int]) -> set[int]:
    """Partitions whose end, as read, is below their last written offset."""
    behind = set()
    for partition, end in ends.items():
        tp = TopicPartition(topic, partition)
        _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        if end < high:
            behind.add(partition)
    return behind


def headers_of(message: Message) -> dict[str, str]:
    return h.header_dict(message.headers())


def source_of(message: Message) -> tuple[int, int]:
    found = headers_of(message)
    return int(found[h.SOURCE_PARTITION]), int(found[h.SOURCE_OFFSET])


def options(bootstrap: str, source: str, target: str, **kwargs: Any) -> ReplayOptions:
    scoring = {
        "model": str(MODEL),
        "provider": "cpu",
        "threads": 1,
        "batch_size": kwargs.pop("batch_size", 256),
        "keep": KeepColumns.parse(kwargs.pop("keep", None)),
    }
    return ReplayOptions(
        kafka=KafkaSettings(bootstrap), input_topic=source, output_topic=target,
        scoring=ScoringOptions(**scoring), **kwargs,
    )  # fmt: skip


def replay(bootstrap: str, source: str, target: str, **kwargs: Any) -> ReplaySummary:
    return run_replay(options(bootstrap, source, target, **kwargs))


@pytest.fixture
def topics(unique_topic: Callable[..., str]) -> Callable[[int], tuple[str, str]]:
    """``topics(partitions)`` -> a new input topic and the name for its output topic."""

    def make(partitions: int = 3) -> tuple[str, str]:
        source = unique_topic(partitions=partitions, prefix="replay-in")
        return source, f"{source}.scored"

    return make


# ---------------------------------------------------------------- Kappa consistency


def test_replay_scores_a_topic_exactly_as_batch_scores_the_same_records(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]], tmp_path: Path
) -> None:
    source, target = topics(3)
    parquet = tmp_path / "in" / "part-0.parquet"
    parquet.parent.mkdir()
    pq.write_table(pq.read_table(SAMPLE).slice(0, 3000), parquet)
    load_parquet(KafkaSettings(kafka_bootstrap), parquet.parent, source, timestamp_column=None)

    summary = replay(kafka_bootstrap, source, target)
    batch = run_batch(
        BatchOptions(
            input=parquet.parent,
            output=tmp_path / "out",
            scoring=ScoringOptions(model=str(MODEL), provider="cpu", threads=1),
        )
    )

    inputs = {(m.partition(), m.offset()): m for m in read_topic(kafka_bootstrap, source)}
    outputs = read_topic(kafka_bootstrap, target)
    assert summary.records_read == summary.records_scored == batch.rows_scored == 3000
    assert len(outputs) == 3000
    assert sorted(source_of(m) for m in outputs) == sorted(inputs)
    assert len({m.partition() for m in outputs}) == 3
    for message in outputs:
        original = inputs[source_of(message)]
        assert message.key() == original.key()
        assert message.partition() == original.partition()
        assert message.timestamp() == original.timestamp()
        found = headers_of(message)
        assert (found[h.MODEL], found[h.MODEL_VERSION]) == ("fraud", "2")
        assert found[h.MODEL_SHA256] == summary.model_sha256
        assert found[h.SOURCE_TOPIC] == source
    scored = pq.read_table(tmp_path / "out" / "part-0.parquet").to_pylist()
    expected = {row["transaction_id"]: row for row in scored}
    for message in outputs:
        value = orjson.loads(message.value())
        row = expected[value["transaction_id"]]
        assert value["label"] == row["label"]
        for column in ("probabilities_0", "probabilities_1"):
            assert np.float32(value[column]) == np.float32(row[column])
        assert set(value) == set(row)  # same passthrough fields: every non-model column


# ---------------------------------------------------------------- exactly once across crashes


def expected_sources(bootstrap: str, source: str, ends: dict[str, int]) -> list[tuple[int, int]]:
    """(partition, offset) of every record of ``source`` below the snapshot's end offsets."""
    return sorted(
        (m.partition(), m.offset())
        for m in read_topic(bootstrap, source)
        if m.offset() < ends[str(m.partition())]
    )


class CommittedCounter:
    """Counts the records a read_committed consumer has seen in ``topic`` so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"counter-{time.monotonic_ns()}",
                "isolation.level": "read_committed",
            }
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.count = 0

    def wait_for(self, target: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < target:
            assert time.monotonic() < deadline, f"only {self.count} of {target} outputs"
            self.count += sum(m.error() is None for m in self.consumer.consume(500, 0.05))


def test_a_replay_interrupted_then_killed_at_random_points_writes_each_input_exactly_once(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(3)
    total = 1200
    produce_rows(kafka_bootstrap, source, sample_rows(total))
    command = [
        sys.executable, "-m", "streamscore", "replay", "-b", kafka_bootstrap, "-i", source,
        "-o", target, "-m", str(MODEL), "--batch-size", "20", "--threads", "1",
        "--provider", "cpu", "--log-format", "json",
        # A transaction per batch, as the test was written for: with the default 1 s of
        # batches per transaction the run can end before the signals come.
        "--commit-interval", "0",
    ]  # fmt: skip
    rng = random.Random(20261122)
    # Ctrl-C first (exit 130), then three SIGKILLs, each once a random share of the outputs
    # is committed: wherever the process is then (mid-transaction, between two, committing).
    stops = [signal.SIGINT, signal.SIGKILL, signal.SIGKILL, signal.SIGKILL]
    shares = [rng.uniform(0.05, 0.2), rng.uniform(0.25, 0.4), rng.uniform(0.45, 0.6)]
    shares.append(rng.uniform(0.65, 0.8))
    end_offsets: dict[str, int] | None = None
    counter: CommittedCounter | None = None
    for attempt, (stop, share) in enumerate(zip(stops, shares, strict=True)):
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())  # snapshot committed by now
        assert announced["phase"] == ("started" if attempt == 0 else "resumed"), announced
        end_offsets = end_offsets or announced["end_offsets"]
        assert announced["end_offsets"] == end_offsets
        counter = counter or CommittedCounter(kafka_bootstrap, target)
        counter.wait_for(int(share * total))
        assert process.poll() is None, "the replay finished before it could be stopped"
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=60)
        if stop == signal.SIGINT:
            assert process.returncode == 130
            assert stderr.splitlines() == ["error: interrupted"]
        # Records appended after the snapshot are not part of this replay.
        produce_rows(kafka_bootstrap, source, sample_rows(100, start=5000 + 100 * attempt))
    assert counter is not None
    counter.consumer.close()

    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert finished.returncode == 0, finished.stderr
    lines = [json.loads(line) for line in finished.stdout.splitlines()]
    assert lines[0]["end_offsets"] == end_offsets
    assert lines[-1]["event"] == "summary" and lines[-1]["resumed"] is True
    assert end_offsets is not None
    expected = expected_sources(kafka_bootstrap, source, end_offsets)
    produced = [source_of(m) for m in read_topic(kafka_bootstrap, target)]
    assert len(expected) == total
    assert sorted(produced) == expected  # none lost, none twice, none beyond the snapshot


def test_a_replay_killed_inside_a_transaction_of_several_batches_resumes_exactly_once(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    """The default: one transaction holds the batches of a commit interval. SIGKILL lands
    while one is open, many batches in (outputs produced, offsets not committed): the rerun
    aborts it (same transactional id) and writes each input once."""
    source, target = topics(3)
    total = 3000
    produce_rows(kafka_bootstrap, source, sample_rows(total))
    command = [
        sys.executable, "-m", "streamscore", "replay", "-b", kafka_bootstrap, "-i", source,
        "-o", target, "-m", str(MODEL), "--batch-size", "10", "--threads", "1",
        "--provider", "cpu", "--log-format", "json", "--commit-interval", "0.5",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    end_offsets = json.loads(process.stdout.readline())["end_offsets"]
    counter = CommittedCounter(kafka_bootstrap, target)
    counter.wait_for(1)  # the first transaction is committed: the next one is open now
    assert process.poll() is None, "the replay finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    committed_before = counter.count
    counter.consumer.close()
    uncommitted = read_topic(kafka_bootstrap, target, committed=False)

    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout.splitlines()[-1])
    assert summary["resumed"] is True
    assert 0 < committed_before < total
    assert len(uncommitted) > committed_before  # the killed run left outputs uncommitted
    expected = expected_sources(kafka_bootstrap, source, end_offsets)
    produced = [source_of(m) for m in read_topic(kafka_bootstrap, target)]
    assert len(expected) == total
    assert sorted(produced) == expected  # none lost, none twice


# ---------------------------------------------------------------- dead letters


def test_each_malformed_record_goes_to_the_dead_letter_topic_with_its_reason(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    good = sample_rows(6)
    bad: dict[str, bytes | None] = {
        "not_json": b"{this is not json",
        "not_object": b"[1, 2, 3]",
        "missing_field": orjson.dumps({k: v for k, v in good[0].items() if k != "f03"}),
        "wrong_type": orjson.dumps({**good[0], "f03": "high"}),
        "null_field": orjson.dumps({**good[0], "f03": None}),
        "nan": json.dumps({**good[0], "f03": float("nan")}).encode(),
        "tombstone": None,
        "oversized": orjson.dumps({**good[0], "note": "x" * 3000}),
        "rejected": orjson.dumps({**good[0], "f03": 1e300}),  # beyond float32: input mapping
    }
    values: list[bytes | None] = []
    for row, value in zip(good, bad.values(), strict=False):
        values += [orjson.dumps(row), value]
    values += [orjson.dumps(row) for row in good[len(bad) :]] + list(bad.values())[len(good) :]
    keys = [f"k{i}".encode() for i in range(len(values))]
    produce(kafka_bootstrap, source, values, keys)

    summary = replay(kafka_bootstrap, source, target, max_record_bytes=2000, batch_size=4)

    letters = read_topic(kafka_bootstrap, f"{target}.dlq")
    assert summary.records_scored == len(good) == len(read_topic(kafka_bootstrap, target))
    assert summary.dead_letter_kinds == dict.fromkeys(bad, 1)
    assert sorted(headers_of(m)[h.ERROR_TYPE] for m in letters) == sorted(bad)
    for letter in letters:
        found = headers_of(letter)
        offset = int(found[h.SOURCE_OFFSET])
        assert (letter.key(), letter.value()) == (keys[offset], values[offset])
        assert found[h.ERROR_MESSAGE]
        assert found[h.SOURCE_TOPIC] == source
    messages = {headers_of(m)[h.ERROR_TYPE]: headers_of(m)[h.ERROR_MESSAGE] for m in letters}
    assert "'f03' is missing" in messages["missing_field"]
    assert "'f03' is a string" in messages["wrong_type"]
    assert "exceeds 2,000" in messages["oversized"]
    assert "out of range" in messages["rejected"]


def big_output_topic(bootstrap: str, topic: str, limit: int) -> None:
    """Create ``topic`` (1 partition) whose records may not exceed ``limit`` bytes."""
    with Admin(KafkaSettings(bootstrap)) as admin:
        admin.create_topic(topic, 1, {"max.message.bytes": str(limit)})


def test_an_output_over_the_output_topics_limit_becomes_a_dead_letter(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    big_output_topic(kafka_bootstrap, target, 2000)
    rows = sample_rows(6)
    rows[3]["note"] = "x" * 2500  # fits the input topic; its scored output does not fit OUT
    produce_rows(kafka_bootstrap, source, rows)

    summary = replay(kafka_bootstrap, source, target, keep="all", batch_size=4)

    assert (summary.records_scored, summary.dead_letter_kinds) == (5, {"output_too_large": 1})
    (letter,) = read_topic(kafka_bootstrap, f"{target}.dlq")
    assert source_of(letter) == (0, 3)
    assert headers_of(letter)[h.ERROR_TYPE] == "output_too_large"


def test_a_transaction_the_broker_refuses_is_rolled_back_and_retried_then_reported(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    big_output_topic(kafka_bootstrap, target, 20_000)  # a record batch's limit, in fact
    rows = sample_rows(12)
    rows[9]["note"] = "x" * 30_000
    produce_rows(kafka_bootstrap, source, rows)
    # Uncompressed, so the broker sees the record at its full size.
    overrides = ["message.max.bytes=5000000", "compression.type=none"]
    settings = KafkaSettings.resolve(kafka_bootstrap, overrides)
    reporter = RecordingReporter()
    run = options(kafka_bootstrap, source, target, keep="all", batch_size=4)
    run = dataclasses.replace(run, kafka=settings)  # the producer no longer knows OUT's limit

    with pytest.raises(TransactionAborted):
        run_replay(run, reporter)

    warnings = [e for e in reporter.events if e["event"] == "warning"]
    assert len(warnings) == 2 and "resuming" in warnings[0]["message"]
    # The two batches before the refused one were committed once, in spite of the retries.
    assert sorted(source_of(m) for m in read_topic(kafka_bootstrap, target)) == [
        (0, offset) for offset in range(8)
    ]


# ---------------------------------------------------------------- edges of the input


def test_an_empty_topic_replays_nothing_and_creates_the_output_topics(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(3)

    summary = replay(kafka_bootstrap, source, target)

    assert (summary.records_read, summary.end_offsets) == (0, {0: 0, 1: 0, 2: 0})
    assert read_topic(kafka_bootstrap, target) == []


def test_partitions_ending_in_markers_or_holding_only_aborted_records_complete(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": source})
    producer.init_transactions(30)
    producer.begin_transaction()
    for row in sample_rows(5):
        producer.produce(source, orjson.dumps(row), b"k", partition=0)
    producer.flush(30)  # written, then rolled back: partition 0 holds only aborted records
    producer.abort_transaction(30)
    producer.begin_transaction()
    for row in sample_rows(3):
        producer.produce(source, orjson.dumps(row), b"k", partition=1)
    producer.commit_transaction(30)  # partition 1 ends with a commit marker

    summary = replay(kafka_bootstrap, source, target)

    assert summary.end_offsets == {0: 6, 1: 4}
    assert summary.records_scored == 3
    assert sorted(source_of(m) for m in read_topic(kafka_bootstrap, target)) == [
        (1, 0), (1, 1), (1, 2),
    ]  # fmt: skip


def test_a_rerun_of_a_finished_replay_writes_nothing(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(2)
    produce_rows(kafka_bootstrap, source, sample_rows(50))
    first = replay(kafka_bootstrap, source, target)
    produce_rows(kafka_bootstrap, source, sample_rows(10, start=100))
    reporter = RecordingReporter()

    second = run_replay(options(kafka_bootstrap, source, target), reporter)

    assert (first.records_scored, second.records_read, second.resumed) == (50, 0, True)
    assert second.end_offsets == first.end_offsets
    assert reporter.events[0]["phase"] == "complete"
    assert len(read_topic(kafka_bootstrap, target)) == 50


def test_resuming_with_another_model_is_refused(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    produce_rows(kafka_bootstrap, source, sample_rows(20))
    replay(kafka_bootstrap, source, target)
    other = options(kafka_bootstrap, source, target)
    other = ReplayOptions(
        kafka=other.kafka, input_topic=source, output_topic=target,
        scoring=ScoringOptions(model=str(MODEL / "1"), provider="cpu"),
    )  # fmt: skip

    with pytest.raises(UsageError, match="other scoring options or other topics"):
        run_replay(other)


def test_from_timestamp_starts_at_the_first_record_at_or_after_it(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    now = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, row in enumerate(sample_rows(10)):
        producer.produce(source, orjson.dumps(row), b"k", timestamp=now - 60_000 + i * 1000)
    producer.flush(30)

    summary = replay(kafka_bootstrap, source, target, from_timestamp_ms=now - 60_000 + 6500)

    assert summary.start_offsets == {0: 7}
    assert sorted(source_of(m) for m in read_topic(kafka_bootstrap, target)) == [
        (0, 7), (0, 8), (0, 9),
    ]  # fmt: skip


def test_at_least_once_writes_every_record(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(2)
    produce_rows(kafka_bootstrap, source, sample_rows(300))

    summary = replay(kafka_bootstrap, source, target, exactly_once=False, batch_size=64)

    assert summary.delivery == "at-least-once"
    assert len(read_topic(kafka_bootstrap, target)) == summary.records_scored == 300


def output_end(bootstrap: str, topic: str) -> int:
    """The high watermark of partition 0: records plus one marker per transaction."""
    with Admin(KafkaSettings(bootstrap)) as admin:
        return admin.list_offsets(topic, [0], "latest", committed=False)[0]


@pytest.mark.parametrize(("interval", "transactions"), [(0.0, 3), (30.0, 1)])
def test_one_transaction_spans_the_batches_of_a_commit_interval(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]], interval: float,
    transactions: int,
) -> None:  # fmt: skip
    source, target = topics(1)
    produce_rows(kafka_bootstrap, source, sample_rows(12))

    summary = replay(kafka_bootstrap, source, target, batch_size=4, commit_interval_s=interval)

    # Three batches: one commit marker each, or one for all of them (the run's end commits).
    assert summary.records_read == summary.records_scored == 12
    assert sorted(source_of(m) for m in read_topic(kafka_bootstrap, target)) == [
        (0, offset) for offset in range(12)
    ]
    assert output_end(kafka_bootstrap, target) == 12 + transactions


def test_a_commit_interval_beyond_the_transaction_timeout_is_refused() -> None:
    with pytest.raises(UsageError, match="--commit-interval"):
        options("127.0.0.1:1", "in", "out", commit_interval_s=120.0)


def test_records_without_the_model_fields_stop_the_replay_before_any_output(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    rows = [{k: v for k, v in row.items() if k != "f03"} for row in sample_rows(30)]
    produce_rows(kafka_bootstrap, source, rows)

    with pytest.raises(MappingError, match="'f03' is missing"):
        replay(kafka_bootstrap, source, target)
    with pytest.raises(MappingError, match="'f03' is missing"):  # the rerun checks again
        replay(kafka_bootstrap, source, target)

    assert read_topic(kafka_bootstrap, target) == []
    assert read_topic(kafka_bootstrap, f"{target}.dlq") == []


def test_a_snapshot_under_which_nothing_was_written_gives_way_to_other_options(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    produce_rows(kafka_bootstrap, source, sample_rows(10))
    wrong = ("nosuch", *(f"f{i:02d}" for i in range(1, 30)))
    with pytest.raises(MappingError, match="'nosuch' is missing"):
        run_replay(
            dataclasses.replace(
                options(kafka_bootstrap, source, target),
                scoring=ScoringOptions(model=str(MODEL), provider="cpu", features=wrong),
            )
        )

    summary = replay(kafka_bootstrap, source, target)

    assert (summary.resumed, summary.records_scored) == (False, 10)
    assert len(read_topic(kafka_bootstrap, target)) == 10


def test_the_same_group_into_another_output_topic_is_refused(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]], unique_topic: Callable[..., str]
) -> None:
    source, target = topics(1)
    produce_rows(kafka_bootstrap, source, sample_rows(20))
    replay(kafka_bootstrap, source, target, group="shared-group-" + target)
    other = unique_topic(1)

    with pytest.raises(UsageError, match="other scoring options or other topics"):
        replay(kafka_bootstrap, source, other, group="shared-group-" + target)


# ---------------------------------------------------------------- the command line


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in stderr


def cli_replay(bootstrap: str, source: str, target: str, *extra: str) -> Any:
    return invoke(
        "replay", "-b", bootstrap, "-i", source, "-o", target, "-m", MODEL,
        "--provider", "cpu", *extra,
    )  # fmt: skip


def test_the_command_prints_a_json_summary_and_exits_0(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    produce_rows(kafka_bootstrap, source, sample_rows(20))

    result = cli_replay(kafka_bootstrap, source, target)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["event"] == "summary"
    assert (summary["records_scored"], summary["delivery"]) == (20, "exactly-once")


def test_a_missing_input_topic_exits_6_with_one_line(kafka_bootstrap: str) -> None:
    result = cli_replay(kafka_bootstrap, "no-such-topic-here", "out-topic")

    assert result.exit_code == 6
    assert_one_line_error(result.stderr, "input topic 'no-such-topic-here' does not exist")


def test_an_unreachable_broker_exits_6_with_one_line() -> None:
    result = cli_replay("127.0.0.1:1", "in", "out", "--connect-timeout", "1")

    assert result.exit_code == 6
    assert_one_line_error(result.stderr, "cannot reach Kafka at 127.0.0.1:1")


def test_a_refused_login_exits_6_with_one_line_and_no_secret(kafka_bootstrap: str) -> None:
    secret = "pa55-w0rd-never-printed"
    login = [
        "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
        "-X", "sasl.username=alice", "-X", f"sasl.password={secret}",
    ]  # fmt: skip

    result = cli_replay(kafka_bootstrap, "in", "out", *login)

    assert result.exit_code == 6
    assert_one_line_error(result.stderr, "refused access", "_AUTHENTICATION")
    assert secret not in result.stdout + result.stderr


def test_an_output_topic_with_fewer_partitions_exits_6(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]], unique_topic: Callable[..., str]
) -> None:
    source, _ = topics(3)
    narrow = unique_topic(partitions=1)

    result = cli_replay(kafka_bootstrap, source, narrow)

    assert result.exit_code == 6
    assert_one_line_error(result.stderr, "has 1 partition(s) but input topic")


def test_a_transaction_of_another_producer_hanging_on_the_output_stops_the_replay_with_the_fix(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]], unique_topic: Callable[..., str]
) -> None:
    source, _ = topics(2)
    produce_rows(kafka_bootstrap, source, sample_rows(10))
    target = unique_topic(partitions=2)
    # Another producer id's transaction, open on partition 1 of OUT: ours cannot end it.
    other = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{target}-x"})
    other.init_transactions(30)
    other.begin_transaction()
    other.produce(target, b"{}", partition=1)
    assert other.flush(30) == 0
    try:
        result = cli_replay(kafka_bootstrap, source, target, "--connect-timeout", "1")
    finally:
        other.abort_transaction(30)

    assert result.exit_code == 6
    assert_one_line_error(
        result.stderr,
        f"partition {target}[1] holds a transaction left open by another producer",
        f"kafka-transactions.sh --bootstrap-server {kafka_bootstrap} abort --topic {target} "
        "--partition 1 --start-offset 0",
    )
    assert read_topic(kafka_bootstrap, target) == []  # nothing written


def test_records_the_model_cannot_read_exit_4_with_one_line(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    produce_rows(kafka_bootstrap, source, [{"id": i, "amount": 1.5} for i in range(5)])

    result = cli_replay(kafka_bootstrap, source, target)

    assert result.exit_code == 4
    assert_one_line_error(result.stderr, "'f00' is missing", "fields found: amount, id")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1793577600000", 1793577600000),
        ("2026-11-02T00:00:00Z", 1793577600000),
        ("2026-11-02T01:00:00+01:00", 1793577600000),
        ("2026-11-02", 1793577600000),
    ],
)
def test_from_timestamp_takes_epoch_milliseconds_or_iso_8601(text: str, expected: int) -> None:
    assert parse_timestamp_ms(text) == expected


def test_an_unreadable_from_timestamp_exits_2_with_one_line() -> None:
    result = cli_replay("127.0.0.1:1", "in", "out", "--from-timestamp", "last tuesday")

    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "--from-timestamp", "ISO-8601")


def test_a_fresh_replay_into_an_output_that_holds_records_is_refused(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]]
) -> None:
    source, target = topics(1)
    produce_rows(kafka_bootstrap, source, sample_rows(20))
    replay(kafka_bootstrap, source, target)

    with pytest.raises(UsageError, match="is not empty"):
        replay(kafka_bootstrap, source, target, group="another-group-" + target)
    assert len(read_topic(kafka_bootstrap, target)) == 20

    replay(kafka_bootstrap, source, target, group="third-" + target, allow_nonempty_output=True)
    assert len(read_topic(kafka_bootstrap, target)) == 40
