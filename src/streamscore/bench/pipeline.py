"""``bench --pipeline batch``: the batch pipeline's rows/s beside bare session.run on its rows.

The ratio says how much of the model's own speed survives reading, input mapping and
writing: 0.9 means the pipeline spends a tenth of its time outside the model.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from streamscore.batch import run_batch
from streamscore.bench.inputs import DataRows
from streamscore.bench.report import PipelineResult
from streamscore.config import BatchOptions, ScoringOptions
from streamscore.errors import InputError
from streamscore.model.repository import ModelRef
from streamscore.model.session import load_model


def time_bare_run(
    ref: ModelRef, rows: DataRows, *, provider: str, threads: int, batch_size: int, min_s: float
) -> tuple[float, int]:
    """Seconds and rows of bare session.run over ``rows`` in pre-made batches.

    Passes over all rows repeat until ``min_s`` has passed, so small inputs still time well.
    """
    model = load_model(ref, provider=provider, threads=threads or None)
    names = model.signature.output_names()
    chunks = rows.chunks(batch_size)
    model.run(names, chunks[0])  # warm-up, and a clear error if the rows cannot run
    run = model.session.run
    done = 0
    started = time.perf_counter()
    while True:
        for feeds in chunks:
            run(names, feeds)
        done += rows.rows
        elapsed = time.perf_counter() - started
        if elapsed >= min_s:
            return elapsed, done


def bench_batch_pipeline(
    ref: ModelRef,
    data: Path,
    rows: DataRows,
    *,
    provider: str,
    threads: int,
    batch_size: int,
    features: tuple[str, ...] | None,
    min_bare_s: float,
) -> PipelineResult:
    """Run ``streamscore batch`` on ``data`` into a temporary folder, then bare run on ``rows``."""
    with tempfile.TemporaryDirectory(prefix="streamscore-bench-") as tmp:
        options = BatchOptions(
            input=data,
            output=Path(tmp) / "scored",
            scoring=ScoringOptions(
                model=str(ref.path),
                features=features,
                provider=provider,
                threads=threads or None,
                batch_size=batch_size,
            ),
            force=True,
        )
        summary = run_batch(options)
        # The run's own clock: reading, scoring and writing, not loading the model.
        pipeline_s = max(summary.seconds, 1e-9)
    if summary.partial:
        raise InputError(
            f"--pipeline batch: {summary.files_failed} input file(s) failed: {summary.failures[0]}",
            hint="bench on files that `streamscore batch` reads cleanly",
        )
    bare_s, bare_rows = time_bare_run(
        ref, rows, provider=provider, threads=threads, batch_size=batch_size, min_s=min_bare_s
    )
    pipeline_rate = summary.rows_in / pipeline_s
    bare_rate = bare_rows / bare_s
    return PipelineResult(
        provider=provider,
        threads=threads,
        batch_size=batch_size,
        rows=summary.rows_in,
        pipeline_seconds=pipeline_s,
        pipeline_rows_per_s=pipeline_rate,
        bare_seconds=bare_s,
        bare_rows_per_s=bare_rate,
        ratio=pipeline_rate / bare_rate if bare_rate > 0 else 0.0,
    )
