"""Replay throughput: `streamscore replay` against a bare Kafka pipe and a per-message loop.

One run against one local broker (started here with scripts/kafka-local in its own
KAFKA_LOCAL_HOME, or an existing one with --bootstrap). The sample transactions are loaded
into a topic as JSON, then, each into its own output topic:

* (a) pipe        - a bare confluent-kafka consume -> produce loop without a model: same
                    records, batch size and one transaction per batch (offsets sent in it);
* (b) replay      - ``streamscore replay`` (Python API, exactly-once, default --keep and
                    --commit-interval: a transaction per second of batches, where the pipe
                    commits one per batch as a hand-written loop does) with the sample model;
* (a') pipe alo   - the same pipe at-least-once: produce a batch, flush, commit offsets;
* (b') replay alo - ``streamscore replay`` at-least-once (``exactly_once=False``);
* (c) per-message - the reference consumer of benchmarks/per_message.py (poll one record,
                    json-parse it, score one row, produce one: the shape of most hand-written
                    Kafka + model code), a transaction every batch-size records, over the
                    first --per-message-records records.

Each variant runs --repeat times, alternating, and the median counts. It prints records/s,
the ratios (b)/(a) (target >= 0.70), (b')/(a') (target >= 0.75) and streamscore's speed-up
over the per-message consumer, (b)/(c).

Then workers (issue 11 §2), on a topic of their own with --worker-partitions partitions (6: an
even split for 1, 2 or 3 workers): ``streamscore replay --workers 1`` against ``--workers 2``
(each a command line run to its end, process start and model load included, exactly-once),
alternating, medians of --repeat, and the ratio (w2)/(w1). On a 2-core machine expect at best
about 2x (the workers share the cores with the broker); ``--only-workers`` skips the rest.

    .venv/bin/python benchmarks/replay_throughput.py [--records 200000] [--repeat 3]
        [--bootstrap HOST:PORT] [--only-workers] [--worker-partitions 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from per_message import replay as per_message_replay
from streamscore.config import KeepColumns, ReplayOptions, ScoringOptions
from streamscore.kafka.client import Admin, KafkaSettings
from streamscore.kafka.loader import load_parquet
from streamscore.replay import run_replay

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "transactions"
KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"


def start_broker(home: Path) -> str:
    env = {**os.environ, "KAFKA_LOCAL_HOME": str(home), "PYTHON": sys.executable}
    done = subprocess.run(
        [str(KAFKA_LOCAL), "start"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"scripts/kafka-local start failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def stop_broker(home: Path) -> None:
    env = {**os.environ, "KAFKA_LOCAL_HOME": str(home)}
    subprocess.run([str(KAFKA_LOCAL), "stop"], env=env, capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)


def _consumer(bootstrap: str, group: str, topic: str, partitions: int) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return consumer


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    with Admin(KafkaSettings(bootstrap)) as admin:
        admin.create_topic(topic, partitions)


def _txn_producer(bootstrap: str, txid: str | None) -> Producer:
    """The settings of streamscore's producer (streamscore.kafka.client.Producer), except
    compression: the pipe copies records as they are, the ceiling for any scorer."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 20,
        "queue.buffering.max.messages": 1_000_000,
    }
    if txid is not None:
        config["transactional.id"] = txid
    producer = Producer(config)
    if txid is not None:
        producer.init_transactions(30)
    return producer


