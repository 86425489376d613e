"""Tail latency: end-to-end latency and throughput of ``streamscore tail`` vs a per-message loop.

One run against one local broker (started here with scripts/kafka-local in its own
KAFKA_LOCAL_HOME, or an existing one with --bootstrap). For each scorer, each in its
own process, reading its own 3-partition input topic:

* tail         - ``streamscore tail`` with its defaults (at-least-once, --max-wait 2 ms,
                 --max-batch 1000);
* per-message  - poll one record, parse it, score one row, produce one (auto-commit), the
                 shape of most published examples;
* pipe         - no scorer: the reader reads the input topic itself. Its latency is the
                 floor the broker and clients set on this machine.

The broker is first run at 5k msg/s for 20 s (a fresh JVM is slow until its JIT warms up).

A producer (this process) sends sample transactions as JSON at fixed rates (1k and 5k msg/s
by default, --seconds each), then a backlog as fast as it can. A consumer (another process)
reads the outputs as they become available. End-to-end latency = time the output is read
minus the input's produce timestamp (outputs keep it). Max throughput: the scorer is paused
(SIGSTOP) while --backlog records are produced, then resumed; throughput = backlog records /
(last output read - resume time). Target: tail p99 < 50 ms at 5k msg/s.

    .venv/bin/python benchmarks/tail_latency.py [--seconds 10] [--rates 1000,5000]
        [--backlog 50000] [--bootstrap HOST:PORT] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DAY = ROOT / "sample_data" / "transactions" / "date=2026-11-04" / "part-0.parquet"
MODEL = ROOT / "sample_data" / "models" / "fraud"
KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"
PER_MESSAGE = Path(__file__).resolve().parent / "per_message.py"  # the reference consumer
PARTITIONS = 3
WARMUP_RATE, WARMUP_S = 2000, 3.0
BROKER_WARMUP_RATE, BROKER_WARMUP_S = 5000, 20.0
SETTLE_TIMEOUT_S = 120


# --- broker and topics ----------------------------------------------------------------------------


def kafka_local(command: str, home: Path) -> str:
    env = {**os.environ, "KAFKA_LOCAL_HOME": str(home), "PYTHON": sys.executable}
    done = subprocess.run(
        [str(KAFKA_LOCAL), command], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 and command == "start":
        sys.exit(f"scripts/kafka-local start failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def create_topics(bootstrap: str, *topics: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    for future in futures.values():
        future.result(timeout=30)


def warm_broker(bootstrap: str, values: list[bytes]) -> None:
    """Run the broker at the benchmark's load for a while first: a fresh broker's JVM is
    slow until its JIT has compiled the produce and fetch paths (the first scorer measured
    would pay for it alone). A paced load, not a burst: writing back a burst of hundreds of
    MB from the page cache stalls the broker on a small VM."""
    topic = f"bench-warmup-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, topic)
    stop = threading.Event()

    def drain() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic})
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        while not stop.is_set():
            consumer.consume(10000, 0.1)
        consumer.close()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    send_at_rate(producer, topic, values, "warmup", BROKER_WARMUP_RATE, BROKER_WARMUP_S)
    stop.set()
    reader.join(timeout=30)


def sample_values(count: int) -> list[bytes]:
    columns = ["transaction_id", *(f"f{i:02d}" for i in range(30)), "merchant_category"]
    frame = pl.read_parquet(SAMPLE_DAY, columns=columns).head(count)
    return frame.write_ndjson().encode().splitlines()


# --- the output reader (its own process, so it never waits on the producer's GIL) -----------------


def read_outputs(
    bootstrap: str, topic: str, ready: Any, stop: Any, count: Any, results: Any
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"latency-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    consumer.consume(1, 0.5)  # connect and fetch metadata before any output exists
    ready.set()
    latencies: dict[str, list[float]] = {}
    last_read: dict[str, float] = {}
    while not stop.is_set():
        # consume(n, timeout) waits for n records or the timeout: take one, then what is there
        messages = consumer.consume(1, 0.05)
        if messages:
            messages += consumer.consume(10000, 0)
        for message in messages:
            now = time.time()
            if message.error() is not None:
                continue
            tag = message.key().split(b"-", 1)[0].decode()
            latencies.setdefault(tag, []).append(now - message.timestamp()[1] / 1000)
            last_read[tag] = now
            count.value += 1
    consumer.close()
    results.put({tag: (values, last_read[tag]) for tag, values in latencies.items()})


# --- one scorer, all phases ------------------------------------------------------------------


def start_scorer(kind: str, bootstrap: str, source: str, out: str) -> subprocess.Popen[str]:
    if kind == "tail":
        command = [
            sys.executable, "-m", "streamscore", "tail", "-b", bootstrap, "-i", source,
            "-o", out, "-g", f"bench-{uuid.uuid4().hex[:8]}", "-m", str(MODEL),
            "--threads", "1", "--provider", "cpu",
            "--log-format", "json", "--status-interval", "3600",
        ]  # fmt: skip
    else:
        command = [sys.executable, str(PER_MESSAGE), "serve", bootstrap, source, out]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:  # wait until the group gave it the partitions
        if '"assigned"' in line or line.startswith("assigned"):
            break
        if time.monotonic() > deadline:
            break
    threading.Thread(target=lambda: process.stdout and process.stdout.read(), daemon=True).start()
    return process


def send_at_rate(
    producer: Producer, topic: str, values: list[bytes], tag: str, rate: float, seconds: float
) -> int:
    """Produce ``rate`` records a second for ``seconds`` (rate 0: as fast as possible)."""
    total = int(rate * seconds) if rate else len(values)
    started = time.perf_counter()
    sent = 0
    while sent < total:
        due = total if not rate else min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            try:
                producer.produce(topic, values[sent % len(values)], f"{tag}-{sent}".encode())
                sent += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        if rate:
            time.sleep(0.002)  # bursts every ~2 ms: a finer pace costs the machine more CPU
    producer.flush(60)
    return total


def measure(
    kind: str, bootstrap: str, args: argparse.Namespace, values: list[bytes]
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    source, out = f"bench-{kind}-{run}", f"bench-{kind}-{run}.out"
    create_topics(bootstrap, source, out)
    scorer = None
    if kind == "pipe":  # no scorer: the reader reads the input itself (the floor)
        out = source
    else:
        scorer = start_scorer(kind, bootstrap, source, out)
    context = mp.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    count = context.Value("q", 0)
    reader = context.Process(
        target=read_outputs, args=(bootstrap, out, ready, stop, count, results)
    )
    reader.start()
    ready.wait(60)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    expected: dict[str, int] = {}
    expected["warmup"] = send_at_rate(producer, source, values, "warmup", WARMUP_RATE, WARMUP_S)
    for rate in args.rates:
        tag = f"rate{rate}"
        expected[tag] = send_at_rate(producer, source, values, tag, rate, args.seconds)
    # Max throughput: the scorer is frozen (SIGSTOP) while the backlog is produced, then
    # drains it with the whole machine to itself.
    if scorer is not None:
        scorer.send_signal(signal.SIGSTOP)
    else:
        backlog_started = time.time()
    expected["max"] = send_at_rate(producer, source, values[: args.backlog], "max", 0, 0)
    if scorer is not None:
        backlog_started = time.time()
        scorer.send_signal(signal.SIGCONT)
    # Wait until every record is scored, or the outputs stopped growing.
    total, seen, since = sum(expected.values()), -1, time.monotonic()
    while count.value < total and time.monotonic() - since < 10:
        if count.value != seen:
            seen, since = count.value, time.monotonic()
        time.sleep(0.1)
    if scorer is not None:
        scorer.send_signal(signal.SIGTERM)
        try:
            scorer.wait(timeout=SETTLE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            scorer.kill()
    time.sleep(1)
    stop.set()
    found: dict[str, tuple[list[float], float]] = results.get(timeout=60)
    reader.join(timeout=30)
    report: dict[str, Any] = {"scorer": kind}
    for tag, count in expected.items():
        latencies, last_read = found.get(tag, ([], 0.0))
        ms = np.asarray(latencies) * 1000
        entry: dict[str, Any] = {"sent": count, "received": len(latencies)}
        if len(ms):
            entry.update(p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)))
            entry["max_ms"] = float(ms.max())
        if tag == "max" and len(latencies):
            entry["records_per_s"] = len(latencies) / max(last_read - backlog_started, 1e-9)
        report[tag] = entry
    return report


def print_table(reports: Sequence[dict[str, Any]], rates: Sequence[int]) -> None:
    print(f"{'scorer':<12} {'load':<12} {'sent':>7} {'recv':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'msg/s':>9}")  # fmt: skip
    for report in reports:
        for tag in [f"rate{r}" for r in rates] + ["max"]:
            e = report[tag]
            load = f"{tag[4:]}/s" if tag != "max" else "max"
            throughput = f"{e['records_per_s']:9,.0f}" if "records_per_s" in e else f"{'':>9}"
            print(
                f"{report['scorer']:<12} {load:<12} {e['sent']:>7} {e['received']:>7} "
                f"{e.get('p50_ms', float('nan')):8.1f} {e.get('p99_ms', float('nan')):8.1f} "
                f"{e.get('max_ms', float('nan')):8.1f} {throughput}"
            )


def print_speed_up(reports: Sequence[dict[str, Any]], rates: Sequence[int]) -> None:
    """streamscore tail against the per-message reference consumer (benchmarks/per_message.py),
    and beside the floor the broker sets (pipe), when they ran."""
    by_kind = {report["scorer"]: report for report in reports}
    tail, loop, pipe = by_kind.get("tail"), by_kind.get("per-message"), by_kind.get("pipe")
    if tail is None:
        return
    if loop is not None and tail["max"].get("records_per_s") and loop["max"].get("records_per_s"):
        ratio = tail["max"]["records_per_s"] / loop["max"]["records_per_s"]
        print(f"tail drains {ratio:.1f}x as fast as the per-message consumer")
    for rate in rates:
        tag, parts = f"rate{rate}", []
        for name, report in (("tail", tail), ("per-message", loop), ("broker floor", pipe)):
            if report is not None and "p50_ms" in report[tag]:
                entry = report[tag]
                parts.append(f"{name} {entry['p50_ms']:.1f}/{entry['p99_ms']:.1f}")
        print(f"p50/p99 ms at {rate}/s: " + ", ".join(parts))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per fixed-rate phase")
    parser.add_argument(
        "--rates", type=lambda s: [int(r) for r in s.split(",")], default=[1000, 5000]
    )
    parser.add_argument("--backlog", type=int, default=50_000, help="records of the max phase")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument(
        "--scorers", default="pipe,tail,per-message", help="pipe: no scorer, the floor"
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    values = sample_values(max(args.backlog, 50_000))
    home = None if args.bootstrap else Path(tempfile.mkdtemp(prefix="tail-latency-kafka-"))
    bootstrap = args.bootstrap if home is None else kafka_local("start", home)
    try:
        warm_broker(bootstrap, values)
        reports = [measure(kind, bootstrap, args, values) for kind in args.scorers.split(",")]
    finally:
        if home is not None:
            kafka_local("stop", home)
            shutil.rmtree(home, ignore_errors=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average at the end {load} (other processes skew latency on a small machine)")
    print(f"tail latency, {os.cpu_count()} CPUs, model {MODEL.relative_to(ROOT)} (highest "
          f"version), {PARTITIONS} partitions, {args.seconds:g} s per rate")  # fmt: skip
    print_table(reports, args.rates)
    print_speed_up(reports, args.rates)
    if args.json:
        print(json.dumps(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
