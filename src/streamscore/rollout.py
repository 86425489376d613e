"""The model versions serving a live topic: primary, canary and shadow, and what they read.

Each version serving in a role is an :class:`Arm`: its model, its scorer and the JSON fields
it reads (planned by :func:`streamscore.scoring.scorer_for_records`, as for replay). A
:class:`Serving` is the set that scores the next batch, with the one decoder that reads the
fields of all of them; ``tail`` builds a new one when the primary is hot-reloaded, so a
switch always falls between batches.

A new primary must fit the input before it serves (:func:`check_fits`): it must decode and
score some of the records that arrived recently, or, before any record arrived, read only
fields the serving version reads.

:class:`RoutingScorer` is how ``tail`` plugs all of this into the shared pipeline: a
:class:`~streamscore.pipeline.SourceBatchScorer` that decodes with the serving set's decoder,
splits each batch between the published arms, scores every part (and the whole batch with
the shadow) and returns a :class:`RoutedBatch` naming which version scored which rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from streamscore.config import KeepColumns, ScoringOptions
from streamscore.errors import MappingError
from streamscore.kafka.client import KafkaRecord
from streamscore.kafka.codec import DecodedBatch, JsonDecoder, take_passthrough
from streamscore.mapping import plan_inputs
from streamscore.model import ModelRef
from streamscore.model.base import Model, open_model
from streamscore.model.session import load_model
from streamscore.pipeline import SourceBatch
from streamscore.routing import CanarySpec, record_fallback
from streamscore.scoring import ScoredBatch, Scorer, scorer_for_records

RECENT_RECORDS = 200  # input values a new primary is tried on before it serves


@dataclass(frozen=True)
class Arm:
    """One model version serving in a role (primary, canary or shadow)."""

    role: str
    ref: ModelRef
    scorer: Scorer
    fields: dict[str, pa.DataType]  # the JSON fields it reads, and as which types


def prepare_arm(role: str, ref: ModelRef | str, scoring: ScoringOptions) -> Arm:
    """Load ``ref`` (or open a model URL) and plan its inputs from JSON fields (raises
    ModelError, MappingError)."""
    model: Model
    if isinstance(ref, str) or ref.server:  # a model URL (a reloaded one: its version's URL)
        spec = ref if isinstance(ref, str) else ref.location
        model = open_model(spec, provider=scoring.provider, remote=scoring.remote)
    else:
        model = load_model(ref, provider=scoring.provider, threads=scoring.call_threads)
    scorer, fields = scorer_for_records(
        model,
        features=scoring.features,
        outputs=scoring.outputs,
        reject_nan=scoring.reject_nan,
    )
    return Arm(role, model.ref, scorer, fields)


def check_fits(
    arm: Arm,
    recent: Sequence[bytes | None],
    current: Mapping[str, pa.DataType],
    features: Sequence[str] | None = None,
) -> None:
    """Raise MappingError (or ModelError) unless ``arm`` can score the input.

    With recent record values at hand, at least one of them must decode and score; before
    any record arrived, the new version must read only ``current`` fields.
    """
    if not recent:
        plan_inputs(arm.scorer.model.signature, current, features)
        return
    decoded = JsonDecoder(arm.fields, KeepColumns("none")).decode(recent)
    if decoded.rows.num_rows == 0:
        first = decoded.failures[0].message if decoded.failures else "no record decodes"
        raise MappingError(
            f"none of the last {len(recent)} input records fits model {arm.ref.label}: {first}",
            hint="check the new version's inputs (or --features) against the topic's fields",
        )
    scored = arm.scorer.score(decoded.rows)  # ModelError if it cannot run on real records
    if not len(scored.accepted):
        raise MappingError(
            f"model {arm.ref.label} rejects all of the last {len(recent)} input records: "
            f"{scored.reasons[0] if scored.reasons else 'no scores'}"
        )


@dataclass(frozen=True)
class Serving:
    """What scores the next batch; read once per batch."""

    primary: Arm
    canary: Arm | None
    canary_spec: CanarySpec | None
    shadow: Arm | None
    decoder: JsonDecoder

    @classmethod
    def build(
        cls,
        primary: Arm,
        canary: Arm | None,
        canary_spec: CanarySpec | None,
        shadow: Arm | None,
        *,
        keep: KeepColumns,
        max_record_bytes: int,
    ) -> Serving:
        """One decoder reads what every arm needs; where two disagree on a field's type, the
        primary's wins (the mapping converts it for the other)."""
        fields: dict[str, pa.DataType] = {}
        for arm in (shadow, canary, primary):
            if arm is not None:
                fields.update(arm.fields)
        decoder = JsonDecoder(fields, keep, max_record_bytes=max_record_bytes)
        return cls(primary, canary, canary_spec, shadow, decoder)

    @property
    def arms(self) -> list[Arm]:
        return [arm for arm in (self.primary, self.canary, self.shadow) if arm is not None]

    def split(
        self, topic: str, records: Sequence[KafkaRecord], decoded: DecodedBatch
    ) -> list[tuple[Arm, np.ndarray]]:
        """Which decoded rows (positions) each published arm scores: the canary its share of
        keys, the primary the rest."""
        everything = np.arange(decoded.rows.num_rows, dtype=np.int64)
        if self.canary is None or self.canary_spec is None or not len(everything):
            return [(self.primary, everything)]
        chosen = [records[i] for i in decoded.index.tolist()]
        keys = [record.key() for record in chosen]
        fallbacks = [
            record_fallback(topic, record.partition() or 0, record.offset() or 0)
            for record in chosen
        ]
        mask = self.canary_spec.mask(keys, fallbacks)
        return [(self.primary, everything[~mask]), (self.canary, everything[mask])]


