"""Produce Parquet rows into a Kafka topic as JSON objects: demo and benchmark input.

Each row becomes one record: the value is the row as a JSON object (timestamps as ISO-8601
UTC strings) and the key is ``key_column`` as text. The record timestamp is the time it is
produced, so ``tail``'s end-to-end latency (output time minus record timestamp) measures the
pipeline; with ``keep_event_time`` it is ``timestamp_column`` instead (the sample's event
times are weeks old, and that age then shows in the latency). Keys are partitioned with
murmur2, as Java clients do.
The topic is created with ``partitions`` partitions and unlimited retention when missing
(the sample's timestamps are weeks old; the default 7-day retention would delete them).

    .venv/bin/python -m streamscore.kafka.loader --bootstrap-servers HOST:PORT \\
        --topic transactions sample_data/transactions          (or: scripts/load-sample-topic)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from streamscore.errors import InputError, StreamscoreError
from streamscore.kafka.client import Admin, KafkaSettings, Producer
from streamscore.sources.parquet import discover_parquet

CHUNK_ROWS = 65536


def _json_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Timestamps as ISO-8601 UTC text with milliseconds; dates as ISO dates."""
    converted = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            column = pl.col(name)
            if dtype.time_zone is not None:
                column = column.dt.convert_time_zone("UTC")
            converted.append(column.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
        elif isinstance(dtype, pl.Date):
            converted.append(pl.col(name).dt.strftime("%Y-%m-%d"))
    return frame.with_columns(converted) if converted else frame


def _millis(frame: pl.DataFrame, column: str | None) -> list[int]:
    if column is None or column not in frame.columns:
        return [0] * frame.height  # 0: the producer stamps the current time
    values = frame[column]
    if isinstance(values.dtype, pl.Datetime):
        values = values.dt.epoch("ms")
    millis: list[int] = values.cast(pl.Int64, strict=False).fill_null(0).to_list()
    return millis


def load_parquet(
    settings: KafkaSettings,
    source: Path,
    topic: str,
    *,
    partitions: int = 3,
    key_column: str | None = "transaction_id",
    timestamp_column: str | None = "event_time",
    keep_event_time: bool = False,
    limit: int | None = None,
) -> int:
    """Produce the rows of the Parquet file(s) under ``source`` into ``topic``; return the count.

    Records are stamped with the time they are produced, or with ``timestamp_column`` when
    ``keep_event_time`` is set.
    """
    stamp_column = timestamp_column if keep_event_time else None
    files = discover_parquet(source)
    if not files:
        raise InputError(f"no .parquet files under {source}")
    with Admin(settings) as admin:
        admin.check_reachable()
        if admin.partition_count(topic) is None:
            # Kept forever: rows keep their (possibly old) timestamps, which the broker's
            # default 7-day retention would otherwise delete within minutes.
            admin.create_topic(topic, partitions, {"retention.ms": "-1"})
    produced = 0
    config = {"partitioner": "murmur2_random", "linger.ms": 50, "compression.type": "lz4"}
    with Producer(settings, config=config) as producer:
        for item in files:
            for chunk in pl.read_parquet(item.path).iter_slices(CHUNK_ROWS):
                if limit is not None:
                    chunk = chunk.head(limit - produced)
                if chunk.height == 0:
                    break
                keys = chunk[key_column].cast(pl.String).to_list() if key_column else None
                stamps = _millis(chunk, stamp_column)
                values = _json_ready(chunk).write_ndjson().encode().split(b"\n")
                for i in range(chunk.height):
                    key = keys[i].encode() if keys and keys[i] is not None else None
                    producer.produce(topic, values[i], key, timestamp=stamps[i])
                produced += chunk.height
            if limit is not None and produced >= limit:
                break
        producer.flush()
    return produced


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m streamscore.kafka.loader --help``."""
    parser = argparse.ArgumentParser(
        prog="load-sample-topic",
        description="Produce Parquet rows (default: the sample transactions) into a Kafka "
        "topic as JSON objects.",
        epilog="Example: scripts/load-sample-topic --bootstrap-servers HOST:PORT (what "
        "scripts/kafka-local start printed) "
        "--topic transactions --partitions 3",
    )
    parser.add_argument("source", nargs="?", default="sample_data/transactions", type=Path)
    parser.add_argument(
        "--bootstrap-servers", "-b", help="HOST:PORT (or STREAMSCORE_BOOTSTRAP_SERVERS)"
    )
    parser.add_argument("--topic", default="transactions")
    parser.add_argument("--partitions", type=int, default=3, help="when creating the topic")
    parser.add_argument("--key-column", default="transaction_id")
    parser.add_argument(
        "--timestamp-column", default="event_time", help="the event time (with --keep-event-time)"
    )
    parser.add_argument(
        "--keep-event-time",
        action="store_true",
        help="stamp records with --timestamp-column instead of the time they are produced "
        "(tail's end-to-end latency then includes the records' age)",
    )
    parser.add_argument("--limit", type=int, default=None, help="produce at most N rows")
    parser.add_argument("-X", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        settings = KafkaSettings.resolve(args.bootstrap_servers, args.overrides)
        count = load_parquet(
            settings,
            args.source,
            args.topic,
            partitions=args.partitions,
            key_column=args.key_column or None,
            timestamp_column=args.timestamp_column or None,
            keep_event_time=args.keep_event_time,
            limit=args.limit,
        )
    except StreamscoreError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    print(f"produced {count:,} records to {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
