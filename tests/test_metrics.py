"""Metrics: served on 127.0.0.1 in Prometheus text format, with per-array histograms."""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from streamscore.console import format_tail_status
from streamscore.errors import UsageError
from streamscore.metrics import LATENCY_BUCKETS, TailMetrics
from streamscore.model.repository import resolve_model

SAMPLE_MODELS = Path(__file__).resolve().parent.parent / "sample_data" / "models"


@pytest.fixture
def metrics() -> Iterator[TailMetrics]:
    with TailMetrics() as m:
        yield m


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample at 127.0.0.1:port/metrics as {sample name: {sorted labels: value}}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def test_metrics_are_served_on_localhost_and_parse(metrics: TailMetrics) -> None:
    port = metrics.serve(0)
    primary, shadow = SAMPLE_MODELS / "fraud", SAMPLE_MODELS / "fraud" / "1"
    metrics.set_models({"primary": resolve_model(primary), "shadow": resolve_model(shadow)})
    metrics.observe_batch(3)
    metrics.observe_scored("2", records=3, published=2, dead=1, inference_s=0.004)
    metrics.observe_end_to_end(np.array([0.004, 0.012]))
    metrics.set_lag("in", 0, 7)
    metrics.error("decode", 1)

    found = scrape(port)

    assert found["streamscore_records_in_total"] == {(("version", "2"),): 3.0}
    assert found["streamscore_records_out_total"] == {(("version", "2"),): 2.0}
    assert found["streamscore_records_dead_lettered_total"] == {(("version", "2"),): 1.0}
    assert found["streamscore_consumer_lag"] == {(("partition", "0"), ("topic", "in")): 7.0}
    assert found["streamscore_errors_total"] == {(("kind", "decode"),): 1.0}
    assert found["streamscore_end_to_end_seconds_count"] == {(): 2.0}
    assert found["streamscore_batch_size_count"] == {(): 1.0}
    roles = {
        dict(labels)["role"]: dict(labels)["version"] for labels in found["streamscore_model_info"]
    }
    assert roles == {"primary": "2", "shadow": "1"}


def test_array_histogram_counts_like_a_prometheus_histogram(metrics: TailMetrics) -> None:
    port = metrics.serve(0)
    values = np.random.default_rng(0).exponential(0.02, size=5000)
    metrics.observe_end_to_end(values[:1000])
    metrics.observe_end_to_end(values[1000:])

    found = scrape(port)

    buckets = found["streamscore_end_to_end_seconds_bucket"]
    for bound in LATENCY_BUCKETS:
        assert buckets[(("le", repr(float(bound))),)] == float((values <= bound).sum())
    assert buckets[(("le", "+Inf"),)] == 5000.0
    assert found["streamscore_end_to_end_seconds_sum"][()] == pytest.approx(values.sum())


def test_a_revoked_partition_loses_its_lag_series(metrics: TailMetrics) -> None:
    port = metrics.serve(0)
    metrics.set_lag("in", 0, 1)
    metrics.set_lag("in", 1, 2)
    metrics.forget_partitions([("in", 0)])

    assert scrape(port)["streamscore_consumer_lag"] == {(("partition", "1"), ("topic", "in")): 2.0}
    assert metrics.status().lag == {"in/1": 2}


def test_status_summarizes_rate_latency_and_versions(metrics: TailMetrics) -> None:
    metrics.set_models({"primary": resolve_model(SAMPLE_MODELS / "fraud")})
    metrics.observe_scored("2", records=100, published=100, dead=0, inference_s=0.002)
    metrics.observe_end_to_end(np.linspace(0.001, 0.1, 100))
    metrics.observe_shadow(np.array([0.0, 0.1]), compared=2, flips=1)
    metrics.set_lag("in", 0, 5)

    status = metrics.status()

    assert (status.records_in, status.records_out, status.lag_total) == (100, 100, 5)
    assert status.versions == {"primary": "fraud:2"}
    assert status.end_to_end_ms["p50"] == pytest.approx(50.5, abs=0.1)
    assert status.end_to_end_ms["max"] == 100.0
    assert status.shadow["label_flips"] == 1
    out = io.StringIO()
    Console(file=out, width=120).print(format_tail_status({"event": "status", **status.as_dict()}))
    panel = out.getvalue()
    for text in ("primary fraud:2", "100 in, 100 out", "in/0 5", "p99", "1 label flips"):
        assert text in panel


def test_a_port_in_use_is_a_usage_error(metrics: TailMetrics) -> None:
    port = metrics.serve(0)
    with TailMetrics() as other, pytest.raises(UsageError, match="cannot serve metrics"):
        other.serve(port)
