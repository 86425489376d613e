"""Remote scoring throughput: streamscore batch and replay through a model server against a
bare client loop on the same server, in the same run, over REST and over gRPC.

One MLServer (tests/support/model_server.py, the sample models; or --server URL and
--grpc-server URL) and, for replay, one local broker (scripts/kafka-local; or --bootstrap).
For each transport (--transports rest,grpc) and each --concurrency:

* (a) bare client - the library streamscore uses for the transport, pre-encoded requests of
                    --batch-size rows sent by ``concurrency`` threads, answers read but not
                    decoded: the most the server gives a client.
                    REST: httpx, one keep-alive pool, POSTs with the headers streamscore sends
                    (``--bare-headers httpx`` sends httpx's defaults instead, which accept
                    gzip: what a hand-written loop usually does).
                    gRPC: grpcio, one channel, ModelInfer with raw tensor contents (the
                    requests streamscore sends);
* (b) batch       - ``streamscore batch`` (Python API) over the same rows in one Parquet file;
* (c) replay      - ``streamscore replay`` (Python API, exactly-once) over the same rows in a
                    topic, into a new output topic each run.

Each figure is the median of --repeat rounds (rows/s, wall clock, model open included for
(b) and (c)); a round runs everything back to back, so a change in the machine's load falls
on all of it. It prints, per transport, the ratios (b)/(a) and (c)/(a) at the best
concurrency of each (target: >= 0.80) and writes them with --json; and gRPC's speed over
REST for (a) and (b). For reference it also times, in the same rounds:

* the bare Kafka exactly-once pipe of benchmarks/replay_throughput.py (consume, produce each
  record unchanged, offsets in the transaction: no model at all), with a transaction per
  second of batches as replay commits by default, and its ratio to each bare client: when it
  is below 0.80, the replay part of the target is bounded by Kafka on this machine, not by
  the model server or the client;
* (b) and (c) with the same model embedded (sample_data/models/NAME, the version the server
  answers).

    .venv/bin/python benchmarks/remote_throughput.py [--rows 100000] [--concurrency 1,2,4]
        [--transports rest,grpc] [--no-replay]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pyarrow.parquet as pq

from streamscore.batch import run_batch
from streamscore.config import (
    DEFAULT_COMMIT_INTERVAL_S,
    BatchOptions,
    KeepColumns,
    ReplayOptions,
    ScoringOptions,
)
from streamscore.kafka.client import KafkaSettings
from streamscore.kafka.loader import load_parquet
from streamscore.mapping import build_feeds, plan_inputs
from streamscore.model.base import close_model, open_model
from streamscore.remote.model import open_remote_model
from streamscore.remote.protocol import encode_request
from streamscore.remote.settings import RemoteSettings
from streamscore.replay import run_replay

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "transactions"
FEATURES = tuple(f"f{i:02d}" for i in range(30))


def sample_table(rows: int) -> Any:
    files = sorted(SAMPLE.rglob("*.parquet"))
    tables = [pq.read_table(f) for f in files]
    import pyarrow as pa

    return pa.concat_tables(tables).slice(0, rows)


def bare_client(
    url: str, table: Any, batch: int, concurrency: int, headers: dict[str, str]
) -> float:
    """(a): pre-encoded requests POSTed by ``concurrency`` threads over one httpx pool."""
    model = open_model(url, remote=RemoteSettings(concurrency=1))
    try:
        signature = model.signature
        plan = plan_inputs(signature, {f.name: f.type for f in table.schema}, FEATURES)
        names = signature.output_names()
        bodies = []
        for chunk in table.to_batches(max_chunksize=batch):
            feeds = build_feeds(plan, chunk)
            bodies.append(encode_request(signature, feeds.arrays, names))
        path = model.url.model_path(model.version or None) + "/infer"
        server = model.url.server
    finally:
        close_model(model)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=server, limits=limits, headers=headers, timeout=60) as client:

        def post(body: bytes) -> int:
            response = client.post(path, content=body)
            response.raise_for_status()
            return len(response.content)

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(post, bodies))
        return table.num_rows / (time.perf_counter() - started)


def bare_grpc_client(url: str, table: Any, batch: int, concurrency: int) -> float:
    """(a) over gRPC: pre-encoded ModelInfer requests sent by ``concurrency`` threads over one
    grpcio channel, with the metadata streamscore sends."""
    model = open_remote_model(url, RemoteSettings(concurrency=1))
    try:
        signature = model.signature
        plan = plan_inputs(signature, {f.name: f.type for f in table.schema}, FEATURES)
        names = signature.output_names()
        bodies = [
            model.encode(names, build_feeds(plan, chunk).arrays)
            for chunk in table.to_batches(max_chunksize=batch)
        ]
        target = model.url.target
    finally:
        close_model(model)
    metadata = RemoteSettings().grpc_metadata()
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target, options=options) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        def call(body: bytes) -> int:
            return len(infer(body, timeout=60, metadata=metadata))

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(call, bodies))
        return table.num_rows / (time.perf_counter() - started)


def kafka_pipe(
    bootstrap: str, topic: str, partitions: int, batch: int, records: int, interval_s: float
) -> float:
    """The bare exactly-once pipe of benchmarks/replay_throughput.py (consume a batch, produce
    each record unchanged, offsets sent in the transaction; no model), with a transaction
    spanning up to ``interval_s`` of batches as ``streamscore replay`` commits by default:
    the most any exactly-once replay gets from this broker and machine."""
    from confluent_kafka import TopicPartition

    from replay_throughput import _consumer, _create_topic, _txn_producer

    run = uuid.uuid4().hex[:8]
    out = f"{topic}.pipe-{run}"
    _create_topic(bootstrap, out, partitions)
    consumer = _consumer(bootstrap, f"pipe-{run}", topic, partitions)
    producer = _txn_producer(bootstrap, f"pipe-{run}")
    metadata = consumer.consumer_group_metadata()
    started = time.perf_counter()
    done, at_end, offsets, opened = 0, set(), {}, None
    while len(at_end) < partitions and done < records:
        messages = consumer.consume(batch, 0.2)
        if messages and opened is None:
            producer.begin_transaction()
            opened = time.perf_counter()
        for m in messages:
            if m.error() is not None:
                at_end.add(m.partition())
                continue
            producer.produce(out, m.value(), m.key(), m.partition(), timestamp=m.timestamp()[1])
            offsets[m.partition()] = m.offset() + 1
            done += 1
        finished = len(at_end) >= partitions or done >= records
        if opened is not None and (finished or time.perf_counter() - opened >= interval_s):
            positions = [TopicPartition(topic, p, o) for p, o in offsets.items()]
            producer.send_offsets_to_transaction(positions, metadata)
            producer.commit_transaction()
            opened = None
    seconds = time.perf_counter() - started
    consumer.close()
    return done / seconds


def scoring(url: str, batch: int, concurrency: int) -> ScoringOptions:
    return ScoringOptions(
        model=url,
        provider="cpu",
        features=FEATURES,
        batch_size=batch,
        keep=KeepColumns.parse("transaction_id"),
        remote=RemoteSettings(concurrency=concurrency),
    )


def streamscore_batch(url: str, source: Path, rows: int, batch: int, concurrency: int) -> float:
    """(b): ``streamscore batch`` over one Parquet file, into a fresh output folder."""
    with tempfile.TemporaryDirectory() as out:
        options = BatchOptions(
            input=source, output=Path(out), scoring=scoring(url, batch, concurrency)
        )
        started = time.perf_counter()
        summary = run_batch(options)
        seconds = time.perf_counter() - started
    assert summary.rows_scored == rows, summary
    return rows / seconds


def streamscore_replay(
    url: str, bootstrap: str, topic: str, rows: int, batch: int, concurrency: int
) -> float:
    """(c): ``streamscore replay`` (exactly-once) into a new output topic."""
    options = ReplayOptions(
        kafka=KafkaSettings(bootstrap),
        input_topic=topic,
        output_topic=f"{topic}.out-{uuid.uuid4().hex[:8]}",
        scoring=scoring(url, batch, concurrency),
    )
    started = time.perf_counter()
    summary = run_replay(options)
    seconds = time.perf_counter() - started
    assert summary.records_scored == rows, summary.as_dict()
    return rows / seconds


def served_version(url: str) -> str:
    model = open_model(url, remote=RemoteSettings(concurrency=1))
    try:
        return model.ref.version
    finally:
        close_model(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="a model server REST base URL instead of MLServer")
    parser.add_argument("--grpc-server", help="its gRPC base URL (grpc://HOST:PORT)")
    parser.add_argument("--model", default="fraud", help="model name on the server")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--transports", default="rest,grpc", help="rest, grpc or both")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; median counts")
    parser.add_argument("--no-replay", action="store_true", help="skip (c) and the broker")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--bare-headers",
        choices=["streamscore", "httpx"],
        default="streamscore",
        help="(a) over REST sends streamscore's request headers (default) or httpx's defaults",
    )
    args = parser.parse_args()
    levels = [int(v) for v in args.concurrency.split(",") if v]
    transports = [t for t in args.transports.split(",") if t]
    if not set(transports) <= {"rest", "grpc"}:
        sys.exit("--transports takes rest, grpc or both")

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from replay_throughput import start_broker, stop_broker
    from support import model_server

    server_home = ROOT / "benchmarks" / ".data" / f"model-server-{os.getpid()}"
    kafka_home = ROOT / "benchmarks" / ".data" / f"kafka-{os.getpid()}"
    base = args.server or model_server.start(server_home)
    grpc_base = args.grpc_server or (None if args.server else model_server.grpc_url(server_home))
    if "grpc" in transports and grpc_base is None:
        sys.exit("--server needs --grpc-server for the grpc transport")
    bootstrap = None
    work = Path(tempfile.mkdtemp(prefix="remote-bench-"))
    partitions = 3
    try:
        urls = {
            "rest": f"{base}/v2/models/{args.model}",
            "grpc": f"{grpc_base}/v2/models/{args.model}",
        }
        table = sample_table(args.rows)
        pq.write_table(table, work / "rows.parquet")
        topic = ""
        if not args.no_replay:
            bootstrap = args.bootstrap or start_broker(kafka_home)
            topic = f"remote-bench-{uuid.uuid4().hex[:8]}"
            load_parquet(
                KafkaSettings(bootstrap), work / "rows.parquet", topic, partitions=partitions
            )
        rows, batch, n = table.num_rows, args.batch_size, args.repeat
        print(
            f"{rows:,} rows, batch {batch}, model {args.model} on {base} and {grpc_base}, "
            f"median of {n} (a shared machine: compare ratios within this run only)"
        )
        headers = (
            RemoteSettings().request_headers()
            if args.bare_headers == "streamscore"
            else {"content-type": "application/json"}
        )
        version = served_version(urls["rest"])
        local = str(ROOT / "sample_data" / "models" / args.model / version)
        bare: dict[str, Callable[[int], float]] = {
            "rest": lambda c: bare_client(urls["rest"], table, batch, c, headers),
            "grpc": lambda c: bare_grpc_client(urls["grpc"], table, batch, c),
        }
        runs: dict[str, dict[str, dict[int, list[float]]]] = {
            t: {"bare": {}, "batch": {}, "replay": {}} for t in transports
        }
        reference_runs: dict[str, list[float]] = {"batch": [], "replay": [], "kafka_pipe": []}

        def measure(transport: str, kind: str, c: int, run: Callable[[], float]) -> None:
            runs[transport][kind].setdefault(c, []).append(run())

        for r in range(n):
            for transport in transports:
                url = urls[transport]
                for c in levels:
                    measure(transport, "bare", c, lambda c=c, t=transport: bare[t](c))
                    measure(
                        transport,
                        "batch",
                        c,
                        lambda c=c, url=url: streamscore_batch(url, work, rows, batch, c),
                    )
                    if bootstrap is not None:
                        measure(
                            transport,
                            "replay",
                            c,
                            lambda c=c, url=url: streamscore_replay(
                                url, bootstrap, topic, rows, batch, c
                            ),
                        )
            reference_runs["batch"].append(streamscore_batch(local, work, rows, batch, 1))
            if bootstrap is not None:
                reference_runs["replay"].append(
                    streamscore_replay(local, bootstrap, topic, rows, batch, 1)
                )
                reference_runs["kafka_pipe"].append(
                    kafka_pipe(bootstrap, topic, partitions, batch, rows, DEFAULT_COMMIT_INTERVAL_S)
                )
            print(f"round {r + 1} of {n} done", flush=True)
        figures = {
            t: {
                kind: {c: statistics.median(values) for c, values in by_level.items()}
                for kind, by_level in kinds.items()
            }
            for t, kinds in runs.items()
        }
        for t in transports:
            for c in levels:
                shown = "  ".join(
                    f"{name} {values[c]:>9,.0f}"
                    for name, values in figures[t].items()
                    if c in values
                )
                print(f"{t:<4} concurrency {c}:  {shown}  rows/s")
        reference = {k: statistics.median(v) for k, v in reference_runs.items() if v}
        shown = "  ".join(f"{name} {value:>9,.0f}" for name, value in reference.items())
        print(f"no server: embedded {args.model}/{version} {shown}  rows/s (reference)")
        ratios: dict[str, dict[str, float]] = {}
        for t in transports:
            best_bare = max(figures[t]["bare"].values())
            ratios[t] = {
                name: max(values.values()) / best_bare
                for name, values in figures[t].items()
                if name != "bare" and values
            }
            if "kafka_pipe" in reference:
                ratios[t]["kafka_pipe"] = reference["kafka_pipe"] / best_bare
            for name, ratio in ratios[t].items():
                target = "(target >= 0.80)" if name != "kafka_pipe" else "(no model: the ceiling)"
                print(
                    f"{t:<4} {name} / bare {t} client at the best concurrency = {ratio:.2f}  "
                    f"{target}"
                )
        if set(transports) == {"rest", "grpc"}:
            for kind in ("bare", "batch"):
                speedup = max(figures["grpc"][kind].values()) / max(figures["rest"][kind].values())
                print(f"grpc / rest, {kind} at the best concurrency = {speedup:.2f}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "rows": rows,
                        "batch_size": batch,
                        "rows_per_s": figures,
                        "reference_rows_per_s": reference,
                        "ratios": ratios,
                        "bare_headers": args.bare_headers,
                        "runs": runs,
                        "reference_runs": reference_runs,
                    },
                    indent=2,
                )
            )
    finally:
        if bootstrap is not None and not args.bootstrap:
            stop_broker(kafka_home)
        if not args.server:
            model_server.stop(server_home)
            shutil.rmtree(server_home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
