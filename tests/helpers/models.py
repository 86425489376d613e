"""Small scikit-learn models exported to real ONNX files with skl2onnx, for tests.

Every builder trains on a few hundred rows (well under a second) and returns a
:class:`TrainedModel`: the ONNX file, the fitted estimator and how to feed the estimator
from an Arrow table, so a test can compare streamscore's scores with ``predict_proba``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import polars as pl
import pyarrow as pa
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

TRAIN_ROWS = 400
CATEGORIES = ("grocery", "travel", "fuel", "jewelry")
COLUMN_MODEL_FLOATS = ("amount", "score")
COLUMN_MODEL_INT = "count"
COLUMN_MODEL_STRING = "category"


@dataclass(frozen=True)
class TrainedModel:
    """An ONNX file and the scikit-learn estimator it was exported from."""

    path: Path
    estimator: Any
    features: tuple[str, ...]  # the columns the model reads, in input order
    per_column: bool  # True: one [N, 1] input per column; False: one [N, k] input

    def predict_proba(self, table: pa.Table) -> np.ndarray:
        """scikit-learn's probabilities for the rows of ``table``, fed as the ONNX model is."""
        if self.per_column:
            frame = pl.from_arrow(table.select(list(self.features)))
            assert isinstance(frame, pl.DataFrame)
            frame = frame.with_columns(
                pl.col(c).cast(pl.Float32) for c in COLUMN_MODEL_FLOATS if c in self.features
            )
            return np.asarray(self.estimator.predict_proba(frame))
        x = np.column_stack([table.column(c).to_numpy().astype(np.float32) for c in self.features])
        return np.asarray(self.estimator.predict_proba(x))


def feature_names(n: int) -> tuple[str, ...]:
    return tuple(f"f{i}" for i in range(n))


def dense_training(n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features and 0/1 labels that depend on the first two features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(TRAIN_ROWS, n_features)).astype(np.float32)
    noise = rng.normal(scale=0.5, size=TRAIN_ROWS)
    y = (x[:, 0] - 0.5 * x[:, 1] + noise > 0).astype(np.int64)
    return x, y


def _save(model: onnx.ModelProto, path: Path, metadata: dict[str, str]) -> Path:
    if metadata:
        onnx.helper.set_model_props(model, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def build_dense_model(
    path: Path,
    *,
    kind: str = "logreg",
    n_features: int = 4,
    with_feature_names: bool = True,
    zipmap: bool = False,
    seed: int = 0,
    extra_metadata: dict[str, str] | None = None,
) -> TrainedModel:
    """A classifier over one float input ``input`` [N, n_features] (kind: logreg or hgb).

    With ``with_feature_names`` the ONNX metadata carries ``feature_names=f0,f1,...``.
    """
    x, y = dense_training(n_features, seed)
    estimator: Any
    if kind == "logreg":
        estimator = LogisticRegression(C=0.5 + seed).fit(x, y)
    elif kind == "hgb":
        estimator = HistGradientBoostingClassifier(
            max_iter=15 + 5 * seed, max_depth=3, early_stopping=False, random_state=seed
        ).fit(x, y)
    else:
        raise ValueError(kind)
    options = {} if zipmap else {"zipmap": False}
    model = to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    names = feature_names(n_features)
    metadata = {"feature_names": ",".join(names)} if with_feature_names else {}
    metadata.update(extra_metadata or {})
    return TrainedModel(_save(model, path, metadata), estimator, names, per_column=False)


def column_frame(rows: int, seed: int = 0) -> pl.DataFrame:
    """Training rows for the per-column model: two floats, one int and one string column."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "amount": rng.lognormal(3, 1, rows).astype(np.float32),
            "score": rng.normal(size=rows).astype(np.float32),
            "count": rng.integers(0, 20, rows).astype(np.int64),
            "category": rng.choice(CATEGORIES, rows).tolist(),
        }
    )


def build_column_model(path: Path, *, seed: int = 0) -> TrainedModel:
    """A DataFrame pipeline (scaler + one-hot + logistic regression) with one input per column.

    Inputs: ``amount``, ``score`` float [N, 1]; ``count`` int64 [N, 1]; ``category`` string
    [N, 1]; trained on a polars DataFrame as sample_data/generate.py does.
    """
    frame = column_frame(TRAIN_ROWS, seed)
    rng = np.random.default_rng(seed + 1)
    logit = (
        np.log(frame["amount"].to_numpy())
        - 3
        + frame["score"].to_numpy()
        + 0.1 * frame["count"].to_numpy()
        + (frame["category"] == "jewelry").to_numpy()
        + rng.normal(scale=0.5, size=TRAIN_ROWS)
    )
    y = (logit > 1).astype(np.int64)
    numeric = [*COLUMN_MODEL_FLOATS, COLUMN_MODEL_INT]
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), [COLUMN_MODEL_STRING]),
        ]
    )
    estimator = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(frame, y)
    types: list[tuple[str, Any]] = [(c, FloatTensorType([None, 1])) for c in COLUMN_MODEL_FLOATS]
    types.append((COLUMN_MODEL_INT, Int64TensorType([None, 1])))
    types.append((COLUMN_MODEL_STRING, StringTensorType([None, 1])))
    model = to_onnx(
        estimator,
        initial_types=types,
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    features = (*COLUMN_MODEL_FLOATS, COLUMN_MODEL_INT, COLUMN_MODEL_STRING)
    return TrainedModel(_save(model, path, {}), estimator, features, per_column=True)


def build_repository(root: Path, name: str, versions: Sequence[int]) -> dict[int, TrainedModel]:
    """A model repository ``root/name/VERSION/model.onnx``; each version trained differently."""
    return {
        version: build_dense_model(
            root / name / str(version) / "model.onnx",
            seed=version,
            extra_metadata={"model_version": str(version)},
        )
        for version in versions
    }
