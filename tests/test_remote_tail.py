"""``streamscore tail`` through a real MLServer: a server that goes away for a few seconds
(consumption pauses, nothing is lost or dead-lettered, it resumes by itself), a new version
loaded on the server (hot reload) and canary/shadow versions on the same server."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import ModelServer
from streamscore.kafka.headers import MODEL_SERVER, MODEL_VERSION
from streamscore.routing import key_bucket
from test_tail import (
    MODELS,
    TailProcess,
    input_offsets,
    produce,
    read_topic,
    sample_values,
    scrape,
)

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


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_tail_pauses_through_a_server_outage_and_resumes_without_loss_or_dead_letters(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tails: list[TailProcess],
    model_server: ModelServer,
    grpc: bool,
) -> None:
    server = model_server.grpc_url if grpc else model_server.url
    source = unique_topic(partitions=2)
    out = f"{source}.out"
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g",
        "-m", model_server.model("fraud", grpc=grpc), "--features", FEATURES, "--metrics-port", "0",
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
    assert list(status["model_servers"]) == [server]
    metrics = scrape(started["metrics_port"])["streamscore_model_server_breaker"]
    assert metrics[(("server", server), ("state", "closed"))] == 0
    time.sleep(2)  # the server stays away a few seconds
    model_server.start()
    tail.wait_for(lambda e: "consumption resumed" in e.get("message", ""), "the resume")

    outputs = read_topic(kafka_bootstrap, out, expected=400)
    assert sorted(o.source for o in outputs) == sorted(input_offsets(kafka_bootstrap, source))
    assert read_topic(kafka_bootstrap, f"{out}.dlq", expected=0, quiet_s=0.5) == []
    assert tail.stop(signal.SIGTERM) == 0
    summary = tail.summary()
    assert summary["outage_pauses"] >= 1 and summary["records_dead_lettered"] == 0
    assert summary["serving"] == {"primary": f"fraud:2 @ {server}"}


@pytest.fixture
def served_name(model_server: ModelServer) -> Iterator[str]:
    """A model name of this test's own on the session's server; its versions are removed
    at the end."""
    from support import model_server as support

    name = f"live_{uuid.uuid4().hex[:8]}"
    yield name
    support.remove_model(model_server.home, name)


def _following_version_1(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tails: list[TailProcess],
    model_server: ModelServer,
    served_name: str,
    *,
    url: str,
    reload_interval: str,
) -> tuple[TailProcess, str, str, list[bytes], list[Any]]:
    """Version 1 of ``served_name`` loaded on the server, and a tail following ``url`` (the
    model without a version) that has scored the first 100 of 200 records: the tail, its
    input and output topics, the 200 keys and values."""
    from support import model_server as support

    support.add_version(model_server.home, served_name, "1", MODELS / "fraud" / "1" / "model.onnx")
    source = unique_topic(partitions=1)
    out = f"{source}.out"
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g", "-m", url,
        "--features", FEATURES, "--reload-interval", reload_interval, "--max-wait", "5",
    )  # fmt: skip
    tails.append(tail)
    tail.wait_for(lambda e: e["event"] == "assigned", "its partitions")
    keys = [f"k{i}".encode() for i in range(200)]
    values = sample_values(200)
    produce(kafka_bootstrap, source, values[:100], keys[:100])
    tail.wait_for(lambda e: e["event"] == "status" and e["records_out"] >= 100, "100 scored")
    return tail, source, out, keys, values


def test_tail_switches_to_a_version_loaded_on_the_server_and_rejects_one_that_does_not_fit(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tails: list[TailProcess],
    model_server: ModelServer,
    served_name: str,
    dense_model: Any,
) -> None:
    from support import model_server as support

    tail, source, out, keys, values = _following_version_1(
        kafka_bootstrap, unique_topic, tails, model_server, served_name,
        url=model_server.model(served_name), reload_interval="0.2",
    )  # fmt: skip

    support.add_version(model_server.home, served_name, "2", MODELS / "fraud" / "2" / "model.onnx")
    loaded = tail.wait_for(lambda e: e["event"] == "model_loaded", "version 2 loaded")
    support.add_version(model_server.home, served_name, "3", dense_model.path)  # reads 4 columns
    rejected = tail.wait_for(lambda e: e["event"] == "model_rejected", "version 3 rejected")
    produce(kafka_bootstrap, source, values[100:], keys[100:])
    outputs = read_topic(kafka_bootstrap, out, expected=200)
    assert tail.stop() == 0

    assert loaded["version"] == "2" and loaded["previous_version"] == "1"
    assert loaded["server"] == model_server.url
    assert rejected["version"] == "3" and rejected["serving"] == "2"
    versions = {o.key: o.headers[MODEL_VERSION] for o in outputs}
    assert len(outputs) == 200
    assert {versions[k] for k in keys[:100]} == {"1"}
    assert {versions[k] for k in keys[100:]} == {"2"}  # still 2 after 3 was rejected
    assert {o.headers[MODEL_SERVER] for o in outputs} == {model_server.url}
    summary = tail.summary()
    assert summary["reloads"] == 1 and summary["versions_rejected"] == 1
    assert summary["serving"] == {"primary": f"{served_name}:2 @ {model_server.url}"}


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_tail_waits_for_the_next_version_when_its_version_goes_away_on_the_server(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tails: list[TailProcess],
    model_server: ModelServer,
    served_name: str,
    grpc: bool,
) -> None:
    """A version replaced in place (unloaded, its successor loaded a moment later): tail
    pauses instead of failing, serves the version the server answers with, loses nothing."""
    from support import model_server as support

    tail, source, out, keys, values = _following_version_1(
        kafka_bootstrap, unique_topic, tails, model_server, served_name,
        url=model_server.model(served_name, grpc=grpc),
        reload_interval="600",  # no poll of its own meanwhile
    )  # fmt: skip

    support.remove_model(model_server.home, served_name)  # version 1 is gone
    produce(kafka_bootstrap, source, values[100:], keys[100:])
    paused = tail.wait_for(lambda e: "another version" in e.get("message", ""), "a pause")
    support.add_version(model_server.home, served_name, "2", MODELS / "fraud" / "2" / "model.onnx")
    loaded = tail.wait_for(lambda e: e["event"] == "model_loaded", "version 2 loaded")
    outputs = read_topic(kafka_bootstrap, out, expected=200)
    assert tail.stop() == 0

    assert paused["event"] == "warning" and "consumption paused" in paused["message"]
    assert loaded["version"] == "2" and loaded["previous_version"] == "1"
    versions = {o.key: o.headers[MODEL_VERSION] for o in outputs}
    assert len(outputs) == 200
    assert {versions[k] for k in keys[:100]} == {"1"}
    assert {versions[k] for k in keys[100:]} == {"2"}
    summary = tail.summary()
    assert summary["records_dead_lettered"] == 0 and summary["reloads"] == 1
    server = model_server.grpc_url if grpc else model_server.url
    assert summary["serving"] == {"primary": f"{served_name}:2 @ {server}"}


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_canary_and_shadow_are_versions_on_the_same_server(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tails: list[TailProcess],
    model_server: ModelServer,
    grpc: bool,
) -> None:
    source = unique_topic(partitions=1)
    out = f"{source}.out"
    tail = TailProcess(
        kafka_bootstrap, "-i", source, "-o", out, "-g", f"{source}-g",
        "-m", model_server.model("fraud", "1", grpc=grpc), "--features", FEATURES,
        "--canary", "2:30", "--shadow", model_server.model("fraud", "2", grpc=grpc),
        "--max-wait", "5",
    )  # fmt: skip
    tails.append(tail)
    keys = [f"customer-{i}".encode() for i in range(300)]
    produce(kafka_bootstrap, source, sample_values(300), keys)
    outputs = read_topic(kafka_bootstrap, out, expected=300)
    shadow = read_topic(kafka_bootstrap, f"{out}.shadow", expected=300)
    status = tail.wait_for(lambda e: e["event"] == "status" and e["records_out"] == 300, "300")
    assert tail.stop() == 0

    on_canary = {o.key for o in outputs if o.headers[MODEL_VERSION] == "2"}
    assert on_canary == {k for k in keys if key_bucket(k) < 3000}
    assert {o.headers[MODEL_VERSION] for o in shadow} == {"2"}
    assert sorted(o.source for o in shadow) == sorted(o.source for o in outputs)
    server = model_server.grpc_url if grpc else model_server.url
    assert {o.headers[MODEL_SERVER] for o in outputs + shadow} == {server}
    assert status["shadow"]["compared"] == 300
    assert status["versions"] == {"primary": "fraud:1", "canary": "fraud:2", "shadow": "fraud:2"}