def subset(decoded: DecodedBatch, rows: np.ndarray) -> DecodedBatch:
    """The decoded rows at positions ``rows``, without the decode failures."""
    if len(rows) == decoded.rows.num_rows:
        return DecodedBatch(decoded.rows, decoded.index, decoded.passthrough, [])
    kept = take_passthrough(decoded.passthrough, rows)
    return DecodedBatch(decoded.rows.take(pa.array(rows)), decoded.index[rows], kept, [])


@dataclass(frozen=True)
class ScoredPart:
    """The rows of a batch one arm scored: positions in the decoded batch, and the result
    (whose ``accepted``/``rejected`` index into ``part``)."""

    arm: Arm
    rows: np.ndarray
    part: DecodedBatch
    scored: ScoredBatch
    seconds: float  # time in the model


_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_SCORES = pa.RecordBatch.from_pydict({})


@dataclass(frozen=True)
class RoutedBatch(ScoredBatch):
    """A batch scored by one or more arms. ``accepted``, ``rejected`` and ``reasons`` cover
    the whole batch (row counts, statistics); ``scores`` only when one arm scored it all."""

    parts: tuple[ScoredPart, ...] = ()
    shadow: ScoredPart | None = None


@dataclass(frozen=True)
class _Prepared:
    parts: list[tuple[Arm, np.ndarray, DecodedBatch, Any]]
    shadow: tuple[Arm, np.ndarray, DecodedBatch, Any] | None


class RoutingScorer:
    """Scores ``tail``'s batches with the serving arms (a SourceBatchScorer for the pipeline:
    it routes rows by their source records' keys).

    ``current()`` gives the serving set; a source decodes each batch with :meth:`decode`,
    which pins that set for the batch's :meth:`prepare_batch` (both run on the pipeline's
    reader thread, one after the other), so a hot reload always falls between two batches.
    """

    def __init__(self, topic: str, current: Callable[[], Serving]) -> None:
        self.topic = topic
        self.current = current
        self._pinned: Serving | None = None
        self.recent: list[bytes | None] = []  # the last input values, for check_fits

    def decode(self, values: list[bytes | None]) -> DecodedBatch:
        serving = self._pinned = self.current()
        if values:
            self.recent = values[-RECENT_RECORDS:]
        return serving.decoder.decode(values)

    def prepare_batch(self, batch: SourceBatch) -> _Prepared:
        serving = self._pinned or self.current()
        decoded: DecodedBatch = batch.context.decoded
        records: Sequence[KafkaRecord] = batch.context.records
        if not records:  # an idle tick of the source: a reload still shows in the status
            self.current()
            return _Prepared([], None)
        parts = []
        for arm, rows in serving.split(self.topic, records, decoded):
            part = subset(decoded, rows)
            parts.append((arm, rows, part, arm.scorer.prepare(part.rows)))
        shadow = None
        if serving.shadow is not None and decoded.rows.num_rows:
            everything = np.arange(decoded.rows.num_rows, dtype=np.int64)
            part = subset(decoded, everything)
            shadow = (serving.shadow, everything, part, serving.shadow.scorer.prepare(part.rows))
        return _Prepared(parts, shadow)

    def run(self, prepared: _Prepared) -> RoutedBatch:
        parts = tuple(_run(*item) for item in prepared.parts)
        shadow = _run(*prepared.shadow) if prepared.shadow is not None else None
        if len(parts) == 1:
            only = parts[0].scored
            return RoutedBatch(
                only.scores, only.accepted, only.rejected, only.reasons, parts, shadow
            )
        accepted = np.concatenate([p.rows[p.scored.accepted] for p in parts] or [_NO_ROWS])
        rejected = np.concatenate([p.rows[p.scored.rejected] for p in parts] or [_NO_ROWS])
        reasons = [reason for p in parts for reason in p.scored.reasons]
        order = np.argsort(rejected, kind="stable")
        return RoutedBatch(
            _NO_SCORES,
            np.sort(accepted),
            rejected[order],
            [reasons[i] for i in order.tolist()],
            parts,
            shadow,
        )


def _run(arm: Arm, rows: np.ndarray, part: DecodedBatch, feeds: Any) -> ScoredPart:
    began = time.perf_counter()
    scored = arm.scorer.run(feeds)
    return ScoredPart(arm, rows, part, scored, time.perf_counter() - began)
