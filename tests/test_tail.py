"""``streamscore tail`` against a real broker: live scoring in a group, rollout and recovery.

Every tail runs as a real process (``python -m streamscore tail --log-format json``), read
through its JSON event lines; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from streamscore.kafka.headers import MODEL_VERSION, SOURCE_OFFSET, SOURCE_PARTITION, header_dict
from streamscore.model.repository import resolve_model
from streamscore.model.session import load_model
from streamscore.routing import key_bucket
from streamscore.scoring import Scorer

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "sample_data" / "models"
SAMPLE_DAY = REPO / "sample_data" / "transactions" / "date=2026-11-04" / "part-0.parquet"
FIELDS = ["transaction_id", *(f"f{i:02d}" for i in range(30)), "merchant_category"]
WAIT_S = 60  # the bound on every wait; a healthy run takes a fraction of it


# --- helpers --------------------------------------------------------------------------------------


def sample_values(count: int, start: int = 0) -> list[bytes]:
    """``count`` sample transactions as JSON object values."""
    frame = pl.read_parquet(SAMPLE_DAY, columns=FIELDS).slice(start, count)
    return frame.write_ndjson().encode().splitlines()


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in zip(keys, values, strict=True):
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


@dataclass(frozen=True)
class Output:
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    headers: dict[str, str]

    @property
    def value(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw or b"{}")
        return parsed

    @property
    def source(self) -> tuple[int, int]:
        return int(self.headers[SOURCE_PARTITION]), int(self.headers[SOURCE_OFFSET])


class SteadyFeed:
    """``with SteadyFeed(...) as sent:`` produces 40 sample records to ``topic`` every
    ``pause_s`` on a thread until the block ends; ``sent["records"]`` counts them."""

    def __init__(self, bootstrap: str, topic: str, *, pause_s: float) -> None:
        self.bootstrap, self.topic, self.pause_s = bootstrap, topic, pause_s
        self.sent = Counter[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)

    def _feed(self) -> None:
        batch = 0
        while not self._stop.is_set():
            values = sample_values(40, start=batch * 40)
            keys = [f"k{batch}-{i}".encode() for i in range(40)]
            produce(self.bootstrap, self.topic, values, keys)
            self.sent["records"] += 40
            batch += 1
            time.sleep(self.pause_s)

    def __enter__(self) -> Counter[str]:
        self._thread.start()
        return self.sent

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_S)


def read_topic(
    bootstrap: str, topic: str, expected: int, *, read_committed: bool = True, quiet_s: float = 1
) -> list[Output]:
    """Every record of ``topic`` once ``expected`` arrived and ``quiet_s`` passed without more
    (so duplicates show), or whatever arrived within WAIT_S."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    deadline = time.monotonic() + WAIT_S
    partitions = partitions_of(consumer, topic)  # tail may not have created it yet
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    found: list[Output] = []
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            messages = consumer.consume(500, 0.2)
            for m in messages:
                assert m.error() is None, m.error()
                headers = header_dict(m.headers())
                found.append(Output(m.partition(), m.offset(), m.key(), m.value(), headers))
            if messages:
                last = time.monotonic()
            elif len(found) >= expected and time.monotonic() - last >= quiet_s:
                break
    finally:
        consumer.close()
    return found


def partitions_of(client: Consumer, topic: str) -> list[int]:
    deadline = time.monotonic() + WAIT_S
    while True:
        described = client.list_topics(topic, timeout=10).topics.get(topic)
        if described is not None and described.error is None and described.partitions:
            return sorted(described.partitions)
        assert time.monotonic() < deadline, f"topic {topic} never appeared"
        time.sleep(0.1)