def bare_pipe(
    bootstrap: str, topic: str, partitions: int, batch: int, records: int, eos: bool = True
) -> float:
    """(a): consume a batch, produce each record unchanged, commit offsets in a transaction;
    (a') without transactions: produce the batch, flush, commit the offsets."""
    run = uuid.uuid4().hex[:8]
    out = f"{topic}.pipe-{run}"
    _create_topic(bootstrap, out, partitions)
    consumer = _consumer(bootstrap, f"pipe-{run}", topic, partitions)
    producer = _txn_producer(bootstrap, f"pipe-{run}" if eos else None)
    metadata = consumer.consumer_group_metadata()
    started = time.perf_counter()
    done, at_end = 0, set()
    while len(at_end) < partitions and done < records:
        messages = consumer.consume(batch, 0.2)
        if not messages:
            continue
        if eos:
            producer.begin_transaction()
        offsets: dict[int, int] = {}
        for m in messages:
            if m.error() is not None:
                at_end.add(m.partition())
                continue
            producer.produce(out, m.value(), m.key(), m.partition(), timestamp=m.timestamp()[1])
            offsets[m.partition()] = m.offset() + 1
            done += 1
        positions = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        if eos:
            producer.send_offsets_to_transaction(positions, metadata)
            producer.commit_transaction()
        else:
            producer.flush()
            if positions:
                consumer.commit(offsets=positions, asynchronous=False)
    seconds = time.perf_counter() - started
    consumer.close()
    return done / seconds


def streamscore_replay(
    bootstrap: str,
    topic: str,
    model: str,
    batch: int,
    threads: int | None,
    keep: str | None,
    eos: bool = True,
) -> tuple[float, dict[str, Any]]:
    """(b): the replay through streamscore's Python API, end to end (model load included)."""
    scoring = ScoringOptions(
        model=model,
        batch_size=batch,
        threads=threads,
        provider="cpu",
        keep=KeepColumns.parse(keep),
    )
    options = ReplayOptions(
        kafka=KafkaSettings(bootstrap),
        input_topic=topic,
        output_topic=f"{topic}.replay-{uuid.uuid4().hex[:8]}",
        scoring=scoring,
        exactly_once=eos,
    )
    started = time.perf_counter()
    summary = run_replay(options)
    seconds = time.perf_counter() - started
    return summary.records_read / seconds, summary.as_dict()


def replay_workers(
    bootstrap: str, topic: str, model: str, batch: int, threads: int | None, workers: int
) -> float:
    """(w1)/(w2): ``streamscore replay --workers N`` from the command line, to its end."""
    output = f"{topic}.workers{workers}-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "streamscore", "replay", "-b", bootstrap, "-i", topic,
        "-o", output, "-m", model, "--batch-size", str(batch), "--provider", "cpu",
        "--log-format", "json", "--workers", str(workers), "--member", "bench",
    ]  # fmt: skip
    if threads is not None:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"replay --workers {workers} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.splitlines()[-1])
    print(f"  --workers {workers}: {seconds:.1f}s, {summary['members']}", flush=True)
    return int(summary["records_read"]) / seconds


def compare_workers(args: argparse.Namespace, bootstrap: str) -> dict[str, float]:
    """1 against 2 workers on a topic of their own; prints and returns the medians."""
    topic = f"bench-workers-{uuid.uuid4().hex[:8]}"
    loaded = load_parquet(
        KafkaSettings(bootstrap), SAMPLE, topic, partitions=args.worker_partitions,
        limit=args.records,
    )  # fmt: skip
    print(f"loaded {loaded:,} records into {topic} ({args.worker_partitions} partitions)")

    def run(workers: int) -> Callable[[], float]:
        return lambda: replay_workers(
            bootstrap, topic, args.model, args.batch_size, args.threads, workers
        )

    found = median_runs(
        args.repeat, {"(w1) 1 worker": (run(1), loaded), "(w2) 2 workers": (run(2), loaded)}
    )
    for name, (rate, _cpu) in found.items():
        print(f"{name:<24} {rate:>10,.0f} records/s")
    one, two = found["(w1) 1 worker"][0], found["(w2) 2 workers"][0]
    cores = os.cpu_count()
    print(f"(w2)/(w1) = {two / one:.2f}  (at best ~2 on 2 free cores; this machine: {cores} cores)")
    return {"w1": one, "w2": two, "w2_vs_w1": two / one}


def timed(run: Callable[[], float], records: int) -> tuple[float, float]:
    """One run's rate, and its CPU time (this process) per record in microseconds: on a
    busy machine the CPU figure moves less than the rate."""
    cpu = time.process_time()
    rate = run()
    return rate, (time.process_time() - cpu) / records * 1e6


