"""Deterministic generator for streamscore's sample data and model repository.

Writes, under ``--out`` (default: this folder):

* ``transactions/date=YYYY-MM-DD/part-0.parquet`` -- a synthetic, hive-partitioned
  fraud-detection data set (``transaction_id``, ``event_time``, ``f00``..``f29``,
  ``merchant_category``, ``is_fraud``) spread over four days.
* ``models/NAME/VERSION/model.onnx`` -- a TF Serving-style model repository of
  scikit-learn models exported with skl2onnx: ``fraud/1`` (gradient boosting),
  ``fraud/2`` (random forest), ``fraud_columns/1`` (one input per column) and
  ``fraud_mlp/1`` (a small MLP).

All randomness comes from fixed seeds, so two runs give byte-identical Parquet files
and models with identical predictions. Every exported model is checked against its
scikit-learn original with onnxruntime before the script finishes.

Usage::

    .venv/bin/python sample_data/generate.py [--out DIR] [--rows N]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

SEED = 20261101
DATES: tuple[date, ...] = tuple(date(2026, 11, d) for d in range(1, 5))
TRAIN_DATES = DATES[:3]
N_FEATURES = 30
FEATURES: tuple[str, ...] = tuple(f"f{i:02d}" for i in range(N_FEATURES))
COLUMN_MODEL_FEATURES: tuple[str, ...] = FEATURES[:10]
CATEGORY = "merchant_category"
LABEL = "is_fraud"
# Category name -> (sampling weight, additive fraud log-odds).
CATEGORIES: dict[str, tuple[float, float]] = {
    "grocery": (0.22, -0.6),
    "restaurants": (0.16, -0.4),
    "fuel": (0.10, -0.2),
    "utilities": (0.07, -0.8),
    "health": (0.06, -0.5),
    "entertainment": (0.09, 0.0),
    "online_retail": (0.14, 0.5),
    "electronics": (0.07, 0.8),
    "travel": (0.06, 0.9),
    "jewelry": (0.03, 1.3),
}
DECIMALS = 2
ROW_GROUP_SIZE = 16_384
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
MAX_ABS_DIFF = 1e-5
VERIFY_ROWS = 1_000


@dataclass(frozen=True)
class Dataset:
    """The generated rows, as numpy columns (rows sorted by event time)."""

    transaction_id: np.ndarray  # int64
    event_time: np.ndarray  # datetime64[ms], UTC
    features: np.ndarray  # float64, shape (n, N_FEATURES)
    category: np.ndarray  # str
    is_fraud: np.ndarray  # int64

    def rows(self, mask: np.ndarray) -> Dataset:
        """Return the subset of rows selected by a boolean mask."""
        return Dataset(
            self.transaction_id[mask],
            self.event_time[mask],
            self.features[mask],
            self.category[mask],
            self.is_fraud[mask],
        )

    def on_dates(self, days: tuple[date, ...]) -> Dataset:
        """Return the rows whose event time falls on one of ``days``."""
        day_of_row = self.event_time.astype("datetime64[D]")
        return self.rows(np.isin(day_of_row, np.array(days, dtype="datetime64[D]")))


class Classifier(Protocol):
    """What :func:`verify_model` needs from a fitted scikit-learn model."""

    def predict_proba(self, x: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class ExportedModel:
    """A fitted scikit-learn model, its ONNX export and how to feed both."""

    name: str
    version: int
    description: str
    estimator: Classifier
    onnx_model: onnx.ModelProto
    sklearn_input: Callable[[Dataset], Any]
    onnx_feeds: Callable[[Dataset], dict[str, np.ndarray]]


# ---------------------------------------------------------------- data set


def make_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` rows of 30 features with a mix of distributions, rounded."""
    x = rng.standard_normal((n, N_FEATURES))
    x[:, 0] = rng.lognormal(mean=3.5, sigma=1.0, size=n)  # amount-like
    x[:, 6:10] = rng.uniform(-2.0, 2.0, size=(n, 4))
    x[:, 10:13] = rng.exponential(1.0, size=(n, 3))
    x[:, 13] = 0.7 * x[:, 1] + 0.3 * x[:, 13]  # correlated with f01
    return np.round(x, DECIMALS) + 0.0  # "+ 0.0" turns -0.0 into 0.0


