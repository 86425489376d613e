"""The benchmark report and its JSON form (schema ``streamscore.bench``, version 1).

The JSON written by ``streamscore bench --json FILE`` is this report, ``to_dict()``
serialized. Times are milliseconds (``*_ms``) or seconds (``*_s``, ``seconds``); rates are
per second. Top level::

    schema            "streamscore.bench"
    schema_version    1
    created_at        UTC time, ISO 8601
    model             {name, version, path, sha256, size_bytes, lineage}; lineage holds
                      registry, alias and run_id for a registry model (else {})
    environment       {cpu_model, cpu_cores_logical, cpu_cores_physical, os, python,
                       onnxruntime, streamscore, providers_listed, providers_used}
    settings          {warmup_s, window_s, max_duration_s, stability, inputs, shapes, seed}
    providers         [{requested, used, available, reason}]   one per --providers entry
    results           [result]                                 one per measured configuration
    best              key of the configuration with the most rows/s (or null)
    pipeline          [{key, provider, threads, batch_size, rows, pipeline_seconds,
                        pipeline_rows_per_s, bare_seconds, bare_rows_per_s, ratio}]
    comparison        null, or {baseline, max_regression, baseline_model_sha256, changes:
                        [{key, metric, baseline, current, worse_by, regressed}],
                        only_in_baseline, only_now}

A result::

    key               "cpu/threads=1/batch=64/concurrency=1" (+ "/rate=200/poisson")
    configuration     {provider, threads, batch_size, concurrency, rate, arrivals}
    provider_used     the provider ONNX Runtime really ran (from the session)
    calls, rows, seconds, calls_per_s, rows_per_s        over the reported windows
    latency_ms        {min, p50, p90, p95, p99, max, mean}; open loop: from intended start
    service_ms        same keys: time inside session.run (open loop; null otherwise)
    queue_ms          same keys: wait before the call started (open loop; null otherwise)
    target_rate, backlog   open loop: requests/s asked for; requests due but not done
    stable, reported_windows, windows_calls_per_s        the stability check
    overhead          closed loop: share of the callers' time spent outside session.run
    transfer_ms       CUDA/TensorRT: {h2d, compute, d2h, calls} medians via I/O binding
    histogram         {edges_ms, counts}: the latency distribution, log-spaced bins
    warnings          [text]

Versioning: fields may be added within a version; renaming or removing one, or changing
its meaning, increments ``schema_version``. Readers refuse a newer version than they know.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from streamscore.atomic import write_atomically
from streamscore.errors import InputError

SCHEMA = "streamscore.bench"
SCHEMA_VERSION = 1
HISTOGRAM_BINS = 30

T = TypeVar("T")


def _pick(build: Callable[..., T], cls: type, data: Mapping[str, Any], **nested: Any) -> T:
    """Build a dataclass from the known keys of ``data`` (unknown keys are newer fields)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return build(**{**{k: v for k, v in data.items() if k in names}, **nested})


@dataclass(frozen=True)
class Configuration:
    """One point of the sweep."""

    provider: str
    threads: int
    batch_size: int
    concurrency: int = 1
    rate: float | None = None  # open loop: requests per second
    arrivals: str | None = None  # open loop: constant | poisson

    @property
    def key(self) -> str:
        """A stable name, used to match configurations against a baseline."""
        key = (
            f"{self.provider}/threads={self.threads}/batch={self.batch_size}"
            f"/concurrency={self.concurrency}"
        )
        return key if self.rate is None else f"{key}/rate={self.rate:g}/{self.arrivals}"


@dataclass(frozen=True)
class Percentiles:
    """A latency distribution summary, in milliseconds."""

    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of_ns(cls, values: np.ndarray) -> Percentiles:
        if len(values) == 0:
            return cls(*([float("nan")] * 7))
        ms = values.astype(np.float64) / 1e6
        p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
        return cls(float(ms.min()), p50, p90, p95, p99, float(ms.max()), float(ms.mean()))