def median_runs(
    times: int, variants: dict[str, tuple[Callable[[], float], int]]
) -> dict[str, tuple[float, float]]:
    """Each variant ``times`` times, alternating (so load spikes hit all alike); the median
    rate of each, with the CPU per record of that run."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(times):
        for name, (run, records) in variants.items():
            results[name].append(timed(run, records))
    return {name: sorted(found)[len(found) // 2] for name, found in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--per-message-records", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (b)")
    parser.add_argument("--model", default=str(ROOT / "sample_data" / "models" / "fraud"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; median counts")
    parser.add_argument(
        "--also-keep",
        default="",
        type=lambda text: [v for v in text.split(",") if v],
        help="also time (b) with these --keep values (comma-separated; '' for none)",
    )
    parser.add_argument("--worker-partitions", type=int, default=6)
    parser.add_argument("--only-workers", action="store_true", help="time only 1 against 2 workers")
    args = parser.parse_args()

    home = ROOT / "benchmarks" / ".data" / f"kafka-{os.getpid()}"
    bootstrap = args.bootstrap or start_broker(home)
    try:
        workers = compare_workers(args, bootstrap)
        if args.only_workers:
            if args.json:
                args.json.write_text(json.dumps({"repeat": args.repeat, "workers": workers}))
            return
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        settings = KafkaSettings(bootstrap)
        t0 = time.perf_counter()
        loaded = load_parquet(
            settings, SAMPLE, topic, partitions=args.partitions, limit=args.records
        )
        print(f"loaded {loaded:,} records into {topic} in {time.perf_counter() - t0:.1f}s")
        n = args.repeat

        def pipe_run(eos: bool) -> Callable[[], float]:
            return lambda: bare_pipe(
                bootstrap, topic, args.partitions, args.batch_size, loaded, eos
            )

        def replay_run(keep: str | None, eos: bool) -> Callable[[], float]:
            return lambda: streamscore_replay(
                bootstrap, topic, args.model, args.batch_size, args.threads, keep, eos
            )[0]

        def loop_run() -> float:
            count = min(args.per_message_records, loaded)
            return per_message_replay(
                bootstrap, topic, args.partitions, args.model, args.batch_size, count
            )

        count = min(args.per_message_records, loaded)
        variants: dict[str, tuple[Callable[[], float], int]] = {
            "(a)  bare pipe eos": (pipe_run(True), loaded),
            "(b)  streamscore eos": (replay_run(None, True), loaded),
            "(a') bare pipe alo": (pipe_run(False), loaded),
            "(b') streamscore alo": (replay_run(None, False), loaded),
        }
        for keep in args.also_keep:
            variants[f"     eos --keep {keep}"] = (replay_run(keep, True), loaded)
        variants["(c)  per-message"] = (loop_run, count)
        found = median_runs(n, variants)
        for name, (rate, cpu) in found.items():
            print(f"{name:<24} {rate:>10,.0f} records/s  {cpu:5.1f} us CPU/record")
        rate = {name.split()[0]: value[0] for name, value in found.items()}
        replay, pipe, loop = rate["(b)"], rate["(a)"], rate["(c)"]
        alo = rate["(b')"] / rate["(a')"]
        print(f"(b)/(a)   = {replay / pipe:.2f}  (target >= 0.70)")
        print(f"(b')/(a') = {alo:.2f}  (target >= 0.75)")
        print(f"(b)/(c)   = {replay / loop:.1f}  (speed-up over the per-message consumer)")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "records": loaded,
                        "batch_size": args.batch_size,
                        "repeat": n,
                        "median_rps": rate,
                        "replay_vs_pipe": replay / pipe,
                        "replay_vs_pipe_alo": alo,
                        "replay_vs_per_message": replay / loop,
                        "workers": workers,
                    },
                    indent=2,
                )
            )
    finally:
        if not args.bootstrap:
            stop_broker(home)


if __name__ == "__main__":
    main()
