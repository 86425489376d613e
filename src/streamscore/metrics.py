"""Prometheus metrics for a live scoring process, and the status snapshot shown to a person.

Every :class:`TailMetrics` has its own ``CollectorRegistry`` (never the global one), served on
127.0.0.1 by :meth:`TailMetrics.serve`. Metric names:

    streamscore_records_in_total{version}            records handed to a model version
    streamscore_records_out_total{version}           scored records published
    streamscore_records_dead_lettered_total{version} records sent to the dead-letter topic
    streamscore_batch_size                           records per micro-batch (histogram)
    streamscore_inference_seconds{version}           model call time per batch (histogram)
    streamscore_end_to_end_seconds                   output time minus input timestamp (*)
    streamscore_consumer_lag{topic,partition}        high watermark minus position
    streamscore_model_info{role,name,version,sha256} 1 for each model serving now
    streamscore_errors_total{kind}                   errors by kind (decode, produce, reload…)
    streamscore_shadow_compared_total                records scored by primary and shadow
    streamscore_shadow_label_flips_total             of those, records whose label differs
    streamscore_shadow_score_difference              |shadow - primary| score (histogram)
    streamscore_model_server_breaker{server,state}   1 for a remote model server's circuit
                                                     breaker state (closed, open, half_open)

(*) The input timestamp is the record's Kafka timestamp: when it was produced, unless its
producer set another time (an event time makes this the record's age, not the pipeline's
latency). Output time: when the output was handed to the producer (at-least-once; the broker
acknowledges it about a round trip later) or when its transaction committed (exactly-once).

Histograms fed one value per record take whole numpy arrays (:class:`ArrayHistogram`): a
Python call per record would cost more than scoring it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily, Metric

from streamscore.errors import UsageError
from streamscore.model.repository import ModelRef

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
DIFF_BUCKETS = (0.0001, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
RECENT_LATENCIES = 8192  # samples behind the percentiles of the status panel
RATE_WINDOW_S = 10.0


class ArrayHistogram:
    """A Prometheus histogram observed with a whole array of values at a time."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe(self, values: np.ndarray, *labels: str) -> None:
        """Add every value of ``values`` (seconds, records…) to the series ``labels``."""
        if len(values) == 0:
            return
        # searchsorted 'left' puts v == bound into that bound's bucket, as Prometheus (le) does
        slots = np.bincount(np.searchsorted(self.bounds, values), minlength=len(self.bounds) + 1)
        with self._lock:
            counts, total = self._series.setdefault(
                labels, (np.zeros(len(self.bounds) + 1, dtype=np.int64), [0.0])
            )
            counts += slots
            total[0] += float(np.sum(values))

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        with self._lock:
            series = [
                (key, counts.cumsum(), sums[0]) for key, (counts, sums) in self._series.items()
            ]
        for labels, cumulative, total in series:
            les = [repr(float(b)) for b in self.bounds] + ["+Inf"]
            family.add_metric(
                list(labels), [(le, float(c)) for le, c in zip(les, cumulative, strict=True)], total
            )
        return [family]


@dataclass(frozen=True)
class TailStatus:
    """What the status panel and the periodic JSON lines show."""

    records_in: int
    records_out: int
    dead_lettered: int
    rate: float  # records per second over the last few seconds
    lag_total: int
    lag: dict[str, int]  # "topic/partition" -> records behind
    end_to_end_ms: dict[str, float]  # p50, p90, p99, max over recent records
    inference_ms: dict[str, float]  # p50, p99 over recent batches
    versions: dict[str, str]  # role -> name:version
    errors: dict[str, int] = field(default_factory=dict)
    shadow: dict[str, float] = field(default_factory=dict)
    model_servers: dict[str, str] = field(default_factory=dict)  # server -> breaker state

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentiles(values: Iterable[float], which: Sequence[int]) -> dict[str, float]:
    array = np.fromiter(values, dtype=np.float64)
    if len(array) == 0:
        return {}
    found = np.percentile(array, which)
    result = {f"p{q}": round(float(v) * 1000, 2) for q, v in zip(which, found, strict=True)}
    result["max"] = round(float(array.max()) * 1000, 2)
    return result


