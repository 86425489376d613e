"""Rollout routing: canary shares chosen by a stable key hash, and shadow agreement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamscore.errors import UsageError
from streamscore.model.repository import resolve_model
from streamscore.model.session import load_model
from streamscore.routing import (
    CanarySpec,
    compare_scores,
    key_bucket,
    record_fallback,
    resolve_version,
)
from streamscore.scoring import Scorer

REPO = Path(__file__).resolve().parent.parent
SAMPLE_MODELS = REPO / "sample_data" / "models"
SAMPLE_DAY = REPO / "sample_data" / "transactions" / "date=2026-11-04" / "part-0.parquet"


@pytest.mark.parametrize(
    ("text", "version", "percent"),
    [
        ("2:10", "2", 10.0),
        ("3:0.5", "3", 0.5),
        ("7:100%", "7", 100.0),
        ("m/a:b.onnx:5", "m/a:b.onnx", 5.0),
    ],
)
def test_canary_spec_parses_version_and_percent(text: str, version: str, percent: float) -> None:
    assert CanarySpec.parse(text) == CanarySpec(version, percent)


@pytest.mark.parametrize("text", ["2", "2:", ":10", "2:0", "2:101", "2:ten"])
def test_canary_spec_rejects_nonsense(text: str) -> None:
    with pytest.raises(UsageError, match="VERSION:PERCENT"):
        CanarySpec.parse(text)


def test_bucket_is_the_same_in_every_process() -> None:
    # Python's hash() of bytes changes with PYTHONHASHSEED; the bucket must not.
    code = "from streamscore.routing import key_bucket; print(key_bucket(b'customer-42'))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert seen == {str(key_bucket(b"customer-42"))}


def test_canary_share_is_close_to_the_percentage_and_stable_per_key() -> None:
    keys: list[bytes | None] = [f"customer-{i}".encode() for i in range(20_000)]
    fallbacks = [b""] * len(keys)
    canary = CanarySpec("2", 10)

    chosen = canary.mask(keys, fallbacks)

    assert abs(chosen.mean() - 0.10) < 0.01
    assert np.array_equal(chosen, canary.mask(keys, fallbacks))
    assert np.array_equal(chosen[:100], canary.mask(keys[:100], fallbacks[:100]))


def test_keyless_records_are_spread_by_their_position() -> None:
    keys: list[bytes | None] = [None] * 10_000
    fallbacks = [record_fallback("in", i % 3, i) for i in range(10_000)]

    chosen = CanarySpec("2", 30).mask(keys, fallbacks)

    assert abs(chosen.mean() - 0.30) < 0.02


@given(st.lists(st.binary(max_size=12), max_size=200), st.floats(0.01, 99.0))
def test_raising_the_percentage_keeps_every_key_already_on_the_canary(
    raw: list[bytes], percent: float
) -> None:
    keys: list[bytes | None] = list(raw)
    fallbacks = [b""] * len(keys)
    low = CanarySpec("2", percent).mask(keys, fallbacks)
    high = CanarySpec("2", min(percent * 2, 100)).mask(keys, fallbacks)
    assert not (low & ~high).any()


def test_a_version_number_is_found_next_to_the_model() -> None:
    fraud = SAMPLE_MODELS / "fraud"
    assert resolve_version(fraud, "2").version == "2"
    assert resolve_version(fraud / "1", "2").version == "2"
    assert resolve_version(fraud / "1" / "model.onnx", "2").version == "2"
    mlp = SAMPLE_MODELS / "fraud_mlp" / "1" / "model.onnx"
    assert resolve_version(fraud, str(mlp)).name == "fraud_mlp"
    with pytest.raises(UsageError, match="version 9 not found"):
        resolve_version(fraud, "9")


def test_next_to_a_model_url_a_version_is_one_on_the_same_server() -> None:
    url = "http://127.0.0.1:8080/v2/models/fraud"
    assert resolve_version(url, "2") == f"{url}/versions/2"
    assert resolve_version(f"{url}/versions/1", "v2-b") == f"{url}/versions/v2-b"
    other = "https://models.example:8443/v2/models/fraud_mlp/versions/3"
    assert resolve_version(url, other) == other
    assert resolve_version(SAMPLE_MODELS / "fraud", other) == other  # a served canary
    with pytest.raises(UsageError, match="cannot read MODEL URL"):
        resolve_version(url, "http://127.0.0.1:8080/not-a-model")


def scored(version: str, batch: pa.RecordBatch):  # type: ignore[no-untyped-def]
    model = load_model(resolve_model(SAMPLE_MODELS / "fraud" / version), provider="cpu")
    return Scorer.for_schema(model, batch.schema).score(batch)


def test_shadow_agreement_counts_label_flips_and_score_differences() -> None:
    batch = pq.read_table(SAMPLE_DAY).slice(0, 2000).to_batches()[0]
    v1, v2 = scored("1", batch), scored("2", batch)

    same = compare_scores(v1, v1)
    other = compare_scores(v1, v2)

    assert (same.rows, same.label_flips, float(same.score_diffs.max())) == (2000, 0, 0.0)
    assert (same.score_column, same.label_column) == ("probabilities_1", "label")
    labels_1 = v1.scores.column("label").to_numpy()
    labels_2 = v2.scores.column("label").to_numpy()
    assert other.label_flips == int((labels_1 != labels_2).sum())
    p1 = v1.scores.column("probabilities_1").to_numpy()
    p2 = v2.scores.column("probabilities_1").to_numpy()
    assert np.allclose(other.score_diffs, np.abs(p2.astype(float) - p1))
    assert other.score_diffs.max() > 0
