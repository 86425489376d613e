"""Model rollout: which version scores each record (canary) and how two versions agree (shadow).

``--canary VERSION:PERCENT`` sends that share of records to VERSION. The choice hashes the
record key (BLAKE2b, not Python's per-process randomized ``hash()``), so it is the same in
every process of a consumer group, after restarts and on redelivery, and one key always
goes to the same version. Records without a key hash their ``topic/partition/offset``
instead: still stable per record, spread evenly.

``--shadow VERSION`` scores every record with VERSION too; :func:`compare_scores` measures
how far its scores are from the primary's (score difference, label flips).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from streamscore.config import RegistryOptions
from streamscore.errors import UsageError
from streamscore.model.repository import MLFLOW_SCHEMES, ModelRef, resolve_model
from streamscore.remote.url import ModelURL, is_model_url

if TYPE_CHECKING:  # scoring imports onnxruntime; routing decisions do not need it
    from streamscore.scoring import ScoredBatch

BUCKETS = 10_000  # percent with two decimals


def key_bucket(key: bytes | None, fallback: bytes = b"") -> int:
    """The record's bucket in ``[0, BUCKETS)``: stable across processes and restarts."""
    digest = hashlib.blake2b(key if key is not None else fallback, digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class CanarySpec:
    """``VERSION:PERCENT``: the version that scores PERCENT % of records, chosen by key."""

    version: str
    percent: float

    @classmethod
    def parse(cls, text: str) -> CanarySpec:
        version, sep, share = text.rpartition(":")
        try:
            percent = float(share.rstrip("%"))
        except ValueError:
            percent = -1.0
        if not sep or not version or not 0 < percent <= 100:
            raise UsageError(
                f"--canary takes VERSION:PERCENT with 0 < PERCENT <= 100, got {text!r}",
                hint="e.g. --canary 3:10 scores 10 % of records with version 3",
            )
        return cls(version, percent)

    def mask(self, keys: Sequence[bytes | None], fallbacks: Sequence[bytes]) -> np.ndarray:
        """True for the records this canary scores (bool array, one per key)."""
        threshold = round(self.percent * BUCKETS / 100)
        return np.fromiter(
            (key_bucket(k, f) < threshold for k, f in zip(keys, fallbacks, strict=True)),
            dtype=bool,
            count=len(keys),
        )


def record_fallback(topic: str, partition: int, offset: int) -> bytes:
    """What a keyless record hashes instead of its key."""
    return f"{topic}/{partition}/{offset}".encode()


def resolve_version(
    model: str | Path, version: str, registry: RegistryOptions | None = None
) -> ModelRef | str:
    """A canary or shadow VERSION next to MODEL: a version number in MODEL's repository (or
    of MODEL's registered model, for ``models:/NAME...``), or another MODEL (a path or URI).

    When MODEL is a model URL, VERSION is a version of the same model on the same server
    (any text the server uses); a model URL is returned as it is, to be opened."""
    if is_model_url(version):
        ModelURL.parse(version)  # a malformed URL fails here, in one line
        return version
    if is_model_url(str(model)):
        url = ModelURL.parse(str(model))
        return str(ModelURL(url.server, url.name, version))
    if not version.isdigit():
        return resolve_model(version, registry)
    if str(model).startswith("models:/"):
        from streamscore.model.mlflow_registry import MlflowURI

        name = MlflowURI.parse(str(model)).name
        return resolve_model(f"models:/{name}/{version}", registry)
    if str(model).startswith(MLFLOW_SCHEMES):
        raise UsageError(
            f"version {version} has no meaning next to model {model}",
            hint="give the canary/shadow model as a models:/ or runs:/ URI or a path",
        )
    path = Path(model)
    if path.is_file():
        path = path.parent  # REPO/NAME/VERSION/model.onnx
    name_dir = path.parent if path.name.isdigit() else path
    candidate = name_dir / version
    if not candidate.is_dir():
        raise UsageError(
            f"version {version} not found next to model {model} (looked for {candidate})",
            hint="give MODEL as REPO/NAME, or the canary/shadow model as a path",
        )
    return resolve_model(candidate)


@dataclass(frozen=True)
class Agreement:
    """How a shadow version's scores compare with the primary's on the rows both scored."""

    rows: int
    score_diffs: np.ndarray  # |shadow - primary| of the score column, one per compared row
    label_flips: int
    score_column: str | None
    label_column: str | None


def score_column(scores: pa.RecordBatch) -> str | None:
    """The column agreement is measured on: the last floating-point one (``probabilities_1``
    for a binary classifier), or None."""
    floats = [f.name for f in scores.schema if pa.types.is_floating(f.type)]
    return floats[-1] if floats else None


def label_column(scores: pa.RecordBatch) -> str | None:
    """``label`` when the model has it, else the first column that is not floating-point."""
    names = scores.schema.names
    if "label" in names:
        return "label"
    others = [f.name for f in scores.schema if not pa.types.is_floating(f.type)]
    return others[0] if others else None


def _values(scores: pa.RecordBatch, column: str | None, positions: np.ndarray) -> np.ndarray:
    if column is None or column not in scores.schema.names:
        return np.empty(0)
    values: np.ndarray = np.asarray(scores.column(column).to_numpy(zero_copy_only=False))
    picked: np.ndarray = values[positions]
    return picked


def compare_scores(primary: ScoredBatch, shadow: ScoredBatch) -> Agreement:
    """Compare two scorings of the same input rows, on the rows both accepted."""
    common, in_primary, in_shadow = np.intersect1d(
        primary.accepted, shadow.accepted, assume_unique=True, return_indices=True
    )
    score = score_column(primary.scores)
    label = label_column(primary.scores)
    diffs = np.empty(0)
    if score is not None and score in shadow.scores.schema.names:
        p = _values(primary.scores, score, in_primary).astype(np.float64)
        s = _values(shadow.scores, score, in_shadow).astype(np.float64)
        diffs = np.abs(s - p)
    flips = 0
    if label is not None and label in shadow.scores.schema.names:
        flips = int(
            np.count_nonzero(
                _values(primary.scores, label, in_primary)
                != _values(shadow.scores, label, in_shadow)
            )
        )
    return Agreement(len(common), diffs, flips, score, label)
