"""``bench URL`` and ``bench MODEL URL``: a served model measured like an embedded one.

A model server URL is swept over batch sizes, concurrency and rates exactly as a session is
(provider ``remote``; each call is one OIP request: encode, REST or gRPC, decode). With an embedded
MODEL beside it, both run on the same inputs in the same run, and every embedded
configuration is compared with the served one at the same batch, concurrency and rate
(:class:`streamscore.bench.report.RemoteComparison`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np

from streamscore.bench.environment import collect_environment
from streamscore.bench.inputs import InputSource
from streamscore.bench.options import BenchOptions
from streamscore.bench.report import (
    BenchReport,
    BenchResult,
    ModelInfo,
    ProviderStatus,
    RemoteComparison,
    Settings,
)
from streamscore.bench.sweep import _inputs, _sweep_model, check_providers
from streamscore.errors import UsageError
from streamscore.model.base import close_model
from streamscore.model.repository import resolve_model
from streamscore.model.session import load_model
from streamscore.remote.model import RemoteModel, open_remote_model
from streamscore.remote.settings import RemoteSettings
from streamscore.reporting import Reporter

REMOTE = "remote"
SERIALIZATION_CALLS = 20


def _open_served(url: str, options: BenchOptions) -> RemoteModel:
    """The served model, with a connection per concurrent caller of the sweep."""
    settings = options.remote or RemoteSettings()
    settings = dataclasses.replace(settings, concurrency=max(options.concurrency))
    return open_remote_model(url, settings)


def serialization_ms(model: RemoteModel, inputs: InputSource, batch_size: int) -> float:
    """Median time the client spends encoding one request and decoding its answer."""
    names = model.signature.output_names()
    feeds = inputs.feeds(batch_size)
    answer = model.send(model.encode(names, feeds))
    times = []
    for _ in range(SERIALIZATION_CALLS):
        started = time.perf_counter_ns()
        model.encode(names, feeds)
        model.decode(answer, names, batch_size)
        times.append(time.perf_counter_ns() - started)
    return float(np.median(times)) / 1e6


def compare_remote(
    results: list[BenchResult], serialization: dict[int, float]
) -> list[RemoteComparison]:
    """Each embedded result against the remote one at the same batch, concurrency and rate;
    ``serialization`` is the client's encode+decode time (ms) per batch size."""
    remote = {
        (r.configuration.batch_size, r.configuration.concurrency, r.configuration.rate): r
        for r in results
        if r.configuration.provider == REMOTE
    }
    compared: list[RemoteComparison] = []
    for local in results:
        c = local.configuration
        served = remote.get((c.batch_size, c.concurrency, c.rate))
        if c.provider == REMOTE or served is None:
            continue
        local_p50, served_p50 = local.latency_ms.p50, served.latency_ms.p50
        coding = serialization.get(c.batch_size, 0.0)
        compared.append(
            RemoteComparison(
                embedded_key=local.key,
                remote_key=served.key,
                embedded_rows_per_s=local.rows_per_s,
                remote_rows_per_s=served.rows_per_s,
                ratio=served.rows_per_s / local.rows_per_s if local.rows_per_s else 0.0,
                embedded_p50_ms=local_p50,
                remote_p50_ms=served_p50,
                remote_overhead=max(0.0, 1 - local_p50 / served_p50) if served_p50 else 0.0,
                serialization_ms=coding,
                serialization_share=min(1.0, coding / served_p50) if served_p50 else 0.0,
                network_share=max(0.0, 1 - (local_p50 + coding) / served_p50)
                if served_p50
                else 0.0,
            )
        )
    return compared


def run_with_remote(options: BenchOptions, reporter: Reporter) -> BenchReport:
    """Measure a served model (and the embedded MODEL beside it, with ``served``)."""
    url = options.model if options.remote_only else options.served
    assert url is not None
    served = _open_served(url, options)
    try:
        results: list[BenchResult] = []
        statuses = [ProviderStatus(REMOTE, REMOTE, True, None)]
        combos: list[tuple[str, int]] = []
        embedded = None
        if not options.remote_only:
            ref = resolve_model(options.model, options.registry)
            embedded = load_model(ref, provider="cpu")
            if [s.name for s in embedded.signature.inputs] != [
                s.name for s in served.signature.inputs
            ]:
                raise UsageError(
                    f"{url} takes other inputs than {options.model}; they cannot share inputs",
                    hint="compare the served model with a local copy of the same model",
                )
            available = check_providers(ref, options)
            statuses = available.statuses + statuses
            combos = list(itertools.product(available.names, options.threads))
        per_model = len(options.batch_sizes) * len(options.concurrency) * len(options.rates or [1])
        reporter.add_task("configurations", "configurations", (len(combos) + 1) * per_model)
        inputs = _inputs(options, embedded or served)
        if embedded is not None:
            for provider, threads in combos:
                model = load_model(embedded.ref, provider=provider, threads=threads or None)
                results.extend(_sweep_model(model, provider, threads, inputs, options, reporter))
        results.extend(_sweep_model(served, REMOTE, 0, inputs, options, reporter))
        shown = embedded.ref if embedded is not None else served.ref
        return BenchReport(
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            model=ModelInfo(
                shown.name,
                shown.version,
                shown.location,
                shown.sha256,
                shown.size,
                shown.lineage,
            ),
            environment=collect_environment([r.provider_used for r in results]),
            settings=Settings(
                warmup_s=options.warmup_s,
                window_s=options.measured_window_s,
                max_duration_s=options.max_duration_s,
                stability=options.stability,
                inputs=inputs.description,
                shapes={name: list(dims) for name, dims in options.shapes},
                seed=options.seed,
            ),
            providers=statuses,
            results=results,
            served=None if options.remote_only else served.ref.location,
            remote_comparison=compare_remote(
                results,
                {}
                if options.remote_only
                else {b: serialization_ms(served, inputs, b) for b in options.batch_sizes},
            ),
        )
    finally:
        close_model(served)
