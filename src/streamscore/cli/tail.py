"""``streamscore tail``: score a live Kafka topic in a consumer group until stopped."""

from __future__ import annotations

import threading
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
from streamscore.config import RegistryOptions, TailOptions
from streamscore.kafka.settings import KafkaSettings
from streamscore.remote.settings import RemoteSettings
from streamscore.shutdown import stop_on_signals

EXAMPLE = (
    "Example: streamscore tail --bootstrap-servers HOST:PORT --input-topic transactions "
    "--output-topic transactions.scored --group fraud-scorer --model sample_data/models/fraud "
    "--metrics-port 9108 (HOST:PORT: what scripts/kafka-local start printed, or set "
    "STREAMSCORE_BOOTSTRAP_SERVERS)"
)


def register(app: typer.Typer) -> None:
    app.command("tail", epilog=EXAMPLE)(tail)


@translate_errors
@grouped(registry=registry_options, remote=remote_options)
def tail(
    input_topic: Annotated[
        str, typer.Option("--input-topic", "-i", help="Topic to score; values are JSON objects.")
    ],
    output_topic: Annotated[
        str,
        typer.Option(
            "--output-topic",
            "-o",
            help="Topic for the scored records; created with the input's partition count "
            "when missing.",
        ),
    ],
    group: Annotated[
        str,
        typer.Option(
            "--group", "-g", help="Consumer group: processes with the same group share the work."
        ),
    ],
    model: opt.Model,
    registry: RegistryOptions = REGISTRY_DEFAULTS,
    bootstrap_servers: opt.BootstrapServers = None,
    dlq_topic: Annotated[
        str | None,
        typer.Option(help="Dead-letter topic for records that cannot be scored (default OUT.dlq)."),
    ] = None,
    exactly_once: Annotated[
        bool,
        typer.Option(
            "--exactly-once",
            help="One transaction per batch: outputs and offsets commit together (slower). "
            "Default: at-least-once (outputs acknowledged, then offsets committed).",
        ),
    ] = False,
    max_batch: Annotated[int, typer.Option(help="A batch closes at this many records.")] = 1000,
    max_wait: Annotated[
        int, typer.Option(help="...or this many milliseconds after its first record.")
    ] = 2,
    start_from: Annotated[
        str,
        typer.Option(help="Where a group without committed offsets starts: latest or earliest."),
    ] = "latest",
    reload_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between looks for a new model version (when MODEL is REPO/NAME, a "
            "registry alias, or a model URL without a version)."
        ),
    ] = 30.0,
    canary: Annotated[
        str | None,
        typer.Option(
            help="VERSION:PERCENT: that share of records, chosen by a stable hash of the "
            "key, is scored by VERSION (a version of MODEL's repository, registered model or "
            "server, or a model path or URL).",
        ),
    ] = None,
    shadow: Annotated[
        str | None,
        typer.Option(
            help="VERSION that also scores every record, into --shadow-topic; agreement "
            "with the primary goes to the metrics.",
        ),
    ] = None,
    shadow_topic: Annotated[
        str | None, typer.Option(help="Topic for shadow scores (default OUT.shadow).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT (0 picks a free port)."),
    ] = None,
    status_interval: Annotated[
        float | None,
        typer.Option(help="Seconds between status updates (default 1 on a terminal, else 10)."),
    ] = None,
    shutdown_timeout: Annotated[
        float,
        typer.Option(help="After a stop signal, seconds to finish and commit before exiting."),
    ] = 30.0,
    features: opt.Features = None,
    outputs: opt.Outputs = None,
    keep: opt.Keep = None,
    threads: opt.Threads = None,
    provider: opt.Provider = "auto",
    reject_nan: opt.RejectNan = False,
    max_record_bytes: Annotated[
        int, typer.Option(help="Larger values go to the dead-letter topic undecoded.")
    ] = 1_000_000,
    kafka_property: opt.KafkaProperties = None,
    config: opt.KafkaConfigFile = None,
    connect_timeout: opt.ConnectTimeout = 10.0,
    log_format: opt.LogFormat = "auto",
    remote: RemoteSettings = REMOTE_DEFAULTS,
) -> None:
    """Score a live topic with MODEL until stopped; run more processes to share the work.

    A new version in MODEL's repository (REPO/NAME), behind a registry alias, or answering a
    model URL without a version is checked and switched in without a restart. Ctrl-C or
    SIGTERM finishes the batch in flight, commits and exits 0; a second one exits at once.

    Exit: 0 stopped, 2 usage, 4 records do not fit the model, 5 model, 6 Kafka, 12 model
    server, 130/143 a second Ctrl-C/SIGTERM (or the shutdown timeout) ended it
    at once.
    """
    fmt = console.LogFormat.parse(log_format)
    from streamscore.routing import CanarySpec  # heavy (pyarrow): loaded only when run
    from streamscore.tail import run_tail

    settings = KafkaSettings.resolve(
        bootstrap_servers, kafka_property or [], config, connect_timeout_s=connect_timeout
    )
    live = not console.machine_readable(fmt)
    options = TailOptions(
        kafka=settings,
        input_topic=input_topic,
        output_topic=output_topic,
        group=group,
        scoring=scoring_options(
            model=model,
            features=features,
            outputs=outputs,
            keep=keep,
            provider=provider,
            threads=threads,
            batch_size=max_batch,
            reject_nan=reject_nan,
            remote=remote,
            registry=registry,
        ),
        dlq_topic=dlq_topic,
        exactly_once=exactly_once,
        max_batch=max_batch,
        max_wait_ms=max_wait,
        start_from=start_from,
        reload_interval_s=reload_interval,
        canary=CanarySpec.parse(canary) if canary else None,
        shadow=shadow,
        shadow_topic=shadow_topic,
        metrics_port=metrics_port,
        status_interval_s=status_interval or (1.0 if live else 10.0),
        shutdown_timeout_s=shutdown_timeout,
        max_record_bytes=max_record_bytes,
    )
    stop = threading.Event()
    with stop_on_signals(stop, grace_s=options.shutdown_timeout_s):
        summary = run_tail(options, console.make_status_reporter(fmt), stop=stop)
    console.print_summary(summary.as_dict(), title="streamscore tail", log_format=fmt)
