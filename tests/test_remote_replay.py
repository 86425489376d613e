"""``streamscore replay`` through a real MLServer: the same scores as embedded, lineage in the
headers, and exactly once when the server dies mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from conftest import ModelServer
from streamscore.config import KeepColumns, ReplayOptions, ScoringOptions
from streamscore.kafka import headers as h
from streamscore.kafka.client import KafkaSettings
from streamscore.remote.settings import RemoteSettings
from streamscore.replay import run_replay
from test_replay import (
    MODEL,
    CommittedCounter,
    headers_of,
    produce_rows,
    read_topic,
    sample_rows,
    source_of,
)

pytestmark = pytest.mark.kafka

FEATURES = ",".join(f"f{i:02d}" for i in range(30))


def remote_options(bootstrap: str, source: str, target: str, model: str) -> ReplayOptions:
    return ReplayOptions(
        kafka=KafkaSettings(bootstrap),
        input_topic=source,
        output_topic=target,
        scoring=ScoringOptions(
            model=model,
            features=tuple(FEATURES.split(",")),
            provider="cpu",
            threads=1,
            batch_size=128,
            keep=KeepColumns.parse("transaction_id"),
            remote=RemoteSettings(concurrency=3),
        ),
    )


@pytest.fixture
def topics(unique_topic: Callable[..., str]) -> Callable[[int], tuple[str, str]]:
    """``topics(partitions)`` -> a new input topic and the name for its output topic."""

    def make(partitions: int = 3) -> tuple[str, str]:
        source = unique_topic(partitions=partitions, prefix="remote-in")
        return source, f"{source}.scored"

    return make


def scores_by_source(bootstrap: str, topic: str) -> dict[tuple[int, int], dict[str, Any]]:
    return {source_of(m): orjson.loads(m.value()) for m in read_topic(bootstrap, topic)}


def test_replay_through_the_server_scores_as_embedded_and_names_the_server(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]], model_server: ModelServer
) -> None:
    source, target = topics(2)
    produce_rows(kafka_bootstrap, source, sample_rows(600))
    url = model_server.model("fraud")
    remote = run_replay(remote_options(kafka_bootstrap, source, target, url))
    local = run_replay(remote_options(kafka_bootstrap, source, target + ".local", str(MODEL / "2")))
    assert remote.records_scored == local.records_scored == 600
    assert (remote.model_version, remote.model_server) == ("2", model_server.url)
    assert "model_server" not in local.as_dict()
    served = scores_by_source(kafka_bootstrap, target)
    embedded = scores_by_source(kafka_bootstrap, target + ".local")
    assert served.keys() == embedded.keys()
    for key, row in served.items():
        assert row["label"] == embedded[key]["label"]
        assert row["transaction_id"] == embedded[key]["transaction_id"]
        assert np.isclose(row["probabilities_1"], embedded[key]["probabilities_1"], atol=1e-6)
    first = headers_of(read_topic(kafka_bootstrap, target)[0])
    assert first[h.MODEL_SERVER] == model_server.url
    assert (first[h.MODEL], first[h.MODEL_VERSION]) == ("fraud", "2")


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_a_server_killed_mid_replay_stops_it_with_exit_12_and_a_rerun_writes_each_input_once(
    kafka_bootstrap: str,
    topics: Callable[[int], tuple[str, str]],
    model_server: ModelServer,
    grpc: bool,
) -> None:
    source, target = topics(3)
    total = 2000  # 200 requests: the server dies with most of them still to come
    produce_rows(kafka_bootstrap, source, sample_rows(total))
    command = [
        sys.executable, "-m", "streamscore", "replay", "-b", kafka_bootstrap, "-i", source,
        "-o", target, "-m", model_server.model("fraud", grpc=grpc), "--features", FEATURES,
        "--batch-size", "10", "--concurrency", "2", "--retries", "2", "--timeout", "2",
        "--log-format", "json",
        # A transaction per batch, as the test was written for: with the default 1 s of
        # batches per transaction the run can end before the server is killed.
        "--commit-interval", "0",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert json.loads(process.stdout.readline())["phase"] == "started"
    counter = CommittedCounter(kafka_bootstrap, target)
    counter.wait_for(total // 4)
    model_server.stop(hard=True)  # SIGKILL: connections reset mid-request
    _, stderr = process.communicate(timeout=120)
    counter.consumer.close()
    assert process.returncode == 12, stderr
    assert len(stderr.strip().splitlines()) == 1 and "unavailable" in stderr

    model_server.start()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180)

    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout.splitlines()[-1])
    assert summary["resumed"] is True and summary["records_dead_lettered"] == 0
    produced = sorted(source_of(m) for m in read_topic(kafka_bootstrap, target))
    expected = sorted((m.partition(), m.offset()) for m in read_topic(kafka_bootstrap, source))
    assert len(expected) == total and produced == expected  # none lost, none twice
    assert read_topic(kafka_bootstrap, target + ".dlq") == []  # the outage is not bad data


def test_rows_the_server_rejects_are_dead_lettered_as_remote_rejected_and_only_they(
    kafka_bootstrap: str, topics: Callable[[int], tuple[str, str]], model_server: ModelServer
) -> None:
    source, target = topics(1)
    rows = sample_rows(300)
    bad = {7, 150, 299}
    for i in bad:
        rows[i]["f00"] = -5.0
    produce_rows(kafka_bootstrap, source, rows)
    summary = run_replay(
        remote_options(kafka_bootstrap, source, target, model_server.model("fraud_strict"))
    )
    assert (summary.records_scored, summary.records_dead_lettered) == (297, 3)
    assert summary.dead_letter_kinds == {"remote_rejected": 3}
    dead = read_topic(kafka_bootstrap, target + ".dlq")
    assert sorted(source_of(m)[1] for m in dead) == sorted(bad)
    for message in dead:
        found = headers_of(message)
        assert found[h.ERROR_TYPE] == "remote_rejected"
        assert "must be at least 0" in found[h.ERROR_MESSAGE]
        assert found[h.MODEL_SERVER] == model_server.url
