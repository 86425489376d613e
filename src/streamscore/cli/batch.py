"""``streamscore batch``: score a directory of Parquet files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamscore import console
from streamscore.cli import options as opt
from streamscore.cli.common import scoring_options, translate_errors
from streamscore.cli.option_groups import (
    REGISTRY_DEFAULTS,
    REMOTE_DEFAULTS,
    grouped,
    registry_options,
    remote_options,
)
from streamscore.config import (
    ROW_GROUP_ROWS,
    BatchOptions,
    OnError,
    Parallelism,
    RayOptions,
    RegistryOptions,
)
from streamscore.errors import OutputError, PartialFailure, UsageError, stopped_by
from streamscore.remote.settings import RemoteSettings
from streamscore.shutdown import StopSignal, stop_on_signals

EXAMPLE = (
    "Example: streamscore batch sample_data/transactions --model sample_data/models/fraud "
    "--out scored/"
)


LOCAL_RAY = "local"  # --ray local: a cluster of this machine, started for the run

# After a stop signal, the batch in flight finishes and the file is abandoned; this long
# later (or at a second signal) the process exits at once, as a killed run would.
STOP_GRACE_S = 30.0


def register(app: typer.Typer) -> None:
    app.command("batch", epilog=EXAMPLE)(batch)


@translate_errors
@grouped(registry=registry_options, remote=remote_options)
def batch(
    input: Annotated[
        Path, typer.Argument(help="A Parquet file or a directory (searched recursively).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (mirrors INPUT).")],
    model: opt.Model,
    registry: RegistryOptions = REGISTRY_DEFAULTS,
    features: opt.Features = None,
    outputs: opt.Outputs = None,
    keep: opt.Keep = None,
    batch_size: opt.BatchSize = 4096,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU cores for the model (default: every core, up to 8; with --ray, 1 per "
            "worker). "
            "Scores do not depend on it with --parallelism calls."
        ),
    ] = None,
    parallelism: Annotated[
        Parallelism,
        typer.Option(
            help="How the model uses --threads cores on CPU: calls (that many model calls at "
            "once, one core each: the most rows/s) or intra-op (one call at a time over that "
            "many ONNX Runtime threads)."
        ),
    ] = Parallelism.calls,
    provider: opt.Provider = "auto",
    on_error: Annotated[
        OnError,
        typer.Option(
            help="Rows that cannot be scored: quarantine (to OUT/_rejected/), skip, fail."
        ),
    ] = OnError.quarantine,
    reject_nan: opt.RejectNan = False,
    force: Annotated[bool, typer.Option(help="Rescore files whose output is current.")] = False,
    prune: Annotated[
        bool, typer.Option(help="Delete outputs whose input file no longer exists.")
    ] = False,
    row_group_rows: Annotated[
        int,
        typer.Option(help="Rows per output row group (at most; also cut at 128 MiB of data)."),
    ] = ROW_GROUP_ROWS,
    log_format: opt.LogFormat = "auto",
    remote: RemoteSettings = REMOTE_DEFAULTS,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Score on a Ray cluster: auto, ray://HOST:PORT, the GCS HOST:PORT, or local "
            "(a cluster of this machine, started for the run). Needs streamscore[ray].",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="With --ray: how many Ray workers, each loading the model once (default: as "
            "many as the cluster's CPUs, or GPUs with --provider cuda, allow)."
        ),
    ] = None,
) -> None:
    """Score every Parquet file under INPUT with MODEL into OUT, one output file per input.

    Reruns skip files already scored by the same model and resume after a crash.

    Exit codes: 0 ok (rejected rows included), 2 usage, 3 some files failed, 4 input or
    mapping error, 5 model, 7 OUT locked by another run, 10 OUT not writable, 11 Ray
    cluster, 12 model server, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    fmt = console.LogFormat.parse(log_format)
    if workers is not None and ray is None:
        raise UsageError("--workers needs --ray", hint="without --ray, batch runs in this process")
    options = BatchOptions(
        input=input,
        output=out,
        scoring=scoring_options(
            model=model,
            features=features,
            outputs=outputs,
            keep=keep,
            provider=provider,
            threads=threads,
            batch_size=batch_size,
            reject_nan=reject_nan,
            remote=remote,
            registry=registry,
        ),
        on_error=on_error,
        force=force,
        prune=prune,
        row_group_rows=row_group_rows,
        parallelism=parallelism,
        ray=None
        if ray is None
        else RayOptions(address=None if ray == LOCAL_RAY else ray, workers=workers),
    )
    from streamscore.batch import SUMMARY_NAME, run_batch  # heavy: loaded only when run

    stop = StopSignal()
    with stop_on_signals(stop, grace_s=STOP_GRACE_S):
        summary = run_batch(options, console.make_reporter(fmt), stop=stop)
    console.print_summary(summary.as_dict(), title="streamscore batch", log_format=fmt)
    if summary.summary_error is not None:
        raise OutputError(summary.summary_error)
    if summary.interrupted:
        raise stopped_by(stop.signum, f"{summary.files_ok} file(s) finished, summary in {out}")
    if summary.partial:
        total = summary.files_ok + summary.files_skipped + summary.files_failed
        raise PartialFailure(
            f"{summary.files_failed} of {total} input files failed; see {out / SUMMARY_NAME}",
            hint="fix or remove them and rerun; finished files are skipped",
        )
