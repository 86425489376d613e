"""Run a benchmark: every configuration of the sweep, measured, compared and saved.

This is the function behind ``streamscore bench``; the harness (:mod:`.harness`) times,
this module decides what to time and turns measurements into a :class:`BenchReport`.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamscore import plotting
from streamscore.bench.baseline import check_overlap, compare_reports
from streamscore.bench.environment import collect_environment
from streamscore.bench.harness import (
    HarnessSettings,
    Measurement,
    measure_closed_loop,
    measure_open_loop,
)
from streamscore.bench.inputs import GeneratedInputs, InputSource, load_rows
from streamscore.bench.options import Arrivals, BenchOptions
from streamscore.bench.pipeline import bench_batch_pipeline
from streamscore.bench.plot import write_plot
from streamscore.bench.report import (
    BenchReport,
    BenchResult,
    Configuration,
    Histogram,
    ModelInfo,
    Percentiles,
    PipelineResult,
    ProviderStatus,
    Settings,
    Transfer,
    load_report,
    pipeline_key,
    save_report,
)
from streamscore.errors import ModelError, StreamscoreError, UsageError, output_error
from streamscore.model import resolve_model
from streamscore.model.base import Model
from streamscore.model.repository import ModelRef
from streamscore.model.session import LoadedModel, load_model, time_device_copies
from streamscore.reporting import Reporter, SilentReporter

OVERHEAD_WARNING = 0.05  # above this share of time outside session.run, say so
OVERLOAD_RATIO = 0.95  # open loop: serving less than this share of the asked rate
TRANSFER_CALLS = 50


@dataclass(frozen=True)
class _Available:
    """Providers that really load, and the status of every requested one."""

    statuses: list[ProviderStatus]

    @property
    def names(self) -> list[str]:
        return [s.requested for s in self.statuses if s.available]


def check_providers(ref: ModelRef, options: BenchOptions) -> _Available:
    """Create a session per requested provider and read which provider really runs.

    onnxruntime-gpu lists CUDA on machines without a GPU and falls back to CPU; only the
    session's own provider list tells. Unavailable providers are reported, or with
    ``require_provider`` raise ModelError (exit 5).
    """
    statuses: list[ProviderStatus] = []
    for provider in options.providers:
        try:
            used: str | None = load_model(ref, provider=provider).provider
            reason = None if used == provider else f"ONNX Runtime ran {used} instead"
        except ModelError as exc:
            if provider == "cpu":
                raise
            used, reason = None, exc.message
        statuses.append(ProviderStatus(provider, used, reason is None, reason))
        if reason is not None and options.require_provider:
            raise ModelError(
                f"--require-provider: {provider} is not available here: {reason}",
                hint="run on a machine where it loads, or drop --require-provider",
            )
    return _Available(statuses)


def _settings(options: BenchOptions) -> HarnessSettings:
    return HarnessSettings(
        warmup_s=options.warmup_s,
        window_s=options.measured_window_s,
        max_duration_s=options.max_duration_s,
        stability=options.stability,
    )


def _warnings(m: Measurement, options: BenchOptions) -> list[str]:
    notes: list[str] = []
    if m.overhead is not None and m.overhead > OVERHEAD_WARNING:
        notes.append(
            f"harness overhead {m.overhead:.1%}: calls are so short that the loop around "
            "session.run shows; rows/s understates the model"
        )
    if not m.stable:
        notes.append(
            f"not stable within {options.stability:.0%} after {options.max_duration_s:g} s; "
            f"figures average all {len(m.windows)} windows (raise --max-duration)"
        )
    if m.target_rate is not None and m.calls_per_s < OVERLOAD_RATIO * m.target_rate:
        notes.append(
            f"overloaded: {m.target_rate:g} calls/s asked, {m.calls_per_s:,.0f} served; "
            f"latency keeps growing with run time ({m.backlog:,} requests left waiting)"
        )
    return notes


def _result(config: Configuration, provider: str, m: Measurement) -> BenchResult:
    open_loop = m.target_rate is not None
    return BenchResult(
        configuration=config,
        provider_used=provider,
        calls=m.calls,
        rows=m.calls * config.batch_size,
        seconds=m.seconds,
        calls_per_s=m.calls_per_s,
        rows_per_s=m.calls_per_s * config.batch_size,
        latency_ms=Percentiles.of_ns(m.latency_ns),
        stable=m.stable,
        reported_windows=m.reported_windows,
        windows_calls_per_s=[w.calls_per_s for w in m.windows],
        overhead=m.overhead,
        service_ms=Percentiles.of_ns(m.service_ns) if open_loop else None,
        queue_ms=Percentiles.of_ns(m.queue_ns) if open_loop else None,
        target_rate=m.target_rate,
        backlog=m.backlog if open_loop else None,
        histogram=Histogram.of_ns(m.latency_ns),
    )


def _transfer(model: LoadedModel, feeds: dict[str, np.ndarray]) -> Transfer:
    timings = time_device_copies(model, feeds, TRANSFER_CALLS)

    def median_ms(values: np.ndarray) -> float:
        return float(np.median(values)) / 1e6

    return Transfer(
        median_ms(timings.h2d_ns),
        median_ms(timings.compute_ns),
        median_ms(timings.d2h_ns),
        TRANSFER_CALLS,
    )


def _measure(
    call: functools.partial[object], config: Configuration, options: BenchOptions
) -> Measurement:
    settings = _settings(options)
    try:
        if config.rate is None:
            return measure_closed_loop(call, concurrency=config.concurrency, settings=settings)
        return measure_open_loop(
            call,
            rate=config.rate,
            poisson=config.arrivals == Arrivals.poisson.value,
            concurrency=config.concurrency,
            settings=settings,
            seed=options.seed,
        )
    except StreamscoreError:
        raise
    except Exception as exc:  # onnxruntime errors surface here as plain RuntimeErrors
        raise ModelError(f"{config.key}: session.run failed: {exc}".splitlines()[0]) from exc


def _check_call(
    model: Model, names: list[str], feeds: dict[str, np.ndarray], options: BenchOptions
) -> None:
    """One checked call, so a model that rejects the inputs fails clearly, before timing."""
    try:
        model.run(names, feeds)
    except ModelError as exc:
        if options.data is not None:
            raise
        raise ModelError(
            f"{exc.message} (on generated inputs)",
            hint="bench with real rows: --data FILE.parquet",
        ) from exc


def _sweep_model(
    model: Model,
    provider: str,
    threads: int,
    inputs: InputSource,
    options: BenchOptions,
    reporter: Reporter,
) -> list[BenchResult]:
    results: list[BenchResult] = []
    names = model.signature.output_names()
    for batch_size in options.batch_sizes:
        feeds = inputs.feeds(batch_size)
        _check_call(model, names, feeds, options)
        # session.run itself for an embedded model; a remote one's run (encode, HTTP, decode)
        run: Callable[..., object] = (
            model.session.run if isinstance(model, LoadedModel) else model.run
        )
        call: functools.partial[object] = functools.partial(run, names, feeds)
        for concurrency, rate in itertools.product(options.concurrency, options.rates or [None]):
            config = Configuration(
                provider,
                threads,
                batch_size,
                concurrency,
                rate,
                options.arrivals.value if rate is not None else None,
            )
            measurement = _measure(call, config, options)
            result = _result(config, model.provider, measurement)
            result.warnings.extend(_warnings(measurement, options))
            if provider in ("cuda", "tensorrt") and isinstance(model, LoadedModel):
                try:
                    result.transfer_ms = _transfer(model, feeds)
                except ModelError as exc:
                    result.warnings.append(f"no copy/compute split: {exc.message}")
            results.append(result)
            _report(reporter, result)
    return results


def _report(reporter: Reporter, result: BenchResult) -> None:
    """Progress and one line per configuration; warnings travel in the result itself."""
    reporter.advance("configurations", 1)
    reporter.event(
        {
            "event": "info",
            "message": f"{result.key}: {result.rows_per_s:,.0f} rows/s, "
            f"p50 {result.latency_ms.p50:.3g} ms, p99 {result.latency_ms.p99:.3g} ms",
        }
    )


def _inputs(options: BenchOptions, model: Model) -> InputSource:
    if options.data is not None:
        limit = max(options.batch_sizes)
        return load_rows(options.data, model.signature, features=options.features, limit=limit)
    return GeneratedInputs(model.signature, dict(options.shapes), options.seed)


def _run_pipelines(
    ref: ModelRef,
    probe: LoadedModel,
    providers: list[str],
    options: BenchOptions,
    reporter: Reporter,
) -> tuple[list[PipelineResult], str]:
    assert options.data is not None  # BenchOptions checks --pipeline has --data
    rows = load_rows(options.data, probe.signature, features=options.features)
    results: list[PipelineResult] = []
    for provider, threads, batch_size in itertools.product(
        providers, options.threads, options.batch_sizes
    ):
        result = bench_batch_pipeline(
            ref,
            options.data,
            rows,
            provider=provider,
            threads=threads,
            batch_size=batch_size,
            features=options.features,
            min_bare_s=options.measured_window_s,
        )
        results.append(result)
        reporter.advance("configurations", 1)
        reporter.event(
            {
                "event": "info",
                "message": f"{result.key}: batch {result.pipeline_rows_per_s:,.0f} rows/s, "
                f"bare session.run {result.bare_rows_per_s:,.0f} rows/s "
                f"(ratio {result.ratio:.2f})",
            }
        )
    return results, rows.description


def planned_keys(options: BenchOptions) -> list[str]:
    """The keys of every configuration ``options`` asks for, if every provider loads."""
    providers, threads = list(options.providers), list(options.threads)
    if options.remote_only:
        providers, threads = ["remote"], [0]
    sweep = itertools.product(providers, threads, options.batch_sizes)
    if options.pipeline:
        return [pipeline_key(p, t, b) for p, t, b in sweep]
    rates: list[float | None] = list(options.rates) or [None]
    arrivals = options.arrivals.value
    keys = [
        Configuration(p, t, b, c, r, arrivals if r is not None else None).key
        for (p, t, b), c, r in itertools.product(sweep, options.concurrency, rates)
    ]
    if options.served is not None:
        keys += [
            Configuration("remote", 0, b, c, r, arrivals if r is not None else None).key
            for b, c, r in itertools.product(options.batch_sizes, options.concurrency, rates)
        ]
    return keys


def run_bench(options: BenchOptions, reporter: Reporter | None = None) -> BenchReport:
    """Measure every configuration of ``options``; compare with the baseline; save outputs.

    Returns the report (``report.comparison`` holds the baseline comparison, if any). Does
    not raise on regressions: see :func:`streamscore.bench.regression_error`. Raises
    StreamscoreError subclasses for problems that stop the run, before measuring where it
    can (an unreadable baseline, or one that shares no configuration with this run).
    """
    reporter = reporter or SilentReporter()
    for path, option in ((options.json_path, "--json"), (options.plot_path, "--plot")):
        if path is not None and str(path) != "-":
            if not path.parent.is_dir():
                raise UsageError(
                    f"{option} {path}: folder {path.parent} does not exist",
                    hint="create it first; the check runs before measuring",
                )
            _check_writable(path)
    if options.plot_path is not None:
        plotting.require_matplotlib("--plot")
    try:
        baseline = None
        if options.baseline is not None:
            baseline = load_report(options.baseline)
            check_overlap(planned_keys(options), baseline, options.baseline)
        report = _run(options, reporter)
    finally:
        reporter.close()
    unmatched: UsageError | None = None  # the outputs are still worth writing
    if baseline is not None and options.baseline is not None:
        try:
            report.comparison = compare_reports(
                report,
                baseline,
                max_regression=options.max_regression,
                baseline_path=options.baseline,
            )
        except UsageError as exc:
            unmatched = exc
    for path, write in ((options.json_path, save_report), (options.plot_path, write_plot)):
        if path is not None:
            try:
                write(report, path)
            except OSError as exc:
                raise output_error(path, exc) from exc
    if unmatched is not None:
        raise unmatched
    return report


def _check_writable(path: Path) -> None:
    """Open ``path`` for writing (and remove it again if it was not there), so that an
    unwritable output fails in seconds rather than after the whole benchmark."""
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise output_error(path, exc) from exc
    if not existed:
        path.unlink(missing_ok=True)


def _run(options: BenchOptions, reporter: Reporter) -> BenchReport:
    if options.remote_only or options.served is not None:
        from streamscore.bench.remote import run_with_remote  # httpx: only for a server

        return run_with_remote(options, reporter)
    ref = resolve_model(options.model, options.registry)
    probe = load_model(ref, provider="cpu")
    available = check_providers(ref, options)
    results: list[BenchResult] = []
    pipeline: list[PipelineResult] = []
    combos = list(itertools.product(available.names, options.threads))
    per_model = len(options.batch_sizes) * len(options.concurrency) * len(options.rates or [1])
    reporter.add_task("configurations", "configurations", len(combos) * per_model)
    if options.pipeline:
        pipeline, described = _run_pipelines(ref, probe, available.names, options, reporter)
    else:
        inputs = _inputs(options, probe)
        described = inputs.description
        for provider, threads in combos:
            model = load_model(ref, provider=provider, threads=threads or None)
            results.extend(_sweep_model(model, provider, threads, inputs, options, reporter))
    used = [r.provider_used for r in results] + [p.provider for p in pipeline]
    return BenchReport(
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        model=ModelInfo(
            ref.name,
            ref.version,
            str(ref.path),
            probe.ref.sha256,
            probe.ref.size,
            probe.ref.lineage,
        ),
        environment=collect_environment(used),
        settings=Settings(
            warmup_s=options.warmup_s,
            window_s=options.measured_window_s,
            max_duration_s=options.max_duration_s,
            stability=options.stability,
            inputs=described,
            shapes={name: list(dims) for name, dims in options.shapes},
            seed=options.seed,
        ),
        providers=available.statuses,
        results=results,
        pipeline=pipeline,
    )