def make_categories(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` merchant categories with fixed weights."""
    names = np.array(list(CATEGORIES), dtype=object)
    weights = np.array([w for w, _ in CATEGORIES.values()])
    return rng.choice(names, size=n, p=weights / weights.sum())


def fraud_logit(x: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Nonlinear fraud log-odds from a handful of features and the category."""
    offset = {name: effect for name, (_, effect) in CATEGORIES.items()}
    cat_effect = np.array([offset[c] for c in category])
    logit: np.ndarray = (
        -5.2
        + 1.1 * np.tanh((np.log(x[:, 0]) - 4.5) * 1.5)
        + 0.9 * x[:, 1] * x[:, 2]
        + 1.4 * (x[:, 3] > 1.2)
        + 0.8 * np.sin(2.0 * x[:, 4])
        + 0.35 * x[:, 5] ** 2
        + 0.9 * (np.abs(x[:, 6]) > 1.6)
        + 0.6 * x[:, 10]
        + cat_effect
    )
    return logit


def make_labels(rng: np.random.Generator, x: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Draw 0/1 fraud labels from the logistic of :func:`fraud_logit`."""
    p: np.ndarray = 1.0 / (1.0 + np.exp(-fraud_logit(x, category)))
    return (rng.random(len(p)) < p).astype(np.int64)


def make_event_times(rng: np.random.Generator, day: date, n: int) -> np.ndarray:
    """Draw ``n`` sorted millisecond timestamps inside ``day`` (UTC)."""
    start = np.datetime64(day, "ms")
    offsets = np.sort(rng.integers(0, 86_400_000, size=n))
    return start + offsets.astype("timedelta64[ms]")


def make_dataset(n_rows: int, seed: int = SEED) -> Dataset:
    """Generate ``n_rows`` rows spread evenly over :data:`DATES`."""
    rng = np.random.default_rng(seed)
    per_day = np.diff(np.linspace(0, n_rows, len(DATES) + 1).round().astype(int))
    times = np.concatenate(
        [make_event_times(rng, d, int(k)) for d, k in zip(DATES, per_day, strict=True)]
    )
    features = make_features(rng, n_rows)
    category = make_categories(rng, n_rows)
    labels = make_labels(rng, features, category)
    ids = np.arange(1_000_001, 1_000_001 + n_rows, dtype=np.int64)
    return Dataset(ids, times, features, category, labels)


def to_arrow(data: Dataset) -> pa.Table:
    """Convert rows to an Arrow table with the published schema."""
    columns: dict[str, pa.Array] = {
        "transaction_id": pa.array(data.transaction_id, pa.int64()),
        "event_time": pa.array(data.event_time, pa.timestamp("ms", tz="UTC")),
    }
    for i, name in enumerate(FEATURES):
        columns[name] = pa.array(data.features[:, i], pa.float64())
    columns[CATEGORY] = pa.array(data.category.tolist(), pa.string())
    columns[LABEL] = pa.array(data.is_fraud, pa.int64())
    return pa.table(columns)


def write_partitions(data: Dataset, out: Path) -> list[Path]:
    """Write one zstd Parquet file per date, hive-partitioned under ``out``."""
    paths = []
    for day in DATES:
        path = out / "transactions" / f"date={day.isoformat()}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            to_arrow(data.on_dates((day,))),
            path,
            compression="zstd",
            compression_level=9,
            row_group_size=ROW_GROUP_SIZE,
            use_dictionary=[*FEATURES, CATEGORY, LABEL],
            column_encoding={
                "transaction_id": "DELTA_BINARY_PACKED",
                "event_time": "DELTA_BINARY_PACKED",
            },
        )
        paths.append(path)
    return paths


# ---------------------------------------------------------------- models


def dense_input(data: Dataset) -> np.ndarray:
    """The 30 features as float32, the dtype the ONNX models take."""
    return data.features.astype(np.float32)


def dense_feeds(data: Dataset) -> dict[str, np.ndarray]:
    """ONNX feeds for the models with one ``input`` tensor."""
    return {"input": dense_input(data)}


def column_frame(data: Dataset) -> pl.DataFrame:
    """The columns the per-column model reads, as a polars DataFrame."""
    cols: dict[str, object] = {
        name: data.features[:, FEATURES.index(name)].astype(np.float32)
        for name in COLUMN_MODEL_FEATURES
    }
    cols[CATEGORY] = data.category.tolist()
    return pl.DataFrame(cols)


def column_feeds(data: Dataset) -> dict[str, np.ndarray]:
    """ONNX feeds for the per-column model: one [N, 1] tensor per column."""
    feeds = {
        name: data.features[:, FEATURES.index(name)].astype(np.float32).reshape(-1, 1)
        for name in COLUMN_MODEL_FEATURES
    }
    feeds[CATEGORY] = data.category.astype(object).reshape(-1, 1)
    return feeds


def fit_gradient_boosting(train: Dataset) -> HistGradientBoostingClassifier:
    """v1: histogram gradient boosting (trained on float32-exact values)."""
    model = HistGradientBoostingClassifier(
        max_iter=100, max_depth=4, learning_rate=0.1, early_stopping=False, random_state=0
    )
    return model.fit(dense_input(train), train.is_fraud)


def fit_random_forest(train: Dataset) -> RandomForestClassifier:
    """v2: a small random forest, so scores visibly differ from v1."""
    model = RandomForestClassifier(
        n_estimators=24, max_depth=7, min_samples_leaf=50, random_state=0, n_jobs=1
    )
    return model.fit(dense_input(train), train.is_fraud)


def fit_column_pipeline(train: Dataset) -> Pipeline:
    """Scaler + one-hot encoder + logistic regression on named columns."""
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), list(COLUMN_MODEL_FEATURES)),
            ("cat", OneHotEncoder(handle_unknown="ignore"), [CATEGORY]),
        ]
    )
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1_000))])
    return model.fit(column_frame(train), train.is_fraud)


def fit_mlp(train: Dataset) -> Pipeline:
    """A small scaled MLP: a cheap, I/O-bound model for benchmarks."""
    mlp = MLPClassifier(hidden_layer_sizes=(32, 16), batch_size=512, max_iter=15, random_state=0)
    model = Pipeline([("scale", StandardScaler()), ("mlp", mlp)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(dense_input(train), train.is_fraud)


def export_dense(estimator: Classifier) -> onnx.ModelProto:
    """Export a model over all 30 features with one [None, 30] float input."""
    model: onnx.ModelProto = to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={"zipmap": False},
        target_opset=TARGET_OPSET,
    )
    return model


def export_columns(estimator: Classifier) -> onnx.ModelProto:
    """Export the column pipeline with one [None, 1] input per column."""
    types: list[tuple[str, FloatTensorType | StringTensorType]] = [
        (name, FloatTensorType([None, 1])) for name in COLUMN_MODEL_FEATURES
    ]
    types.append((CATEGORY, StringTensorType([None, 1])))
    model: onnx.ModelProto = to_onnx(
        estimator, initial_types=types, options={"zipmap": False}, target_opset=TARGET_OPSET
    )
    return model


def dedupe_opsets(model: onnx.ModelProto) -> None:
    """Keep one opset import per domain (skl2onnx lists "" twice for tree models)."""
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        versions[opset.domain] = max(opset.version, versions.get(opset.domain, 0))
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``props``."""
    onnx.helper.set_model_props(model, props)


def build_models(train: Dataset) -> list[ExportedModel]:
    """Fit and export every model of the repository."""
    dense = (dense_input, dense_feeds)
    specs = [
        ("fraud", 1, "HistGradientBoostingClassifier(max_iter=100, max_depth=4)",
         fit_gradient_boosting, export_dense, dense),
        ("fraud", 2, "RandomForestClassifier(n_estimators=24, max_depth=7)",
         fit_random_forest, export_dense, dense),
        ("fraud_columns", 1, "StandardScaler+OneHotEncoder+LogisticRegression",
         fit_column_pipeline, export_columns, (column_frame, column_feeds)),
        ("fraud_mlp", 1, "StandardScaler+MLPClassifier(hidden=(32, 16))",
         fit_mlp, export_dense, dense),
    ]  # fmt: skip
    days = f"{TRAIN_DATES[0].isoformat()}..{TRAIN_DATES[-1].isoformat()}"
    models = []
    for name, version, learner, fit, export, (sk_input, feeds) in specs:
        estimator = fit(train)
        onnx_model = export(estimator)
        dedupe_opsets(onnx_model)
        description = f"{learner}; synthetic transactions {days}, {len(train.is_fraud)} rows"
        props = {"model_name": name, "model_version": str(version), "trained_on": description}
        if export is export_dense:
            props["feature_names"] = ",".join(FEATURES)
        set_metadata(onnx_model, props)
        models.append(
            ExportedModel(name, version, description, estimator, onnx_model, sk_input, feeds)
        )
    return models


def save_model(model: ExportedModel, out: Path) -> Path:
    """Write ``models/NAME/VERSION/model.onnx`` under ``out``."""
    path = out / "models" / model.name / str(model.version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model.onnx_model)
    path.write_bytes(model.onnx_model.SerializeToString())
    return path


def onnx_probabilities(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run a saved model on the CPU provider and return ``probabilities``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], feeds)
    return np.asarray(probabilities)


def verify_model(model: ExportedModel, path: Path, holdout: Dataset) -> tuple[float, float]:
    """Return (max |ONNX - sklearn| probability, holdout AUC); raise if too far apart."""
    rows = holdout.rows(np.arange(len(holdout.is_fraud)) < VERIFY_ROWS)
    expected = model.estimator.predict_proba(model.sklearn_input(rows))
    diff = float(np.abs(onnx_probabilities(path, model.onnx_feeds(rows)) - expected).max())
    if diff > MAX_ABS_DIFF:
        raise RuntimeError(f"{path}: ONNX differs from scikit-learn by {diff:.3g}")
    scores = onnx_probabilities(path, model.onnx_feeds(holdout))[:, 1]
    if len(np.unique(holdout.is_fraud)) < 2:  # tiny --rows: AUC is undefined
        return diff, float("nan")
    return diff, float(roc_auc_score(holdout.is_fraud, scores))


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--rows", type=int, default=200_000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate the data set and the model repository, then verify the models."""
    args = parse_args(argv)
    started = time.perf_counter()
    data = make_dataset(args.rows)
    for path in write_partitions(data, args.out):
        print(f"wrote {path}")
    print(f"{len(data.is_fraud)} rows, fraud rate {data.is_fraud.mean():.2%}")
    holdout = data.on_dates(DATES[3:])
    for model in build_models(data.on_dates(TRAIN_DATES)):
        path = save_model(model, args.out)
        diff, auc = verify_model(model, path, holdout)
        print(f"wrote {path}: max |onnx - sklearn| = {diff:.2e}, holdout AUC = {auc:.3f}")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