@dataclass(frozen=True)
class Histogram:
    """Latency counts in log-spaced bins: ``counts[i]`` falls in ``edges_ms[i:i+2]``."""

    edges_ms: list[float]
    counts: list[int]

    @classmethod
    def of_ns(cls, values: np.ndarray, bins: int = HISTOGRAM_BINS) -> Histogram:
        if len(values) == 0:
            return cls([], [])
        ms = values.astype(np.float64) / 1e6
        low, high = max(float(ms.min()), 1e-6), max(float(ms.max()), 1e-6)
        if high <= low * 1.0001:
            return cls([low, high], [len(ms)])
        edges = np.geomspace(low, high, bins + 1)
        counts, _ = np.histogram(np.clip(ms, low, high), bins=edges)
        return cls([float(e) for e in edges], [int(c) for c in counts])


@dataclass(frozen=True)
class Transfer:
    """Median host->device copy, compute and device->host copy times (I/O binding), in ms."""

    h2d: float
    compute: float
    d2h: float
    calls: int


@dataclass
class BenchResult:
    """The measurement of one configuration."""

    configuration: Configuration
    provider_used: str
    calls: int
    rows: int
    seconds: float
    calls_per_s: float
    rows_per_s: float
    latency_ms: Percentiles
    stable: bool
    reported_windows: int
    windows_calls_per_s: list[float]
    overhead: float | None = None
    service_ms: Percentiles | None = None
    queue_ms: Percentiles | None = None
    target_rate: float | None = None
    backlog: int | None = None
    transfer_ms: Transfer | None = None
    histogram: Histogram | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.configuration.key

    @property
    def open_loop(self) -> bool:
        return self.configuration.rate is not None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        def maybe(build: Callable[..., T], kind: type, value: Any) -> T | None:
            return None if value is None else _pick(build, kind, value)

        return _pick(
            cls,
            cls,
            data,
            configuration=_pick(Configuration, Configuration, data["configuration"]),
            latency_ms=_pick(Percentiles, Percentiles, data["latency_ms"]),
            service_ms=maybe(Percentiles, Percentiles, data.get("service_ms")),
            queue_ms=maybe(Percentiles, Percentiles, data.get("queue_ms")),
            transfer_ms=maybe(Transfer, Transfer, data.get("transfer_ms")),
            histogram=maybe(Histogram, Histogram, data.get("histogram")),
        )


@dataclass(frozen=True)
class ProviderStatus:
    """A requested provider and what ONNX Runtime really ran instead, if anything."""

    requested: str
    used: str | None
    available: bool
    reason: str | None = None


def pipeline_key(provider: str, threads: int, batch_size: int) -> str:
    """The name of one ``--pipeline batch`` measurement, used to match a baseline."""
    return f"pipeline-batch/{provider}/threads={threads}/batch={batch_size}"


@dataclass(frozen=True)
class PipelineResult:
    """``--pipeline batch``: the batch pipeline's rows/s beside bare session.run on the rows."""

    provider: str
    threads: int
    batch_size: int
    rows: int
    pipeline_seconds: float
    pipeline_rows_per_s: float
    bare_seconds: float
    bare_rows_per_s: float
    ratio: float  # pipeline / bare: the share of the model's speed the pipeline keeps

    @property
    def key(self) -> str:
        return pipeline_key(self.provider, self.threads, self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RemoteComparison:
    """An embedded configuration against the served model at the same batch, concurrency and
    rate, on the same inputs. ``ratio`` is remote rows/s over embedded rows/s;
    ``remote_overhead`` is the share of the remote p50 latency that the embedded model does
    not pay. It splits into ``serialization_share`` (the client encoding the request and
    decoding the answer, timed apart as ``serialization_ms``) and ``network_share`` (the rest:
    the network and the server's own framework)."""

    embedded_key: str
    remote_key: str
    embedded_rows_per_s: float
    remote_rows_per_s: float
    ratio: float
    embedded_p50_ms: float
    remote_p50_ms: float
    remote_overhead: float
    serialization_ms: float = 0.0
    serialization_share: float = 0.0
    network_share: float = 0.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    path: str
    sha256: str
    size_bytes: int
    lineage: dict[str, str] = field(default_factory=dict)  # registry, alias, run_id


@dataclass(frozen=True)
class Environment:
    """Where the numbers were taken: they only compare with numbers from a similar place."""

    cpu_model: str
    cpu_cores_logical: int
    cpu_cores_physical: int | None
    os: str
    python: str
    onnxruntime: str
    streamscore: str
    providers_listed: list[str]
    providers_used: list[str]


@dataclass(frozen=True)
class Settings:
    warmup_s: float
    window_s: float
    max_duration_s: float
    stability: float
    inputs: str
    shapes: dict[str, list[int]]
    seed: int


@dataclass(frozen=True)
class MetricChange:
    """One metric of one configuration against the baseline; ``worse_by`` > 0 is slower."""

    key: str
    metric: str  # rows_per_s | p99_ms
    baseline: float
    current: float
    worse_by: float  # fraction: 0.25 = 25 % fewer rows/s, or a 25 % higher p99
    regressed: bool


@dataclass
class Comparison:
    """This run against a baseline report."""

    baseline: str
    max_regression: float
    baseline_model_sha256: str
    changes: list[MetricChange]
    only_in_baseline: list[str] = field(default_factory=list)
    only_now: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricChange]:
        return [change for change in self.changes if change.regressed]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        changes = [_pick(MetricChange, MetricChange, c) for c in data["changes"]]
        return _pick(cls, cls, data, changes=changes)