class TailMetrics:
    """Counts, histograms and gauges of one tail process; see the module docstring."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_in = Counter(
            "streamscore_records_in", "Records handed to a model version.", ["version"], registry=r
        )
        self.records_out = Counter(
            "streamscore_records_out", "Scored records published.", ["version"], registry=r
        )
        self.dead_lettered = Counter(
            "streamscore_records_dead_lettered",
            "Records sent to the dead-letter topic.",
            ["version"],
            registry=r,
        )
        self.batch_size = Histogram(
            "streamscore_batch_size", "Records per micro-batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "streamscore_inference_seconds",
            "Model call time per batch.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = ArrayHistogram(
            "streamscore_end_to_end_seconds",
            "Output time minus the input record's Kafka timestamp (its produce time, unless "
            "the producer set another).",
            LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "streamscore_consumer_lag",
            "High watermark minus the consumer position.",
            ["topic", "partition"],
            registry=r,
        )
        self.model_info = Gauge(
            "streamscore_model_info",
            "1 for each model version serving now.",
            ["role", "name", "version", "sha256"],
            registry=r,
        )
        self.errors = Counter("streamscore_errors", "Errors by kind.", ["kind"], registry=r)
        self.shadow_compared = Counter(
            "streamscore_shadow_compared", "Records scored by primary and shadow.", registry=r
        )
        self.shadow_flips = Counter(
            "streamscore_shadow_label_flips",
            "Records whose shadow label differs from the primary.",
            registry=r,
        )
        self.shadow_diff = ArrayHistogram(
            "streamscore_shadow_score_difference",
            "Absolute difference of shadow and primary scores.",
            DIFF_BUCKETS,
            registry=r,
        )
        self.model_server_breaker = Gauge(
            "streamscore_model_server_breaker",
            "1 for the circuit breaker state of each remote model server.",
            ["server", "state"],
            registry=r,
        )
        self._model_servers: dict[str, str] = {}
        self._server: Any = None
        self._counts = {"in": 0, "out": 0, "dead": 0, "compared": 0, "flips": 0}
        self._error_counts: dict[str, int] = {}
        self._lags: dict[tuple[str, int], int] = {}
        self._versions: dict[str, str] = {}
        self._recent_e2e: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self._recent_inference: deque[float] = deque(maxlen=512)
        self._recent_diff: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self._rate_marks: deque[tuple[float, int]] = deque()

    # --- serving ---------------------------------------------------------------------------

    def serve(self, port: int) -> int:
        """Serve /metrics on 127.0.0.1:``port`` (0 picks a free port); return the port."""
        try:
            server, _thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        except OSError as exc:
            raise UsageError(
                f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror}",
                hint="choose another --metrics-port (0 picks a free one)",
            ) from exc
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- observations ----------------------------------------------------------------------

    def observe_scored(
        self, version: str, records: int, published: int, dead: int, inference_s: float
    ) -> None:
        """One model version's share of a batch: in, out, dead-lettered and its model time."""
        self.records_in.labels(version).inc(records)
        self.records_out.labels(version).inc(published)
        if dead:
            self.dead_lettered.labels(version).inc(dead)
        if records:
            self.inference.labels(version).observe(inference_s)
            self._recent_inference.append(inference_s)
        self._counts["in"] += records
        self._counts["out"] += published
        self._counts["dead"] += dead

    def observe_undecodable(self, dead: int) -> None:
        """Records dead-lettered before any model saw them (version label ``none``)."""
        self.dead_lettered.labels("none").inc(dead)
        self._counts["dead"] += dead

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def observe_end_to_end(self, seconds: np.ndarray) -> None:
        """Output time minus input timestamp of every published record of a batch."""
        self.end_to_end.observe(seconds)
        self._recent_e2e.extend(seconds[-RECENT_LATENCIES:].tolist())

    def observe_shadow(self, diffs: np.ndarray, compared: int, flips: int) -> None:
        self.shadow_compared.inc(compared)
        self.shadow_flips.inc(flips)
        self.shadow_diff.observe(diffs)
        self._recent_diff.extend(diffs[-RECENT_LATENCIES:].tolist())
        self._counts["compared"] += compared
        self._counts["flips"] += flips

    def error(self, kind: str, count: int = 1) -> None:
        self.errors.labels(kind).inc(count)
        self._error_counts[kind] = self._error_counts.get(kind, 0) + count

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(lag)
        self._lags[(topic, partition)] = lag

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop lag series of partitions this process no longer owns."""
        for topic, partition in partitions:
            if self._lags.pop((topic, partition), None) is not None:
                self.lag.remove(topic, str(partition))

    def set_models(self, models: Mapping[str, ModelRef]) -> None:
        """The models serving now, by role (primary, canary, shadow)."""
        self.model_info.clear()
        for role, ref in models.items():
            self.model_info.labels(role, ref.name, ref.version, ref.sha256).set(1)
        self._versions = {role: ref.label for role, ref in models.items()}

    def set_model_servers(self, states: Mapping[str, str]) -> None:
        """Circuit breaker state (closed, open, half_open) of each remote model server."""
        for server, state in states.items():
            for each in ("closed", "open", "half_open"):
                self.model_server_breaker.labels(server, each).set(1 if each == state else 0)
        self._model_servers = dict(states)

    # --- status ----------------------------------------------------------------------------

    def _rate(self) -> float:
        now, done = time.monotonic(), self._counts["in"] + self._counts["dead"]
        marks = self._rate_marks
        marks.append((now, done))
        while len(marks) > 2 and now - marks[0][0] > RATE_WINDOW_S:
            marks.popleft()
        then, before = marks[0]
        return (done - before) / (now - then) if now > then else 0.0

    def status(self) -> TailStatus:
        """A snapshot for people: totals, recent rate, lag and latency percentiles."""
        shadow: dict[str, float] = {}
        if self._counts["compared"]:
            shadow = {
                "compared": self._counts["compared"],
                "label_flips": self._counts["flips"],
                "mean_score_difference": round(float(np.mean(self._recent_diff)), 6)
                if self._recent_diff
                else 0.0,
            }
        return TailStatus(
            records_in=self._counts["in"],
            records_out=self._counts["out"],
            dead_lettered=self._counts["dead"],
            rate=round(self._rate(), 1),
            lag_total=sum(self._lags.values()),
            lag={f"{t}/{p}": lag for (t, p), lag in sorted(self._lags.items())},
            end_to_end_ms=_percentiles(self._recent_e2e, (50, 90, 99)),
            inference_ms=_percentiles(self._recent_inference, (50, 99)),
            versions=dict(self._versions),
            errors=dict(self._error_counts),
            shadow=shadow,
            model_servers=dict(self._model_servers),
        )

    def __enter__(self) -> TailMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
