"""Benchmark a model: latency and throughput per configuration, and a CI regression gate.

    from streamscore.bench import BenchOptions, run_bench, regression_error

    report = run_bench(BenchOptions("sample_data/models/fraud", batch_sizes=(1, 64)))
    report.results[0].rows_per_s

Modules, one job each: ``options`` (what to run), ``inputs`` (model feeds), ``harness``
(timing), ``sweep`` (the run), ``report`` (the JSON schema), ``baseline`` (the CI gate),
``pipeline`` (batch pipeline vs bare session.run), ``plot`` (pictures, with matplotlib).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamscore.bench.baseline import compare_reports, regression_error
    from streamscore.bench.options import Arrivals, BenchOptions
    from streamscore.bench.report import (
        SCHEMA_VERSION,
        BenchReport,
        BenchResult,
        Configuration,
        dumps_report,
        load_report,
        save_report,
    )
    from streamscore.bench.sweep import run_bench

# Loaded on first use, so `streamscore --help` does not pay for onnxruntime and numpy.
_HOMES = {
    "compare_reports": "baseline",
    "regression_error": "baseline",
    "Arrivals": "options",
    "BenchOptions": "options",
    "SCHEMA_VERSION": "report",
    "BenchReport": "report",
    "BenchResult": "report",
    "Configuration": "report",
    "dumps_report": "report",
    "load_report": "report",
    "save_report": "report",
    "run_bench": "sweep",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'streamscore.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"streamscore.bench.{home}"), name)


__all__ = [
    "SCHEMA_VERSION",
    "Arrivals",
    "BenchOptions",
    "BenchReport",
    "BenchResult",
    "Configuration",
    "compare_reports",
    "dumps_report",
    "load_report",
    "regression_error",
    "run_bench",
    "save_report",
]
