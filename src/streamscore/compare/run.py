"""Run a comparison: pick the source, stream its matched rows into the statistics, report."""

from __future__ import annotations

import time
from collections.abc import Sequence

from streamscore.compare.comparison import Comparison, PairedBatch, check_gate
from streamscore.compare.options import CompareMode, CompareOptions
from streamscore.compare.report import CompareReport, GateFailure, save_report
from streamscore.compare.sources import ModelPairs, PairSource, ScoredPairs
from streamscore.errors import ComparisonGateFailed, output_error
from streamscore.reporting import Reporter, SilentReporter


def _source(options: CompareOptions, reporter: Reporter) -> PairSource:
    keep = options.keep
    if options.mode is CompareMode.models:
        assert options.data and options.scoring_a and options.scoring_b
        return ModelPairs(
            options.data, options.scoring_a, options.scoring_b, options.columns, reporter
        )
    if options.mode is CompareMode.scored:
        assert options.scored and options.key
        return ScoredPairs(*options.scored, options.key, keep or (), options.columns)
    from streamscore.compare.topics import TopicPairs  # needs the Kafka client

    assert options.topics and options.kafka
    return TopicPairs(options.kafka, *options.topics, keep or (), options.columns)


def run_compare(options: CompareOptions, reporter: Reporter | None = None) -> CompareReport:
    """Compare the two sides of ``options``; write --json and --report; return the report.

    Does not raise when the gate fails: ``report.gate.failures`` lists what exceeded its
    limit (see :func:`gate_error`). Raises StreamscoreError subclasses for problems that
    stop the run.
    """
    reporter = reporter or SilentReporter()
    if options.report_path is not None:
        from streamscore import plotting

        plotting.require_matplotlib("--report")
    comparison = Comparison(
        threshold=options.threshold, top=options.top, sample_rows=options.sample_rows
    )
    try:
        source = _source(options, reporter)

        def emit(columns: Sequence[str], batch: PairedBatch) -> None:
            comparison.add(columns, batch)

        source.feed(emit)
    finally:
        reporter.close()
    columns = comparison.results()
    report = CompareReport(
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        mode=options.mode.value,
        a=source.a,
        b=source.b,
        settings={
            "threshold": options.threshold,
            "top": options.top,
            "sample_rows": options.sample_rows,
            "key": options.key,
            "keep": list(options.keep) if options.keep is not None else None,
            "columns": comparison.columns,
        },
        rows=comparison.rows,
        sample={
            "rows": min(comparison.sample.seen, options.sample_rows),
            "exact": comparison.sample.exact,
        },
        columns=columns,
        gate=check_gate(columns, options.max_flip_rate, options.max_psi, comparison.rows.matched),
        samples=comparison.samples(),
    )
    _write(report, options)
    return report


def _write(report: CompareReport, options: CompareOptions) -> None:
    from streamscore.compare.plot import write_report

    for path, write in ((options.json_path, save_report), (options.report_path, write_report)):
        if path is not None:
            try:
                write(report, path)
            except OSError as exc:
                raise output_error(path, exc) from exc


def _failure_text(failure: GateFailure) -> str:
    if failure.metric == "flip_rate":
        return f"{failure.column} flip rate {failure.value:.2%} > {failure.limit:.2%}"
    if failure.metric == "psi":
        return f"{failure.column} PSI {failure.value:.3f} > {failure.limit:g}"
    return "no row was scored by both sides, so nothing could be checked"


def gate_error(report: CompareReport) -> ComparisonGateFailed | None:
    """The error naming every column beyond --max-flip-rate / --max-psi, or None."""
    failures = report.gate.failures
    if not failures:
        return None
    named = "; ".join(_failure_text(f) for f in failures)
    if all(f.metric == "matched_rows" for f in failures):
        return ComparisonGateFailed(
            f"the gate cannot pass: {named}",
            hint="check that both sides hold the same records (DATA, --key, the topics' input)",
        )
    return ComparisonGateFailed(
        f"models differ beyond the gate: {named}",
        hint="look at the report's top rows; raise the limit only on purpose",
    )
