"""Compare two models (or versions) on the same records: a report and a CI gate.

    from streamscore.compare import CompareMode, CompareOptions, run_compare

    report = run_compare(CompareOptions(CompareMode.models, data=..., scoring_a=..., ...))
    report.column("probabilities_1").flip_rate

Modules, one job each: ``options`` (what to compare), ``sources`` (matched rows from two
models over Parquet, or two batch outputs), ``topics`` (from two output topics), ``stats``
(streaming statistics in bounded memory), ``comparison`` (accumulate, summarize, gate),
``report`` (the JSON schema), ``plot`` (the HTML page), ``run`` (the run).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamscore.compare.options import CompareMode, CompareOptions
    from streamscore.compare.report import SCHEMA_VERSION, CompareReport, dumps_report
    from streamscore.compare.run import gate_error, run_compare

# Loaded on first use, so `streamscore --help` does not pay for numpy and pyarrow.
_HOMES = {
    "CompareMode": "options",
    "CompareOptions": "options",
    "SCHEMA_VERSION": "report",
    "CompareReport": "report",
    "dumps_report": "report",
    "gate_error": "run",
    "run_compare": "run",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'streamscore.compare' has no attribute {name!r}")
    return getattr(importlib.import_module(f"streamscore.compare.{home}"), name)


__all__ = [
    "SCHEMA_VERSION",
    "CompareMode",
    "CompareOptions",
    "CompareReport",
    "dumps_report",
    "gate_error",
    "run_compare",
]
