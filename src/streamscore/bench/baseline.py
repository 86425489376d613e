"""The CI gate: compare a run with a baseline report, per configuration.

Two metrics per configuration that both reports measured: rows/s (lower is worse) and p99
latency (higher is worse). ``--pipeline`` entries compare rows/s only. A metric regresses
when it is worse by more than ``max_regression`` (a fraction: 0.10 = 10 %).
"""

from __future__ import annotations

from pathlib import Path

from streamscore.bench.report import BenchReport, Comparison, MetricChange
from streamscore.errors import RegressionDetected, UsageError


def _change(key: str, metric: str, base: float, now: float, limit: float) -> MetricChange:
    if metric == "rows_per_s":
        worse = (base - now) / base if base > 0 else 0.0
    else:
        worse = (now - base) / base if base > 0 else 0.0
    return MetricChange(key, metric, base, now, worse, worse > limit)


def _metrics(report: BenchReport) -> dict[str, dict[str, float]]:
    metrics = {
        r.key: {"rows_per_s": r.rows_per_s, "p99_ms": r.latency_ms.p99} for r in report.results
    }
    metrics.update({p.key: {"rows_per_s": p.pipeline_rows_per_s} for p in report.pipeline})
    return metrics


def check_overlap(planned: list[str], baseline: BenchReport, baseline_path: Path) -> None:
    """Fail before measuring when the baseline cannot judge any planned configuration."""
    if not set(planned) & set(_metrics(baseline)):
        raise _no_overlap(baseline_path)


def _no_overlap(baseline_path: Path) -> UsageError:
    return UsageError(
        f"baseline {baseline_path} measured none of this run's configurations",
        hint="run with the same --batch-sizes/--threads/--providers/--concurrency/--rate as "
        "the baseline, or regenerate it",
    )


def compare_reports(
    current: BenchReport, baseline: BenchReport, *, max_regression: float, baseline_path: Path
) -> Comparison:
    """Compare every configuration both reports measured; UsageError if they share none."""
    now, base = _metrics(current), _metrics(baseline)
    shared = [key for key in now if key in base]
    if not shared:
        raise _no_overlap(baseline_path)
    changes = [
        _change(key, metric, base[key][metric], now[key][metric], max_regression)
        for key in shared
        for metric in now[key]
        if metric in base[key]
    ]
    return Comparison(
        baseline=str(baseline_path),
        max_regression=max_regression,
        baseline_model_sha256=baseline.model.sha256,
        changes=changes,
        only_in_baseline=[key for key in base if key not in now],
        only_now=[key for key in now if key not in base],
    )


def regression_error(comparison: Comparison) -> RegressionDetected | None:
    """The error to raise when anything regressed (exit code 8), naming what did."""
    regressions = comparison.regressions
    if not regressions:
        return None
    shown = "; ".join(_describe(change) for change in regressions[:3])
    more = f"; and {len(regressions) - 3} more" if len(regressions) > 3 else ""
    return RegressionDetected(
        f"{len(regressions)} metric(s) regressed more than {comparison.max_regression:.0%} "
        f"against {comparison.baseline}: {shown}{more}",
        hint="see the comparison table; raise --max-regression only if the slowdown is expected",
    )


def _describe(change: MetricChange) -> str:
    if change.metric == "rows_per_s":
        return (
            f"{change.key} rows/s {change.baseline:,.0f} -> {change.current:,.0f} "
            f"(-{change.worse_by:.0%})"
        )
    return (
        f"{change.key} p99 {change.baseline:.3g} ms -> {change.current:.3g} ms "
        f"(+{change.worse_by:.0%})"
    )