@dataclass
class BenchReport:
    """Everything one ``streamscore bench`` run measured; ``to_dict()`` is the JSON schema."""

    created_at: str
    model: ModelInfo
    environment: Environment
    settings: Settings
    providers: list[ProviderStatus]
    results: list[BenchResult]
    pipeline: list[PipelineResult] = field(default_factory=list)
    comparison: Comparison | None = None
    schema_version: int = SCHEMA_VERSION
    served: str | None = None  # bench MODEL URL: the model server URL compared with MODEL
    remote_comparison: list[RemoteComparison] = field(default_factory=list)

    @property
    def best(self) -> str | None:
        """The configuration with the most rows/s (closed loop), else the lowest open-loop p99."""
        closed = [r for r in self.results if not r.open_loop]
        if closed:
            return max(closed, key=lambda r: r.rows_per_s).key
        if self.results:
            return min(self.results, key=lambda r: r.latency_ms.p99).key
        return None

    def result(self, key: str) -> BenchResult:
        return next(r for r in self.results if r.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "model": dataclasses.asdict(self.model),
            "environment": dataclasses.asdict(self.environment),
            "settings": dataclasses.asdict(self.settings),
            "providers": [dataclasses.asdict(p) for p in self.providers],
            "results": [r.to_dict() for r in self.results],
            "best": self.best,
            "pipeline": [p.to_dict() for p in self.pipeline],
            "comparison": None if self.comparison is None else dataclasses.asdict(self.comparison),
            "served": self.served,
            "remote_comparison": [dataclasses.asdict(c) for c in self.remote_comparison],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchReport:
        """Read a report back; raises KeyError/TypeError on malformed data (see load_report)."""
        comparison = data.get("comparison")
        return cls(
            created_at=data["created_at"],
            model=_pick(ModelInfo, ModelInfo, data["model"]),
            environment=_pick(Environment, Environment, data["environment"]),
            settings=_pick(Settings, Settings, data["settings"]),
            providers=[_pick(ProviderStatus, ProviderStatus, p) for p in data["providers"]],
            results=[BenchResult.from_dict(r) for r in data["results"]],
            pipeline=[_pick(PipelineResult, PipelineResult, p) for p in data.get("pipeline", [])],
            comparison=None if comparison is None else Comparison.from_dict(comparison),
            schema_version=data["schema_version"],
            served=data.get("served"),
            remote_comparison=[
                _pick(RemoteComparison, RemoteComparison, c)
                for c in data.get("remote_comparison") or []
            ],
        )


def dumps_report(report: BenchReport) -> str:
    """The report as indented JSON (NaN becomes null, so strict parsers accept it)."""
    return json.dumps(_nan_to_none(report.to_dict()), indent=2, allow_nan=False)


def save_report(report: BenchReport, path: Path) -> None:
    """Write the report's JSON to ``path``, atomically (a baseline it replaces stays whole
    if writing fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, dumps_report(report) + "\n")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def load_report(path: Path) -> BenchReport:
    """Read a report written by ``--json``; InputError names the file when it cannot."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read benchmark report {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(
            f"{path} is not a streamscore bench report",
            hint="write one with streamscore bench --json FILE",
        )
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(
            f"{path} has schema_version {version!r}; this streamscore reads up to {SCHEMA_VERSION}",
            hint="upgrade streamscore, or regenerate the baseline",
        )
    try:
        return BenchReport.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: malformed benchmark report ({exc!r})") from exc
