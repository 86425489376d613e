"""How ``streamscore replay`` ends: SIGTERM like Ctrl-C, and a run that scored nothing exits 3.

Issue 8 §4 and §5: cron and systemd stop with SIGTERM; a cron job must notice a replay whose
every record went to the dead-letter topic.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from helpers.runs import invoke
from streamscore.cli.replay import too_many_dead_letters

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "sample_data" / "models" / "fraud"
FEATURES = [f"f{i:02d}" for i in range(30)]


def produce(bootstrap: str, topic: str, values: list[dict[str, object]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, value in enumerate(values):
        producer.produce(topic, orjson.dumps(value), str(i).encode())
    assert producer.flush(30) == 0


def record(i: int, value: object = None) -> dict[str, object]:
    return {"id": i, **{name: (0.1 * i if value is None else value) for name in FEATURES}}


@pytest.mark.parametrize(
    ("read", "dead", "ratio", "fails"),
    [
        (0, 0, None, False),
        (10, 10, None, True),
        (10, 9, None, False),
        (10, 3, 0.25, True),
        (10, 2, 0.25, False),
    ],
)
def test_dead_letter_share_decides_exit_3(
    read: int, dead: int, ratio: float | None, fails: bool
) -> None:
    failure = too_many_dead_letters(read, dead, ratio)
    assert (failure is not None) is fails
    if failure is not None:
        assert failure.exit_code == 3


@pytest.mark.kafka
def test_a_replay_that_dead_lettered_every_record_exits_3(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    source = unique_topic(partitions=1, prefix="replay-all-dead")
    produce(kafka_bootstrap, source, [record(i, "not a number") for i in range(20)])

    result = invoke(
        "replay", "-b", kafka_bootstrap, "-i", source, "-o", f"{source}.scored", "-m", MODEL,
        "--provider", "cpu", "--log-format", "json",
    )  # fmt: skip

    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["records_read"], summary["records_dead_lettered"]) == (20, 20)
    assert result.stderr.startswith("error: all 20 records read went to the dead-letter topic")


@pytest.mark.kafka
def test_sigterm_stops_a_replay_like_ctrl_c_with_exit_143(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    source = unique_topic(partitions=1, prefix="replay-term")
    produce(kafka_bootstrap, source, [record(i) for i in range(3000)])
    command = [
        sys.executable, "-m", "streamscore", "replay", "-b", kafka_bootstrap, "-i", source,
        "-o", f"{source}.scored", "-m", str(MODEL), "--batch-size", "10", "--threads", "1",
        "--provider", "cpu", "--log-format", "json",
        # A transaction per batch, as the test was written for: with the default 1 s of
        # batches per transaction the run can end before the signal comes.
        "--commit-interval", "0",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert json.loads(process.stdout.readline())["phase"] == "started"
    time.sleep(0.5)
    assert process.poll() is None, "the replay finished before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 143, stderr
    assert stderr.splitlines() == ["error: terminated"]

    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout.splitlines()[-1])["resumed"] is True
