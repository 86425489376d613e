"""Replay throughput: `streamscore replay` against a bare Kafka pipe and a per-message loop.

One run against one local broker (started here with scripts/kafka-local in its own
KAFKA_LOCAL_HOME, or an existing one with --bootstrap). The sample transactions are loaded
into a topic as JSON, then, each into its own output topic:

* (a) pipe        - a bare confluent-kafka consume -> produce loop without a model: same
                    records, batch size and one transaction per batch (offsets sent in it);
* (b) replay      - ``streamscore replay`` (Python API, exactly-once) with the sample model;
* (c) per-message - poll one record, json-parse it, score one row, produce one, the shape of
                    most published examples (a transaction every batch-size records), over
                    the first --per-message-records records.

It prints records/s and the ratios (b)/(a) (target >= 0.70) and (b)/(c) (target >= 5).

    .venv/bin/python benchmarks/replay_throughput.py [--records 200000] [--bootstrap HOST:PORT]
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

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from streamscore.config import KeepColumns, ReplayOptions, ScoringOptions
from streamscore.kafka.client import Admin, KafkaSettings
from streamscore.kafka.loader import load_parquet
from streamscore.model import resolve_model
from streamscore.model.session import load_model
from streamscore.replay import run_replay

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "transactions"
KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"
FEATURES = [f"f{i:02d}" for i in range(30)]


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


def _txn_producer(bootstrap: str, txid: str) -> Producer:
    # The settings streamscore's producer uses (streamscore.kafka.client.Producer).
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": txid,
            "enable.idempotence": True,
            "linger.ms": 20,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    producer.init_transactions(30)
    return producer


def bare_pipe(bootstrap: str, topic: str, partitions: int, batch: int, records: int) -> float:
    """(a): consume a batch, produce each record unchanged, commit offsets in a transaction."""
    run = uuid.uuid4().hex[:8]
    out = f"{topic}.pipe-{run}"
    _create_topic(bootstrap, out, partitions)
    consumer = _consumer(bootstrap, f"pipe-{run}", topic, partitions)
    producer = _txn_producer(bootstrap, f"pipe-{run}")
    metadata = consumer.consumer_group_metadata()
    started = time.perf_counter()
    done, at_end = 0, set()
    while len(at_end) < partitions and done < records:
        messages = consumer.consume(batch, 0.2)
        if not messages:
            continue
        producer.begin_transaction()
        offsets: dict[int, int] = {}
        for m in messages:
            if m.error() is not None:
                at_end.add(m.partition())
                continue
            producer.produce(out, m.value(), m.key(), m.partition(), timestamp=m.timestamp()[1])
            offsets[m.partition()] = m.offset() + 1
            done += 1
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, p, o) for p, o in offsets.items()], metadata
        )
        producer.commit_transaction()
    seconds = time.perf_counter() - started
    consumer.close()
    return done / seconds


def streamscore_replay(
    bootstrap: str, topic: str, model: str, batch: int, threads: int | None, keep: str | None
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
    )
    started = time.perf_counter()
    summary = run_replay(options)
    seconds = time.perf_counter() - started
    return summary.records_read / seconds, summary.as_dict()


def per_message(
    bootstrap: str, topic: str, partitions: int, model: str, batch: int, records: int
) -> float:
    """(c): one record at a time, as published examples do it: poll, ``json.loads``, one
    ``session.run`` on a 1-row array (default session options), ``json.dumps``, produce,
    ``poll(0)``; the same transaction per batch-size records as (a)."""
    loaded = load_model(resolve_model(model), provider="cpu")
    outputs = loaded.signature.output_names()
    run = uuid.uuid4().hex[:8]
    out = f"{topic}.loop-{run}"
    _create_topic(bootstrap, out, partitions)
    consumer = _consumer(bootstrap, f"loop-{run}", topic, partitions)
    producer = _txn_producer(bootstrap, f"loop-{run}")
    metadata = consumer.consumer_group_metadata()
    started = time.perf_counter()
    done, in_txn, at_end = 0, 0, set()
    offsets: dict[int, int] = {}
    while len(at_end) < partitions and done < records:
        m = consumer.poll(0.2)
        if m is None:
            continue
        if m.error() is not None:
            at_end.add(m.partition())
            continue
        if in_txn == 0:
            producer.begin_transaction()
        row = json.loads(m.value())
        features = np.array([[row[name] for name in FEATURES]], dtype=np.float32)
        label, probabilities = loaded.run(outputs, {"input": features})
        row.update(
            label=int(label[0]),
            probabilities_0=float(probabilities[0][0]),
            probabilities_1=float(probabilities[0][1]),
        )
        for name in FEATURES:
            del row[name]
        producer.produce(out, json.dumps(row), m.key(), m.partition(), timestamp=m.timestamp()[1])
        producer.poll(0)
        offsets[m.partition()] = m.offset() + 1
        done += 1
        in_txn += 1
        if in_txn == batch:
            producer.send_offsets_to_transaction(
                [TopicPartition(topic, p, o) for p, o in offsets.items()], metadata
            )
            producer.commit_transaction()
            in_txn = 0
    if in_txn:
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, p, o) for p, o in offsets.items()], metadata
        )
        producer.commit_transaction()
    seconds = time.perf_counter() - started
    consumer.close()
    return done / seconds


def best_of(times: int, run: Callable[[], float], records: int) -> tuple[float, float]:
    """The best rate of ``times`` runs, and that run's CPU time (this process) per record
    in microseconds: on a busy machine the CPU figure moves less than the rate."""
    results = []
    for _ in range(times):
        cpu = time.process_time()
        rate = run()
        results.append((rate, (time.process_time() - cpu) / records * 1e6))
    return max(results)


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
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; best counts")
    parser.add_argument(
        "--also-keep",
        default="all,none",
        type=lambda text: [v for v in text.split(",") if v],
        help="also time (b) with these --keep values (comma-separated; '' for none)",
    )
    args = parser.parse_args()

    home = ROOT / "benchmarks" / ".data" / f"kafka-{os.getpid()}"
    bootstrap = args.bootstrap or start_broker(home)
    try:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        settings = KafkaSettings(bootstrap)
        t0 = time.perf_counter()
        loaded = load_parquet(
            settings, SAMPLE, topic, partitions=args.partitions, limit=args.records
        )
        print(f"loaded {loaded:,} records into {topic} in {time.perf_counter() - t0:.1f}s")
        n = args.repeat

        def pipe_run() -> float:
            return bare_pipe(bootstrap, topic, args.partitions, args.batch_size, loaded)

        def replay_run(keep: str | None) -> Callable[[], float]:
            return lambda: streamscore_replay(
                bootstrap, topic, args.model, args.batch_size, args.threads, keep
            )[0]

        def loop_run() -> float:
            count = min(args.per_message_records, loaded)
            return per_message(
                bootstrap, topic, args.partitions, args.model, args.batch_size, count
            )

        pipe, cpu = best_of(n, pipe_run, loaded)
        print(f"(a) bare pipe        {pipe:>10,.0f} records/s  {cpu:5.1f} us CPU/record")
        replay, cpu = best_of(n, replay_run(None), loaded)
        print(f"(b) streamscore      {replay:>10,.0f} records/s  {cpu:5.1f} us CPU/record")
        variants = {}
        for keep in args.also_keep:
            variants[keep], cpu = best_of(n, replay_run(keep), loaded)
            print(f"    with --keep {keep:<5}  {variants[keep]:>10,.0f} records/s  {cpu:5.1f} us")
        loop, cpu = best_of(n, loop_run, min(args.per_message_records, loaded))
        print(f"(c) per-message loop {loop:>10,.0f} records/s  {cpu:5.1f} us CPU/record")
        print(f"(b)/(a) = {replay / pipe:.2f}  (target >= 0.70)")
        print(f"(b)/(c) = {replay / loop:.1f}  (target >= 5)")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "records": loaded,
                        "batch_size": args.batch_size,
                        "pipe_rps": pipe,
                        "replay_rps": replay,
                        "per_message_rps": loop,
                        "replay_rps_by_keep": variants,
                        "replay_vs_pipe": replay / pipe,
                        "replay_vs_per_message": replay / loop,
                    },
                    indent=2,
                )
            )
    finally:
        if not args.bootstrap:
            stop_broker(home)


if __name__ == "__main__":
    main()
