"""``streamscore compare``: two models (or versions) on the same records, and a CI gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamscore import console
from streamscore.bench.options import parse_percent
from streamscore.cli import options as opt
from streamscore.cli.common import Command, scoring_options, split_list, translate_errors
from streamscore.cli.option_groups import REGISTRY_DEFAULTS, grouped, registry_options
from streamscore.config import RegistryOptions
from streamscore.errors import UsageError
from streamscore.reporting import Reporter, SilentReporter

EXAMPLE = (
    "Example: streamscore compare sample_data/transactions --model sample_data/models/fraud/1 "
    "--model sample_data/models/fraud/2 --report compare.html ; in CI: add --max-flip-rate 1% "
    "--max-psi 0.2 (exit 9 when exceeded)"
)


def register(app: typer.Typer) -> None:
    app.command("compare", epilog=EXAMPLE, cls=Command)(compare)


@translate_errors
@grouped(registry=registry_options)
def compare(
    data: Annotated[
        Path | None,
        typer.Argument(help="Parquet file or directory to score with both --model (A, then B)."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model A, then model B: .onnx file, REPO/NAME, REPO/NAME/V or an MLflow URI "
            "(models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH).",
        ),
    ] = None,
    scored: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="Instead of DATA: two batch output folders A B, joined on --key."),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="--scored: the column that identifies a row (unique).")
    ] = None,
    topics: Annotated[
        tuple[str, str] | None,
        typer.Option(
            help="Instead of DATA: two output topics A B of replay/tail, joined on their "
            "source partition/offset headers (read_committed)."
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="Score columns to compare (default: every numeric one both have)."),
    ] = None,
    keep: Annotated[
        str | None,
        typer.Option(
            help="Columns shown beside the rows that differ most (DATA: as in batch; "
            "--scored/--topics: none by default)."
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Label = score >= threshold, for flips of [0, 1] columns.")
    ] = 0.5,
    top: Annotated[int, typer.Option(help="Rows that differ most to show, per column.")] = 10,
    sample_rows: Annotated[
        int,
        typer.Option(help="Rows sampled for quantiles, Spearman, PSI and pictures (bounded)."),
    ] = 100_000,
    max_flip_rate: Annotated[
        str | None,
        typer.Option(help="CI gate: exit 9 when a column's label-flip rate exceeds this, e.g. 1%."),
    ] = None,
    max_psi: Annotated[
        float | None,
        typer.Option(help="CI gate: exit 9 when a column's PSI exceeds this, e.g. 0.2."),
    ] = None,
    json_out: Annotated[
        str | None,
        typer.Option("--json", help="Write the report as JSON to this file ('-': stdout)."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write a self-contained HTML page with pictures (needs the plot extra)."),
    ] = None,
    features: opt.Features = None,
    outputs: opt.Outputs = None,
    batch_size: opt.BatchSize = 4096,
    threads: opt.Threads = None,
    provider: opt.Provider = "auto",
    reject_nan: opt.RejectNan = False,
    registry: RegistryOptions = REGISTRY_DEFAULTS,
    bootstrap_servers: opt.BootstrapServers = None,
    kafka_property: opt.KafkaProperties = None,
    config: opt.KafkaConfigFile = None,
    connect_timeout: opt.ConnectTimeout = 10.0,
    log_format: opt.LogFormat = "auto",
) -> None:
    """Compare two models' scores on the same records: statistics, top differences, gate.

    Either score DATA with --model A --model B, or read two existing outputs: --scored
    DIR_A DIR_B --key ID, or --topics OUT_A OUT_B. Rows only one side has are counted.

    Exit codes: 0 ok, 2 bad options, 4 unreadable input, 5 model error, 6 Kafka error,
    9 beyond --max-flip-rate or --max-psi, 10 --json/--report cannot be written.
    """
    from streamscore.compare.options import CompareMode, CompareOptions

    fmt = console.LogFormat.parse(log_format)
    given = [name for name, value in (("DATA", data), ("--scored", scored), ("--topics", topics))
             if value is not None]  # fmt: skip
    if len(given) != 1:
        raise UsageError(
            "compare needs exactly one of DATA (with two --model), --scored or --topics"
            + (f", got {' and '.join(given)}" if given else ""),
        )
    if data is not None and len(model or []) != 2:
        raise UsageError(f"DATA needs --model twice (A, then B), got {len(model or [])}")
    if key is not None and scored is None:
        raise UsageError(
            "--key goes with --scored (DATA pairs rows by position, --topics by offset)"
        )
    if data is None and model:
        raise UsageError("--model goes with DATA; --scored and --topics read existing scores")
    to_stdout = json_out == "-"
    kept = tuple(split_list(keep) or ()) if keep not in (None, "none") else None
    scoring = [
        scoring_options(
            model=name,
            features=features,
            outputs=outputs,
            keep=keep,
            provider=provider,
            threads=threads,
            batch_size=batch_size,
            reject_nan=reject_nan,
            registry=registry,
        )
        for name in (model or [])
    ]
    kafka = None
    if topics is not None:
        from streamscore.kafka.settings import KafkaSettings

        kafka = KafkaSettings.resolve(
            bootstrap_servers, kafka_property or [], config, connect_timeout_s=connect_timeout
        )
    mode = CompareMode.models if data else CompareMode.scored if scored else CompareMode.topics
    options = CompareOptions(
        mode=mode,
        data=data,
        scoring_a=scoring[0] if scoring else None,
        scoring_b=scoring[1] if scoring else None,
        scored=scored,
        key=key,
        topics=topics,
        kafka=kafka,
        keep=kept if keep != "none" else (),
        columns=tuple(split_list(columns) or ()) or None,
        threshold=threshold,
        top=top,
        sample_rows=sample_rows,
        max_flip_rate=None
        if max_flip_rate is None
        else parse_percent(max_flip_rate, "--max-flip-rate"),
        max_psi=max_psi,
        json_path=None if json_out is None or to_stdout else Path(json_out),
        report_path=report,
    )
    from streamscore.compare import dumps_report, gate_error, run_compare  # heavy

    reporter: Reporter = SilentReporter() if to_stdout else console.make_reporter(fmt)
    result = run_compare(options, reporter)
    # stdout carries the report: JSON with --json -, one JSON line off a terminal (or with
    # --log-format json), the tables on a terminal. Human text goes to stderr otherwise.
    machine = to_stdout or console.machine_readable(fmt)
    shown = json.loads(dumps_report(result))
    if to_stdout:
        console.print_text(dumps_report(result).rstrip("\n"))
    elif machine:
        console.json_line({"event": "summary", **shown})
    console.print_wide(console.format_compare_columns(shown), stderr=machine)
    for column in shown["columns"]:
        table = console.format_compare_top(column)
        if table is not None:
            console.print_wide(table, stderr=machine)
    for written in (options.json_path, options.report_path):
        if written is not None:
            console.print_note(f"wrote {written}")
    error = gate_error(result)
    if error is not None:
        raise error
