"""``streamscore bench``: latency and throughput of a model, and a CI regression gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamscore import console
from streamscore.bench.options import (
    Arrivals,
    BenchOptions,
    parse_float_list,
    parse_percent,
    parse_shapes,
)
from streamscore.cli import options as opt
from streamscore.cli.common import parse_int_list, split_list, translate_errors
from streamscore.cli.option_groups import REGISTRY_DEFAULTS, grouped, registry_options
from streamscore.config import RegistryOptions
from streamscore.errors import UsageError
from streamscore.remote.settings import RemoteSettings
from streamscore.reporting import Reporter, SilentReporter

EXAMPLE = (
    "Example: streamscore bench sample_data/models/fraud --batch-sizes 1,64,4096 --threads 1,2 "
    "--json bench.json --plot bench.html ; in CI: streamscore bench MODEL --baseline "
    "bench.json --max-regression 10% (exit 8 when slower); embedded vs served: streamscore "
    "bench sample_data/models/fraud/2 http://127.0.0.1:8080/v2/models/fraud --data DIR"
)


def register(app: typer.Typer) -> None:
    app.command("bench", epilog=EXAMPLE)(bench)


def _threads(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in split_list(text) or [])
    except ValueError:
        raise UsageError(f"--threads takes comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise UsageError(f"--threads takes 0 (ONNX Runtime decides) or more, got {text!r}")
    return values


@translate_errors
@grouped(registry=registry_options)
def bench(
    model: Annotated[str, typer.Argument(help=opt.MODEL_HELP)],
    served: Annotated[
        str | None,
        typer.Argument(
            help="A model server URL serving the same model: measured beside MODEL on the "
            "same inputs, with their ratio per configuration."
        ),
    ] = None,
    registry: RegistryOptions = REGISTRY_DEFAULTS,
    batch_sizes: Annotated[str, typer.Option(help="Rows per call to sweep, e.g. 1,8,64,512.")] = (
        "1,64,4096"
    ),
    threads: Annotated[
        str, typer.Option(help="Intra-op thread counts to sweep; 0 = ONNX Runtime decides.")
    ] = "0",
    providers: Annotated[
        str,
        typer.Option(
            help="Providers to sweep: cpu,cuda,tensorrt. One that does not really load is "
            "reported as unavailable."
        ),
    ] = "cpu",
    concurrency: Annotated[
        str, typer.Option(help="Parallel callers on one session to sweep, e.g. 1,2,4.")
    ] = "1",
    rate: Annotated[
        str | None,
        typer.Option(
            help="Open loop: requests per second (comma list to sweep). Latency counts from "
            "each request's intended start, so queueing shows."
        ),
    ] = None,
    arrivals: Annotated[
        Arrivals, typer.Option(help="Open-loop spacing: constant or poisson.")
    ] = Arrivals.constant,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            help="Size of dynamic dimensions: INPUT=DIMS after the batch dimension (e.g. "
            "image=3x224x224) or DIMNAME=N (e.g. seq=128). Repeatable."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Real rows from a Parquet file or directory instead of generated ones."),
    ] = None,
    features: opt.Features = None,
    warmup: Annotated[float, typer.Option(help="Warm-up seconds per configuration.")] = 0.5,
    window: Annotated[float, typer.Option(help="Measurement window, seconds.")] = 1.0,
    max_duration: Annotated[
        float,
        typer.Option(
            help="Most seconds of measurement per configuration; windows repeat until the "
            "last 3 agree within 10% or this runs out."
        ),
    ] = 10.0,
    json_out: Annotated[
        str | None,
        typer.Option("--json", help="Write the report as JSON to this file ('-': stdout)."),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="A previous --json report: exit 8 when slower than it allows."),
    ] = None,
    max_regression: Annotated[
        str, typer.Option(help="Allowed slowdown of rows/s and p99 against --baseline.")
    ] = "10%",
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write charts (needs the plot extra): FILE.html (self-contained), .png or .svg."
        ),
    ] = None,
    require_provider: Annotated[
        bool,
        typer.Option(help="Fail (exit 5) when a provider in --providers does not really load."),
    ] = False,
    pipeline: Annotated[
        str | None,
        typer.Option(
            help="'batch': run streamscore batch on --data and compare its rows/s with bare "
            "session.run on the same rows."
        ),
    ] = None,
    log_format: opt.LogFormat = "auto",
    header: opt.Header = None,
    ca_file: opt.CaFile = None,
    timeout: opt.Timeout = 30.0,
    retries: opt.Retries = 5,
    signature: opt.Signature = None,
) -> None:
    """Measure MODEL's latency and throughput across batch sizes, threads and providers.

    Each configuration warms up, then is measured in windows until stable.

    With SERVED (a model server URL), the served model is measured in the same run on the
    same inputs, and each configuration's remote/embedded ratio is printed.

    Exit codes: 0 ok, 2 bad options, 4 unreadable data or baseline file,
    5 model error or a --require-provider provider that does not really load,
    8 slower than --baseline allows, 10 --json/--plot cannot be written,
    12 model server unavailable or answering out of protocol.
    """
    fmt = console.LogFormat.parse(log_format)
    to_stdout = json_out == "-"
    options = BenchOptions(
        model=model,
        registry=registry,
        batch_sizes=tuple(parse_int_list(batch_sizes, "--batch-sizes")),
        threads=_threads(threads),
        providers=tuple(split_list(providers) or ()),
        concurrency=tuple(parse_int_list(concurrency, "--concurrency")),
        rates=parse_float_list(rate, "--rate") if rate is not None else (),
        arrivals=arrivals,
        shapes=parse_shapes(shape or []),
        data=data,
        features=tuple(split_list(features) or ()) or None,
        warmup_s=warmup,
        window_s=window,
        max_duration_s=max_duration,
        require_provider=require_provider,
        pipeline=pipeline,
        json_path=None if json_out is None or to_stdout else Path(json_out),
        plot_path=plot,
        baseline=baseline,
        max_regression=parse_percent(max_regression),
        served=served,
        remote=RemoteSettings.build(
            header,
            ca_file=ca_file,
            timeout_s=timeout,
            retries=retries,
            concurrency=1,  # bench sets it from --concurrency
            signature=signature,
        ),
    )
    reporter: Reporter = SilentReporter() if to_stdout else console.make_reporter(fmt)
    from streamscore.bench import dumps_report, regression_error, run_bench  # heavy

    report = run_bench(options, reporter)
    # stdout carries the report: JSON with --json -, JSON lines when not a terminal (or with
    # --log-format json), the table on a terminal. Human text goes to stderr otherwise.
    machine = to_stdout or console.machine_readable(fmt)
    shown = json.loads(dumps_report(report))
    if to_stdout:
        console.print_text(dumps_report(report))
    elif machine:
        console.json_line({"event": "summary", **shown})
    table = console.format_bench_pipeline if report.pipeline else console.format_bench_results
    console.print_wide(table(shown), stderr=machine)
    if report.remote_comparison:
        console.print_wide(console.format_bench_remote(shown), stderr=machine)
    if report.comparison is not None:
        console.print_wide(console.format_bench_comparison(shown["comparison"]), stderr=machine)
    for note in console.format_bench_notes(shown):
        console.print_note(note)
    for written in (options.json_path, options.plot_path):
        if written is not None:
            console.print_note(f"wrote {written}")
    error = regression_error(report.comparison) if report.comparison else None
    if error is not None:
        raise error
