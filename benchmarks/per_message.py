"""The per-message reference consumer: poll one record, score one, produce one.

The shape of most hand-written Kafka + model code and of published examples: ``poll``,
``json.loads``, one ``session.run`` on a 1-row array (default session options), ``json.dumps``,
``produce``, ``poll(0)``. The benchmarks run it beside streamscore and print streamscore's
speed-up over it:

* :func:`replay` (benchmarks/replay_throughput.py): read a topic from the start into another,
  one transaction every ``batch`` records, and return records/s;
* ``serve`` (benchmarks/tail_latency.py runs it as its own process): score a live topic until
  SIGTERM, auto-committing, printing ``assigned`` once it owns partitions.

    .venv/bin/python benchmarks/per_message.py serve BOOTSTRAP SOURCE OUT [MODEL]
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from streamscore.model import resolve_model
from streamscore.model.session import LoadedModel, load_model

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "sample_data" / "models" / "fraud"


class PerMessageScorer:
    """Scores one JSON record: its fields minus the model's, plus label and probabilities."""

    def __init__(self, model: str | Path = MODEL, threads: int | None = None) -> None:
        self.model: LoadedModel = load_model(resolve_model(model), provider="cpu", threads=threads)
        self.features = self.model.signature.metadata["feature_names"].split(",")
        self.outputs = self.model.signature.output_names()

    def score(self, value: bytes) -> bytes:
        row = json.loads(value)
        features = np.array([[row[name] for name in self.features]], dtype=np.float32)
        label, probabilities = self.model.run(self.outputs, {"input": features})
        for name in self.features:
            del row[name]
        row.update(
            label=int(label[0]),
            probabilities_0=float(probabilities[0][0]),
            probabilities_1=float(probabilities[0][1]),
        )
        return json.dumps(row).encode()


def replay(
    bootstrap: str, topic: str, partitions: int, model: str, batch: int, records: int
) -> float:
    """Read ``records`` records of ``topic`` from the start into a new topic, one at a time,
    a transaction every ``batch`` records; return records/s."""
    from streamscore.kafka.client import Admin, KafkaSettings

    scorer = PerMessageScorer(model)
    run = uuid.uuid4().hex[:8]
    out = f"{topic}.loop-{run}"
    with Admin(KafkaSettings(bootstrap)) as admin:
        admin.create_topic(out, partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"loop-{run}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"loop-{run}", "linger.ms": 20}
    )
    producer.init_transactions(30)
    metadata = consumer.consumer_group_metadata()
    started = time.perf_counter()
    done, in_txn, at_end = 0, 0, set()
    offsets: dict[int, int] = {}

    def commit() -> None:
        positions = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        producer.send_offsets_to_transaction(positions, metadata)
        producer.commit_transaction()

    while len(at_end) < partitions and done < records:
        m = consumer.poll(0.2)
        if m is None:
            continue
        if m.error() is not None:
            at_end.add(m.partition())
            continue
        if in_txn == 0:
            producer.begin_transaction()
        value = scorer.score(m.value())
        producer.produce(out, value, m.key(), m.partition(), timestamp=m.timestamp()[1])
        producer.poll(0)
        offsets[m.partition()] = m.offset() + 1
        done += 1
        in_txn += 1
        if in_txn == batch:
            commit()
            in_txn = 0
    if in_txn:
        commit()
    seconds = time.perf_counter() - started
    consumer.close()
    return done / seconds


def serve(bootstrap: str, source: str, out: str, model: str | Path = MODEL) -> None:
    """Score ``source`` live into ``out`` until SIGTERM (auto-commit: at-most/at-least once)."""
    scorer = PerMessageScorer(model, threads=1)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"per-message-{uuid.uuid4().hex}",
            "auto.offset.reset": "latest",
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consumer.subscribe([source], on_assign=lambda c, ps: print("assigned", flush=True))
    while not stop.is_set():
        message = consumer.poll(0.1)
        if message is None or message.error() is not None:
            continue
        producer.produce(
            out,
            scorer.score(message.value()),
            message.key(),
            partition=message.partition(),
            timestamp=message.timestamp()[1],
        )
        producer.poll(0)
    producer.flush(30)
    consumer.close()


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    else:
        sys.exit(__doc__)
