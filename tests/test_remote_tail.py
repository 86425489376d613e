"""``streamscore tail`` through a real MLServer that goes away for a few seconds: consumption
pauses, nothing is lost or dead-lettered, and it resumes by itself."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import ModelServer
from test_tail import TailProcess, input_offsets, produce, read_topic, sample_values, scrape

pytestmark = pytest.mark.kafka

FEATURES = ",".join(f"f{i:02d}" for i in range(30))


@pytest.fixture
def tails() -> Iterator[list[TailProcess]]:
    started: list[TailProcess] = []
    yield started
    for tail in started:
        if tail.process.poll() is None:
            tail.process.kill()
            tail.process.wait(timeout=10)
        tail.close()


def test_tail_pauses_through_a_server_outage_and_resumes_without_loss_or_dead_letters(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tails: list[TailProcess],
    model_server: ModelServer,
) -> None:
    source = unique_topic(partitions=2)
    out = f"{source}.out"
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g",
        "-m", model_server.model("fraud"), "--features", FEATURES, "--metrics-port", "0",
        "--max-wait", "5", "--retries", "1", "--timeout", "1",
    )  # fmt: skip
    tails.append(tail)
    started = tail.wait_for(lambda e: e.get("phase") == "started", "its start")
    tail.wait_for(lambda e: e["event"] == "assigned", "its partitions")
    keys = [f"k{i}".encode() for i in range(400)]
    values = sample_values(400)
    produce(kafka_bootstrap, source, values[:200], keys[:200])
    assert len(read_topic(kafka_bootstrap, out, expected=200)) == 200

    model_server.stop()
    produce(kafka_bootstrap, source, values[200:], keys[200:])
    tail.wait_for(lambda e: "consumption paused" in e.get("message", ""), "a pause")
    status = tail.wait_for(
        lambda e: e["event"] == "status" and "open" in (e.get("model_servers") or {}).values(),
        "an open circuit breaker in its status",
    )
    assert list(status["model_servers"]) == [model_server.url]
    metrics = scrape(started["metrics_port"])["streamscore_model_server_breaker"]
    assert metrics[(("server", model_server.url), ("state", "closed"))] == 0
    time.sleep(2)  # the server stays away a few seconds
    model_server.start()
    tail.wait_for(lambda e: "consumption resumed" in e.get("message", ""), "the resume")

    outputs = read_topic(kafka_bootstrap, out, expected=400)
    assert sorted(o.source for o in outputs) == sorted(input_offsets(kafka_bootstrap, source))
    assert read_topic(kafka_bootstrap, f"{out}.dlq", expected=0, quiet_s=0.5) == []
    assert tail.stop(signal.SIGTERM) == 0
    summary = tail.summary()
    assert summary["outage_pauses"] >= 1 and summary["records_dead_lettered"] == 0
    assert summary["serving"] == {"primary": f"fraud:2 @ {model_server.url}"}