class TailProcess:
    """A ``streamscore tail`` process whose JSON event lines are collected as they come."""

    def __init__(self, bootstrap: str, *args: str, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "streamscore", "tail", "-b", bootstrap]
        command += ["--log-format", "json", "--start-from", "earliest", "--threads", "1"]
        command += ["--status-interval", "1", *args]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.events: list[dict[str, Any]] = []
        self.stderr_text = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for event in list(self.events):
                if predicate(event):
                    return event
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"tail never reported {what}; stderr: {self.stderr_tail()}")

    def owned(self) -> set[int]:
        """The partitions the last rebalance event left this process."""
        changes = [e for e in list(self.events) if e["event"] in ("assigned", "revoked", "lost")]
        return set(changes[-1]["owned"]) if changes else set()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and return the exit status (bounded wait)."""
        self.process.send_signal(sig)
        code = self.process.wait(timeout=WAIT_S)
        self._reader.join(timeout=10)
        self.stderr_text = self.process.stderr.read() if self.process.stderr else ""
        self.close()
        return code

    def close(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def stderr_tail(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        if self.process.stderr is None or self.process.stderr.closed:
            return self.stderr_text[-2000:]
        return self.process.stderr.read()[-2000:]

    def summary(self) -> dict[str, Any]:
        return next(e for e in self.events if e["event"] == "summary")


@pytest.fixture
def tails() -> Iterator[list[TailProcess]]:
    """Processes started by a test; any still running at its end are killed."""
    started: list[TailProcess] = []
    yield started
    for tail in started:
        if tail.process.poll() is None:
            tail.process.kill()
            tail.process.wait(timeout=10)
        tail.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def input_offsets(bootstrap: str, topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record in ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets"})
    try:
        partitions = partitions_of(consumer, topic)
        return {
            (p, offset)
            for p in partitions
            for offset in range(*consumer.get_watermark_offsets(TopicPartition(topic, p), 10))
        }
    finally:
        consumer.close()


# --- tests ----------------------------------------------------------------------------------------


def test_records_produced_while_tail_runs_are_each_scored_and_it_stops_cleanly(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tails: list[TailProcess]
) -> None:
    source = unique_topic(partitions=2)
    out = f"{source}.out"
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g",
        "-m", str(MODELS / "fraud"), "--metrics-port", "0", "--max-wait", "5",
    )  # fmt: skip
    tails.append(tail)
    started = tail.wait_for(lambda e: e.get("phase") == "started", "its start")
    tail.wait_for(lambda e: e["event"] == "assigned", "its partitions")

    values = sample_values(300)
    keys = [f"k{i}".encode() for i in range(300)]
    bad = (b"bad", b"not json")
    produce(
        kafka_bootstrap,
        source,
        [*values[:150], bad[1], *values[150:]],
        [*keys[:150], bad[0], *keys[150:]],
    )
    outputs = read_topic(kafka_bootstrap, out, expected=300)
    dead = read_topic(kafka_bootstrap, f"{out}.dlq", expected=1)

    every_input = input_offsets(kafka_bootstrap, source)
    assert sorted(o.source for o in outputs) == sorted(every_input - {dead[0].source})
    by_key = {o.key: o for o in outputs}
    assert set(by_key) == set(keys)
    first = json.loads(values[0])
    assert by_key[b"k0"].value["transaction_id"] == first["transaction_id"]
    assert 0 <= by_key[b"k0"].value["probabilities_1"] <= 1
    assert {o.headers[MODEL_VERSION] for o in outputs} == {"2"}
    assert dead[0].key == b"bad" and dead[0].headers["streamscore.error.type"] == "not_json"

    port = started["metrics_port"]
    tail.wait_for(
        lambda e: e["event"] == "status" and e["records_out"] == 300 and len(e["lag"]) == 2,
        "300 outputs and the lag of both partitions",
    )
    metrics = scrape(port)
    assert metrics["streamscore_records_out_total"] == {(("version", "2"),): 300.0}
    assert metrics["streamscore_records_dead_lettered_total"] == {(("version", "none"),): 1.0}
    assert metrics["streamscore_end_to_end_seconds_count"][()] == 300.0
    assert metrics["streamscore_errors_total"] == {(("kind", "not_json"),): 1.0}
    info = next(iter(metrics["streamscore_model_info"]))
    assert dict(info)["role"] == "primary" and dict(info)["version"] == "2"
    lags = metrics["streamscore_consumer_lag"]
    assert {dict(labels)["partition"] for labels in lags} == {"0", "1"}

    assert tail.stop(signal.SIGTERM) == 0
    summary = tail.summary()
    assert (summary["records_read"], summary["records_scored"]) == (301, 300)
    assert summary["records_dead_lettered"] == 1


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_group_members_share_partitions_and_lose_nothing_when_stopped_or_killed(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tails: list[TailProcess],
    exactly_once: bool,
) -> None:
    source = unique_topic(partitions=6)
    out = f"{source}.out"
    args = ["-i", source, "-o", out, "-g", f"{source}-g", "-m", str(MODELS / "fraud" / "1")]
    # Short group and transaction timeouts, so the killed member's share moves on quickly.
    args += ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]
    args += ["-X", "transaction.timeout.ms=3000", "--max-wait", "20"]
    if exactly_once:
        args.append("--exactly-once")
    members = [TailProcess(kafka_bootstrap, *args) for _ in range(3)]
    tails.extend(members)

    def split_three_ways() -> bool:
        owned = [m.owned() for m in members]
        return all(owned) and len(set.union(*owned)) == sum(map(len, owned)) == 6

    wait_until(split_three_ways, "the three members to split the six partitions")
    with SteadyFeed(kafka_bootstrap, source, pause_s=0.1) as sent:  # while members come and go
        wait_until(lambda: sent["records"] >= 200, "records to flow")
        assert members[0].stop(signal.SIGTERM) == 0
        wait_until(lambda: sent["records"] >= 400, "more records")
        members[1].wait_for(lambda e: e["event"] == "status" and e["records_out"] > 0, "work")
        assert members[1].stop(signal.SIGKILL) == -signal.SIGKILL
        wait_until(lambda: members[2].owned() == set(range(6)), "the survivor to own all")
        wait_until(lambda: sent["records"] >= 800, "records after the rebalance")

    inputs = input_offsets(kafka_bootstrap, source)
    outputs = read_topic(kafka_bootstrap, out, expected=len(inputs), read_committed=True)
    per_input = Counter(o.source for o in outputs)
    assert set(per_input) == inputs  # every input scored
    if exactly_once:
        assert set(per_input.values()) == {1}
    assert members[2].stop(signal.SIGTERM) == 0


def test_a_member_joining_mid_stream_takes_its_share_promptly_and_exactly_once(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tails: list[TailProcess]
) -> None:
    """A rebalance that revokes partitions while batches are in flight, exactly once: the
    batches in flight are rolled back and read again (a commit cannot go through while the
    rebalance waits for it), so the partitions move at once and nothing is written twice."""
    source = unique_topic(partitions=4)
    out = f"{source}.out"
    args = ["-i", source, "-o", out, "-g", f"{source}-g", "-m", str(MODELS / "fraud" / "1")]
    args += ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]
    args += ["--max-wait", "20", "--exactly-once"]
    first = TailProcess(kafka_bootstrap, *args)
    tails.append(first)
    wait_until(lambda: first.owned() == set(range(4)), "the first member to own all four")
    # Batches in flight whenever the group rebalances.
    with SteadyFeed(kafka_bootstrap, source, pause_s=0.02) as sent:
        wait_until(lambda: sent["records"] >= 400, "records to flow")
        second = TailProcess(kafka_bootstrap, *args)
        tails.append(second)
        joined = time.monotonic()

        def split() -> bool:
            owned = [first.owned(), second.owned()]
            return all(owned) and len(owned[0] | owned[1]) == sum(map(len, owned)) == 4

        wait_until(split, "the two members to split the partitions")
        # A revocation waiting for a commit that the rebalance itself holds up took the
        # barrier's whole minute; a healthy handover takes seconds.
        assert time.monotonic() - joined < 30, "the handover waited out the barrier"
        floor = sent["records"] + 400
        wait_until(lambda: sent["records"] >= floor, "records after the rebalance")

    inputs = input_offsets(kafka_bootstrap, source)
    outputs = read_topic(kafka_bootstrap, out, expected=len(inputs), read_committed=True)
    per_input = Counter(o.source for o in outputs)
    assert set(per_input) == inputs and set(per_input.values()) == {1}
    assert first.stop(signal.SIGTERM) == 0 and second.stop(signal.SIGTERM) == 0


def test_a_new_version_is_hot_reloaded_mid_stream_and_a_broken_one_is_rejected(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tails: list[TailProcess], tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(MODELS / "fraud" / "1", repo / "fraud" / "1")
    source = unique_topic(partitions=2)
    out = f"{source}.out"
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g", "-m", str(repo / "fraud"),
        "--reload-interval", "0.2", "--max-wait", "5",
    )  # fmt: skip
    tails.append(tail)
    tail.wait_for(lambda e: e["event"] == "assigned", "its partitions")

    values = sample_values(600)
    keys = [f"k{i}".encode() for i in range(600)]
    produce(kafka_bootstrap, source, values[:200], keys[:200])
    tail.wait_for(lambda e: e["event"] == "status" and e["records_out"] >= 200, "200 scored")
    shutil.copytree(MODELS / "fraud" / "2", repo / "fraud" / "2")
    produce(kafka_bootstrap, source, values[200:400], keys[200:400])  # in flight as it loads
    tail.wait_for(lambda e: e["event"] == "model_loaded" and e["version"] == "2", "version 2")
    (repo / "fraud" / "3").mkdir()
    (repo / "fraud" / "3" / "model.onnx").write_bytes(b"\x08\x07garbage, not a model")
    rejected = tail.wait_for(lambda e: e["event"] == "model_rejected", "version 3 rejected")
    produce(kafka_bootstrap, source, values[400:], keys[400:])

    outputs = read_topic(kafka_bootstrap, out, expected=600)
    assert tail.stop() == 0

    assert rejected["version"] == "3" and rejected["serving"] == "2"
    assert sorted(o.source for o in outputs) == sorted(input_offsets(kafka_bootstrap, source))
    versions = {o.key: o.headers[MODEL_VERSION] for o in outputs}
    assert {versions[k] for k in keys[:200]} == {"1"}
    assert {versions[k] for k in keys[400:]} == {"2"}  # still serving after the rejection
    for partition in (0, 1):  # the switch happens once, between batches
        ordered = sorted((o for o in outputs if o.partition == partition), key=lambda o: o.source)
        in_order = [o.headers[MODEL_VERSION] for o in ordered]
        assert in_order == sorted(in_order)
    # Each output's header names the version whose scores it carries.
    batch = pa.RecordBatch.from_pylist([json.loads(v) for v in values])
    expected = {}
    for version in ("1", "2"):
        model = load_model(resolve_model(MODELS / "fraud" / version), provider="cpu")
        scores = Scorer.for_schema(model, batch.schema).score(batch).scores
        expected[version] = scores.column("probabilities_1").to_numpy()
    for i, key in enumerate(keys):
        output = next(o for o in outputs if o.key == key)
        assert np.isclose(output.value["probabilities_1"], expected[versions[key]][i], atol=1e-6)


def test_tail_follows_a_registry_alias_and_rejects_versions_that_cannot_serve(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tails: list[TailProcess],
    tmp_path: Path,
    mlflow_registry: Any,
    dense_model: Any,
) -> None:
    store, name = mlflow_registry.store, f"tail-{uuid.uuid4().hex[:8]}"  # its own aliases
    v1, run_1 = store.register_onnx(name, MODELS / "fraud" / "1" / "model.onnx")
    v2, _ = store.register_onnx(name, MODELS / "fraud" / "2" / "model.onnx")
    misfit, _ = store.register_onnx(name, dense_model.path)  # reads f0..f3: not in the records
    other_flavor = store.register_sklearn(name)
    store.set_alias(name, "champion", v1)
    source = unique_topic(partitions=1)
    out = f"{source}.out"
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g",
        "-m", f"models:/{name}@champion", "--registry-uri", mlflow_registry.uri,
        "--model-cache", str(tmp_path / "cache"), "--reload-interval", "0.2", "--max-wait", "5",
    )  # fmt: skip
    tails.append(tail)
    tail.wait_for(lambda e: e["event"] == "assigned", "its partitions")

    values = sample_values(200)
    keys = [f"k{i}".encode() for i in range(200)]
    produce(kafka_bootstrap, source, values[:100], keys[:100])
    tail.wait_for(lambda e: e["event"] == "status" and e["records_out"] >= 100, "100 scored")
    rejected = []
    for broken in (other_flavor, misfit):
        store.set_alias(name, "champion", broken)
        rejected.append(
            tail.wait_for(
                lambda e, v=broken: e["event"] == "model_rejected" and e["version"] == v,
                f"version {broken} rejected",
            )
        )
    store.set_alias(name, "champion", v2)
    tail.wait_for(lambda e: e["event"] == "model_loaded" and e["version"] == v2, "version 2")
    produce(kafka_bootstrap, source, values[100:], keys[100:])
    outputs = read_topic(kafka_bootstrap, out, expected=200)
    assert tail.stop() == 0

    assert "flavor sklearn" in rejected[0]["reason"] and rejected[0]["serving"] == v1
    assert rejected[1]["serving"] == v1
    versions = {o.key: o.headers[MODEL_VERSION] for o in outputs}
    assert len(outputs) == 200
    assert {versions[k] for k in keys[:100]} == {v1}
    assert {versions[k] for k in keys[100:]} == {v2}
    assert {o.headers["streamscore.model.alias"] for o in outputs} == {"champion"}
    assert {o.headers["streamscore.model.registry"] for o in outputs} == {mlflow_registry.uri}
    first = next(o for o in outputs if o.key == keys[0])
    assert first.headers["streamscore.model.run_id"] == run_1
    summary = next(e for e in tail.events if e["event"] == "summary")
    assert summary["model_lineage"]["primary"]["alias"] == "champion"


def test_canary_takes_a_stable_share_of_keys_and_shadow_scores_everything(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tails: list[TailProcess]
) -> None:
    source = unique_topic(partitions=2)
    out = f"{source}.out"
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g",
        "-m", str(MODELS / "fraud" / "1"), "--canary", "2:30", "--shadow", "2",
    )  # fmt: skip
    tails.append(tail)
    values = sample_values(1000)
    keys = [f"customer-{i}".encode() for i in range(800)] + [
        f"customer-{i}".encode()
        for i in range(200)  # a second record for 200 keys
    ]
    produce(kafka_bootstrap, source, values, keys)

    outputs = read_topic(kafka_bootstrap, out, expected=1000)
    shadow = read_topic(kafka_bootstrap, f"{out}.shadow", expected=1000)
    status = tail.wait_for(lambda e: e["event"] == "status" and e["records_out"] == 1000, "1000")
    assert tail.stop() == 0

    assert len(outputs) == 1000
    versions: dict[bytes | None, set[str]] = {}
    for o in outputs:
        versions.setdefault(o.key, set()).add(o.headers[MODEL_VERSION])
    assert all(len(v) == 1 for v in versions.values())  # one version per key
    on_canary = {k for k, v in versions.items() if v == {"2"}}
    assert on_canary == {k for k in versions if k is not None and key_bucket(k) < 3000}
    share = sum(1 for o in outputs if o.headers[MODEL_VERSION] == "2") / len(outputs)
    assert 0.24 < share < 0.36
    assert sorted(o.source for o in shadow) == sorted(o.source for o in outputs)
    assert {o.headers[MODEL_VERSION] for o in shadow} == {"2"}
    assert status["shadow"]["compared"] == 1000
    assert status["versions"] == {"primary": "fraud:1", "canary": "fraud:2", "shadow": "fraud:2"}


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A broker of this test's own (it is restarted) and a function that restarts it."""
    script = REPO / "scripts" / "kafka-local"
    env = {**os.environ, "KAFKA_LOCAL_HOME": str(tmp_path / "kafka"), "PYTHON": sys.executable}

    def run(*command: str) -> str:
        done = subprocess.run(
            [str(script), *command], env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip().splitlines()[-1]

    bootstrap = run("start")
    try:
        yield bootstrap, lambda: run("restart", "2")
    finally:
        subprocess.run([str(script), "stop"], env=env, capture_output=True, timeout=120)


def test_tail_rides_out_a_broker_restart_without_losing_records(
    own_broker: tuple[str, Callable[[], None]], tails: list[TailProcess]
) -> None:
    bootstrap, restart = own_broker
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("in", 2, 1)])["in"].result(timeout=30)
    tail = TailProcess(bootstrap, "-i", "in", "-o", "out", "-g", "g", "-m", str(MODELS / "fraud"))
    tails.append(tail)
    tail.wait_for(lambda e: e["event"] == "assigned", "its partitions")
    values = sample_values(200)
    produce(bootstrap, "in", values, [f"k{i}".encode() for i in range(200)])
    tail.wait_for(lambda e: e["event"] == "status" and e["records_out"] >= 200, "200 scored")

    # Records keep coming before, during and after the outage (the producer buffers them).
    feeder_stop = threading.Event()

    def feed() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        batch = 0
        while not feeder_stop.is_set():
            for i, value in enumerate(sample_values(20, start=200 + batch * 20)):
                producer.produce("in", value, f"r{batch}-{i}".encode())
            producer.poll(0)
            batch += 1
            time.sleep(0.1)
        assert producer.flush(WAIT_S) == 0

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        time.sleep(0.5)
        restart()  # down for 2 s; same port, same data
        time.sleep(1)
    finally:
        feeder_stop.set()
        feeder.join(timeout=WAIT_S)

    expected = input_offsets(bootstrap, "in")
    outputs = read_topic(bootstrap, "out", expected=len(expected))
    assert {o.source for o in outputs} == expected
    assert len(expected) > 260  # records were produced across the restart
    assert tail.stop() == 0


def test_an_output_over_the_output_topics_limit_is_a_dead_letter_as_in_replay(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tails: list[TailProcess]
) -> None:
    source = unique_topic(partitions=1)
    out = f"{source}.out"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = NewTopic(out, 1, 1, config={"max.message.bytes": "2000"})
    admin.create_topics([created])[out].result(timeout=30)
    values = sample_values(6)
    big = json.loads(values[3])
    big["note"] = "x" * 2500  # fits the input topic; its scored output does not fit OUT
    values[3] = json.dumps(big).encode()
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g",
        "-m", str(MODELS / "fraud" / "1"), "--keep", "all",
    )  # fmt: skip
    tails.append(tail)
    tail.wait_for(lambda e: e["event"] == "assigned", "its partitions")
    produce(kafka_bootstrap, source, values, [f"k{i}".encode() for i in range(6)])

    outputs = read_topic(kafka_bootstrap, out, expected=5)
    (letter,) = read_topic(kafka_bootstrap, f"{out}.dlq", expected=1)
    assert tail.stop() == 0

    assert sorted(o.source for o in outputs) == [(0, i) for i in (0, 1, 2, 4, 5)]
    assert letter.source == (0, 3)
    assert letter.headers["streamscore.error.type"] == "output_too_large"
