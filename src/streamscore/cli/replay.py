"""``streamscore replay``: rescore a Kafka topic's history into another topic, then stop."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any

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
    DEFAULT_COMMIT_INTERVAL_S,
    MAX_COMMIT_INTERVAL_S,
    RegistryOptions,
    ReplayOptions,
)
from streamscore.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, PartialFailure, UsageError
from streamscore.kafka.settings import KafkaSettings
from streamscore.remote.settings import RemoteSettings
from streamscore.shutdown import interrupt_on_signals
from streamscore.workers import WorkersOutcome, default_prefix, member_names, run_local_workers

EXAMPLE = (
    "Example: streamscore replay --bootstrap-servers HOST:PORT --input-topic "
    "transactions --output-topic transactions.fraud-v2 --model sample_data/models/fraud/2 "
    "(HOST:PORT: what scripts/kafka-local start printed, or set STREAMSCORE_BOOTSTRAP_SERVERS)"
)


def register(app: typer.Typer) -> None:
    app.command("replay", epilog=EXAMPLE)(replay)


def parse_timestamp_ms(text: str) -> int:
    """``--from-timestamp``: epoch milliseconds, or ISO-8601 (UTC unless it names a zone)."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--from-timestamp {text!r} is neither ISO-8601 nor epoch milliseconds",
            hint="e.g. 2026-11-02T00:00:00Z or 1793577600000",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


