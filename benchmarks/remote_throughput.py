"""Remote scoring throughput: streamscore batch and replay through a model server against a
bare client loop on the same server, in the same run.

One MLServer (tests/support/model_server.py, the sample models; or --server URL) and, for
replay, one local broker (scripts/kafka-local; or --bootstrap). For each --concurrency:

* (a) bare client - httpx (the library streamscore uses), one keep-alive pool, ``concurrency``
                    threads POSTing pre-encoded requests of --batch-size rows with the headers
                    streamscore sends, bodies read but not decoded: the most the server gives
                    a client (``--bare-headers httpx`` sends httpx's defaults instead, which
                    accept gzip: what a hand-written loop usually does);
* (b) batch       - ``streamscore batch`` (Python API) over the same rows in one Parquet file;
* (c) replay      - ``streamscore replay`` (Python API, exactly-once) over the same rows in a
                    topic, into a new output topic each run.

Each figure is the median of --repeat rounds (rows/s, wall clock, model open included for
(b) and (c)); a round runs (a), (b) and (c) back to back at every concurrency, so a change in
the machine's load falls on all of them. It prints the ratios (b)/(a) and (c)/(a) at the
best concurrency of each (target: >= 0.80) and writes them with --json. For reference it also
times (b) and (c) with the same model embedded (sample_data/models/NAME, the version the
server answers), which shows what the Kafka side of (c) costs on this machine.

    .venv/bin/python benchmarks/remote_throughput.py [--rows 100000] [--concurrency 1,2,4]
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

import httpx
import pyarrow.parquet as pq

from streamscore.batch import run_batch
from streamscore.config import BatchOptions, KeepColumns, ReplayOptions, ScoringOptions
from streamscore.kafka.client import KafkaSettings
from streamscore.kafka.loader import load_parquet
from streamscore.mapping import build_feeds, plan_inputs
from streamscore.model.base import close_model, open_model
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
    parser.add_argument("--server", help="a model server base URL instead of starting MLServer")
    parser.add_argument("--model", default="fraud", help="model name on the server")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; median counts")
    parser.add_argument("--no-replay", action="store_true", help="skip (c) and the broker")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--bare-headers",
        choices=["streamscore", "httpx"],
        default="streamscore",
        help="(a) sends streamscore's request headers (default) or httpx's defaults",
    )
    args = parser.parse_args()
    levels = [int(v) for v in args.concurrency.split(",") if v]

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from replay_throughput import start_broker, stop_broker
    from support import model_server

    server_home = ROOT / "benchmarks" / ".data" / f"model-server-{os.getpid()}"
    kafka_home = ROOT / "benchmarks" / ".data" / f"kafka-{os.getpid()}"
    base = args.server or model_server.start(server_home)
    bootstrap = None
    work = Path(tempfile.mkdtemp(prefix="remote-bench-"))
    try:
        url = f"{base}/v2/models/{args.model}"
        table = sample_table(args.rows)
        pq.write_table(table, work / "rows.parquet")
        topic = ""
        if not args.no_replay:
            bootstrap = args.bootstrap or start_broker(kafka_home)
            topic = f"remote-bench-{uuid.uuid4().hex[:8]}"
            load_parquet(KafkaSettings(bootstrap), work / "rows.parquet", topic, partitions=3)
        rows, batch, n = table.num_rows, args.batch_size, args.repeat
        print(f"{rows:,} rows, batch {batch}, model {url}, median of {n} (a shared machine)")
        headers = (
            RemoteSettings().request_headers()
            if args.bare_headers == "streamscore"
            else {"content-type": "application/json"}
        )
        version = served_version(url)
        local = str(ROOT / "sample_data" / "models" / args.model / version)
        runs: dict[str, dict[int, list[float]]] = {"bare": {}, "batch": {}, "replay": {}}
        embedded_runs: dict[str, list[float]] = {"batch": [], "replay": []}

        def measure(kind: str, c: int, run: Callable[[], float]) -> None:
            runs[kind].setdefault(c, []).append(run())

        for r in range(n):
            for c in levels:
                measure("bare", c, lambda c=c: bare_client(url, table, batch, c, headers))
                measure("batch", c, lambda c=c: streamscore_batch(url, work, rows, batch, c))
                if bootstrap is not None:
                    measure(
                        "replay",
                        c,
                        lambda c=c: streamscore_replay(url, bootstrap, topic, rows, batch, c),
                    )
            embedded_runs["batch"].append(streamscore_batch(local, work, rows, batch, 1))
            if bootstrap is not None:
                embedded_runs["replay"].append(
                    streamscore_replay(local, bootstrap, topic, rows, batch, 1)
                )
            print(f"round {r + 1} of {n} done", flush=True)
        figures = {
            kind: {c: statistics.median(values) for c, values in by_level.items()}
            for kind, by_level in runs.items()
        }
        for c in levels:
            shown = "  ".join(
                f"{name} {values[c]:>9,.0f}" for name, values in figures.items() if c in values
            )
            print(f"concurrency {c}:  {shown}  rows/s")
        embedded = {k: statistics.median(v) for k, v in embedded_runs.items() if v}
        shown = "  ".join(f"{name} {value:>9,.0f}" for name, value in embedded.items())
        print(f"embedded {args.model}/{version}: {shown}  rows/s (reference)")
        best_bare = max(figures["bare"].values())
        ratios = {
            name: max(values.values()) / best_bare
            for name, values in figures.items()
            if name != "bare" and values
        }
        for name, ratio in ratios.items():
            print(f"{name} / bare client at the best concurrency = {ratio:.2f}  (target >= 0.80)")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "rows": rows,
                        "batch_size": batch,
                        "rows_per_s": figures,
                        "embedded_rows_per_s": embedded,
                        "ratios": ratios,
                        "bare_headers": args.bare_headers,
                        "runs": runs,
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