@translate_errors
@grouped(registry=registry_options, remote=remote_options)
def replay(
    ctx: typer.Context,
    input_topic: Annotated[
        str, typer.Option("--input-topic", "-i", help="Topic to replay; values are JSON objects.")
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
    model: opt.Model,
    registry: RegistryOptions = REGISTRY_DEFAULTS,
    bootstrap_servers: opt.BootstrapServers = None,
    dlq_topic: Annotated[
        str | None,
        typer.Option(help="Dead-letter topic for records that cannot be scored (default OUT.dlq)."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="Consumer group (and transactional id) holding the replay's progress "
            "(default streamscore-replay.IN.OUT)."
        ),
    ] = None,
    from_timestamp: Annotated[
        str | None,
        typer.Option(
            help="Start at the first record at or after this time: ISO-8601 or epoch ms "
            "(default: each partition's beginning)."
        ),
    ] = None,
    at_least_once: Annotated[
        bool,
        typer.Option(
            "--at-least-once",
            help="No transactions: faster, but records of a batch in flight at a crash are "
            "written again on resume.",
        ),
    ] = False,
    features: opt.Features = None,
    outputs: opt.Outputs = None,
    keep: opt.Keep = None,
    batch_size: Annotated[
        int, typer.Option(help="Records per micro-batch, model call and transaction.")
    ] = 4096,
    threads: opt.Threads = None,
    provider: opt.Provider = "auto",
    reject_nan: opt.RejectNan = False,
    max_record_bytes: Annotated[
        int, typer.Option(help="Larger values go to the dead-letter topic undecoded.")
    ] = 1_000_000,
    allow_nonempty_output: Annotated[
        bool,
        typer.Option(help="Start a fresh replay even though OUT already holds records."),
    ] = False,
    commit_interval: Annotated[
        float,
        typer.Option(
            help="Exactly-once: one transaction holds the batches of up to this many seconds "
            "(0: one per batch). Longer means fewer commits; outputs become visible and a "
            "crash repeats work in steps of it. Workers (--member, --workers) commit every "
            "batch.",
            min=0.0,
            max=MAX_COMMIT_INTERVAL_S,
        ),
    ] = DEFAULT_COMMIT_INTERVAL_S,
    max_dead_letter_ratio: Annotated[
        float | None,
        typer.Option(
            help="Exit 3 when more than this share (0 to 1) of the records read went to the "
            "dead-letter topic. Without it, exit 3 only when none was scored.",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    kafka_property: opt.KafkaProperties = None,
    config: opt.KafkaConfigFile = None,
    connect_timeout: opt.ConnectTimeout = 10.0,
    log_format: opt.LogFormat = "auto",
    remote: RemoteSettings = REMOTE_DEFAULTS,
    member: Annotated[
        str | None,
        typer.Option(
            help="Run as worker NAME of a replay shared by several processes: each runs the "
            "same command with the same --group and its own --member (on one machine or "
            "many), the group shares IN's partitions among them. A restarted worker takes "
            "its place back; each stops (exit 0) once the whole replay is complete.",
            metavar="NAME",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Start N local worker processes of this replay (named MEMBER-0 … MEMBER-(N-1); "
            "MEMBER defaults to the host name) and wait for them; exits with the worst "
            "worker's code.",
            min=1,
            metavar="N",
        ),
    ] = None,
) -> None:
    """Score every record of a topic, up to its end offsets at start, into another topic.

    Exactly once: outputs, dead letters and progress commit together, in one transaction
    per --commit-interval.

    After a crash or Ctrl-C, rerun the same command: it resumes and stops at the same ends.

    Several processes (--member NAME on each, or --workers N here) share the work through
    the consumer group, still exactly once.

    Exit: 0 done, 2 usage, 3 every record (or more than --max-dead-letter-ratio) was
    dead-lettered, 4 records do not fit the model, 5 model, 6 Kafka, 12 model server, 13 a
    worker of --workers was killed, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
    """
    fmt = console.LogFormat.parse(log_format)
    settings = KafkaSettings.resolve(
        bootstrap_servers,
        kafka_property or [],
        config,
        connect_timeout_s=connect_timeout,
    )
    options = ReplayOptions(
        kafka=settings,
        input_topic=input_topic,
        output_topic=output_topic,
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
        dlq_topic=dlq_topic,
        group=group,
        from_timestamp_ms=parse_timestamp_ms(from_timestamp) if from_timestamp else None,
        exactly_once=not at_least_once,
        max_record_bytes=max_record_bytes,
        allow_nonempty_output=allow_nonempty_output,
        member=member if workers is None else member_names(member or default_prefix(), 1)[0],
        commit_interval_s=commit_interval,
    )
    if workers is not None:
        run_workers(ctx, options, workers, member or default_prefix(), fmt)
        return
    from streamscore.replay import run_replay  # heavy: loaded only when run

    # SIGTERM stops a replay as Ctrl-C does: every committed batch stays, a rerun resumes.
    with interrupt_on_signals():
        summary = run_replay(options, console.make_reporter(fmt))
    console.print_summary(summary.as_dict(), title="streamscore replay", log_format=fmt)
    failure = too_many_dead_letters(
        summary.records_read, summary.records_dead_lettered, max_dead_letter_ratio
    )
    if failure is not None:
        raise failure


def too_many_dead_letters(read: int, dead: int, max_ratio: float | None) -> PartialFailure | None:
    """Exit 3 for a run that scored nothing, or dead-lettered more than ``max_ratio``."""
    if read == 0:
        return None
    if dead >= read:
        message = f"all {read} records read went to the dead-letter topic; none was scored"
    elif max_ratio is not None and dead / read > max_ratio:
        message = (
            f"{dead} of {read} records read ({dead / read:.1%}) went to the dead-letter topic, "
            f"more than --max-dead-letter-ratio {max_ratio:g}"
        )
    else:
        return None
    return PartialFailure(message, hint="see streamscore.error.type in the dead letters")


def run_workers(
    ctx: typer.Context,
    options: ReplayOptions,
    count: int,
    prefix: str,
    log_format: console.LogFormat,
) -> None:
    """``--workers N``: the same command in N child processes, one worker each; their JSON
    lines relayed (their summaries as ``worker_summary``), then one summary of them all."""
    arguments = child_arguments(ctx, {"workers", "member", "log_format"})
    as_json = console.machine_readable(log_format)

    def on_event(member: str, payload: Mapping[str, Any]) -> None:
        if payload.get("event") == "summary":
            payload = {**payload, "event": "worker_summary"}
        if as_json:
            console.json_line(payload)
        elif line := console.format_event(payload):
            console.print_note(f"[{member}] {line}")

    outcome = run_local_workers(
        arguments,
        member_names(prefix, count),
        on_event=on_event,
        on_error_line=lambda member, line: console.print_note(f"[{member}] {line}"),
    )
    console.print_summary(
        workers_summary(options, outcome),
        title="streamscore replay --workers",
        log_format=log_format,
    )
    failed = outcome.first_failure()
    if failed is None:
        return
    code = outcome.exit_code
    if failed.exit_code < 0:
        try:
            name = signal.Signals(-failed.exit_code).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-failed.exit_code}"
        console.print_error(f"worker '{failed.member}' was killed by {name} (rerun to resume)")
    elif code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        console.print_error("terminated" if code == EXIT_TERMINATED else "interrupted")
    else:
        console.print_error(
            f"worker '{failed.member}' failed: {failed.last_error or f'exit {code}'}"
        )
    raise typer.Exit(code)


def workers_summary(options: ReplayOptions, outcome: WorkersOutcome) -> dict[str, Any]:
    """What the workers did together, and each one."""
    totals = dict.fromkeys(("records_read", "records_scored", "records_dead_lettered"), 0)
    each: dict[str, str] = {}
    for worker in outcome.workers:
        found = worker.summary
        for key in totals:
            totals[key] += int(found.get(key, 0))
        partitions = ",".join(str(p) for p in found.get("partitions_read", [])) or "none"
        each[worker.member] = (
            f"exit {worker.exit_code}, {int(found.get('records_read', 0))} read "
            f"(partitions {partitions})"
        )
    return {
        "input_topic": options.input_topic,
        "output_topic": options.output_topic,
        "group": options.group_id,
        "workers": len(outcome.workers),
        **totals,
        "complete": bool(outcome.workers)
        and all(w.summary.get("complete") for w in outcome.workers),
        "members": each,
    }


def child_arguments(ctx: typer.Context, drop: set[str]) -> list[str]:
    """The options given on this command line, as arguments again (minus ``drop``): what each
    worker of ``--workers`` runs. Options from the environment reach the children anyway."""
    arguments: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if param.param_type_name != "option" or name is None or name in drop:
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[name]
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            if value:
                arguments.append(flag)
            elif param.secondary_opts:
                arguments.append(param.secondary_opts[0])
            continue
        for item in value if getattr(param, "multiple", False) else [value]:
            arguments += [flag, str(item)]
    return arguments
