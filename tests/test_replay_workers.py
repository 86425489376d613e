"""``streamscore replay`` shared by several worker processes in one consumer group (issue 11 §2),
against the real broker: exactly once across a SIGKILLed and restarted worker, one snapshot
when workers start together, a finished worker that waits for the whole replay, ``--workers``.

Small group and transaction timeouts keep these tests to seconds.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streamscore.errors import worst_exit_code
from streamscore.kafka.group_source import GroupProgress
from streamscore.replay import run_replay
from test_replay import (
    MODEL,
    CommittedCounter,
    expected_sources,
    options,
    produce_rows,
    read_topic,
    sample_rows,
    source_of,
)
from test_replay_broker_crash import open_transaction_on

pytestmark = pytest.mark.kafka

FAST_GROUP = [
    *("-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"),
    *("-X", "transaction.timeout.ms=10000"),
]


def command(bootstrap: str, source: str, target: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "streamscore", "replay", "-b", bootstrap, "-i", source,
        "-o", target, "-m", str(MODEL), "--threads", "1", "--provider", "cpu",
        "--log-format", "json", *FAST_GROUP, *extra,
    ]  # fmt: skip


class Worker:
    """A worker process whose JSON lines (stdout) and stderr are collected as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self.events.append(json.loads(line))
            else:
                self.stderr.append(line)

    def finish(self, timeout_s: float = 120) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout_s)
        for reader in self._readers:
            reader.join(timeout=10)
        return code, "".join(self.stderr)[-3000:]

    def started(self) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("phase")), None)

    def summary(self) -> dict[str, Any]:
        (found,) = [e for e in self.events if e["event"] == "summary"]
        return found


def wait_until_no_open_transaction(bootstrap: str, topic: str) -> None:
    """A killed worker's open transaction hides what was written after it from read_committed
    readers until the broker rolls it back (transaction.timeout.ms): wait for that."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wait_until(lambda: not open_transaction_on(admin, topic, 6), timeout_s=30)


def wait_until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def six_partitions(unique_topic: Callable[..., str]) -> tuple[str, str]:
    source = unique_topic(partitions=6, prefix="replay-workers")
    return source, f"{source}.scored"


def test_three_workers_one_killed_and_restarted_write_each_input_once_as_one_replay_scores(
    kafka_bootstrap: str, six_partitions: tuple[str, str]
) -> None:
    source, target = six_partitions
    total = 3000
    produce_rows(kafka_bootstrap, source, sample_rows(total))
    argv = command(kafka_bootstrap, source, target, "--batch-size", "20")
    workers = {name: Worker([*argv, "--member", name]) for name in ("w0", "w1", "w2")}
    rng = random.Random()
    victim = rng.choice(sorted(workers))
    share = rng.uniform(0.15, 0.6)
    wait_until(lambda: all(w.started() for w in workers.values()))
    # Appended after the snapshot: not part of the replay.
    produce_rows(kafka_bootstrap, source, sample_rows(60, start=5000))
    counter = CommittedCounter(kafka_bootstrap, target)
    counter.wait_for(int(share * total))
    counter.consumer.close()
    assert workers[victim].process.poll() is None, "the replay finished before the kill"
    workers[victim].process.send_signal(signal.SIGKILL)
    workers[victim].finish()
    restarted = Worker([*argv, "--member", victim])  # fences its predecessor, rejoins
    finished = {**workers, victim: restarted}

    outcomes = {name: worker.finish() for name, worker in finished.items()}

    assert all(code == 0 for code, _ in outcomes.values()), (victim, share, outcomes)
    summaries = {name: worker.summary() for name, worker in finished.items()}
    assert all(s["complete"] for s in summaries.values())
    runs = {e["run"] for w in [*finished.values(), workers[victim]] if (e := w.started())}
    assert len(runs) == 1  # one snapshot for every worker, the restarted one included
    ends = summaries["w0"]["end_offsets"]
    produced = read_topic(kafka_bootstrap, target)
    expected = expected_sources(kafka_bootstrap, source, ends)
    assert len(expected) == total
    assert sorted(source_of(m) for m in produced) == expected  # none lost, none twice
    # Scores equal those of one process replaying the same records.
    single = run_replay(options(kafka_bootstrap, source, f"{target}.single", batch_size=500))
    assert single.records_scored == total + 60  # the records appended since count here
    scored_once = read_topic(kafka_bootstrap, f"{target}.single")
    deadline = time.monotonic() + 30
    # A commit returns before its markers reach every partition: the stable end may lag.
    while len(scored_once) < single.records_scored and time.monotonic() < deadline:
        time.sleep(0.2)
        scored_once = read_topic(kafka_bootstrap, f"{target}.single")
    reference = {source_of(m): orjson.loads(m.value()) for m in scored_once}
    for message in produced:
        assert orjson.loads(message.value()) == reference[source_of(message)]


def test_a_killed_worker_that_never_comes_back_leaves_its_partitions_to_the_others(
    kafka_bootstrap: str, six_partitions: tuple[str, str]
) -> None:
    source, target = six_partitions
    total = 2400
    produce_rows(kafka_bootstrap, source, sample_rows(total))
    argv = command(kafka_bootstrap, source, target, "--batch-size", "10")
    workers = {name: Worker([*argv, "--member", name]) for name in ("w0", "w1")}
    wait_until(lambda: all(w.started() for w in workers.values()))
    dead = workers.pop("w1")
    # It may join once the other has read much already (the rebalance takes a heartbeat).
    wait_until(lambda: any(e["event"] == "assigned" for e in dead.events))
    counter = CommittedCounter(kafka_bootstrap, target)
    counter.wait_for(total // 3)
    counter.consumer.close()
    assert dead.process.poll() is None, "the replay finished before the kill"
    dead.process.send_signal(signal.SIGKILL)  # likely inside a transaction; never restarted
    dead.finish()

    code, stderr = workers["w0"].finish()

    assert code == 0, stderr
    summary = workers["w0"].summary()
    assert summary["complete"] is True
    wait_until_no_open_transaction(kafka_bootstrap, target)
    produced = sorted(source_of(m) for m in read_topic(kafka_bootstrap, target))
    assert produced == expected_sources(kafka_bootstrap, source, summary["end_offsets"])


def test_two_workers_starting_together_agree_on_one_snapshot(
    kafka_bootstrap: str, six_partitions: tuple[str, str]
) -> None:
    source, target = six_partitions
    produce_rows(kafka_bootstrap, source, sample_rows(900))
    appending = threading.Event()

    def append() -> None:  # the end offsets move all along: two snapshots would differ
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 1})
        row = 1000
        while not appending.is_set():
            for value in sample_rows(6, start=row):
                producer.produce(source, orjson.dumps(value), str(row).encode())
            producer.poll(0)
            row = 1000 + (row + 6) % 3000
            time.sleep(0.005)
        producer.flush(10)

    appender = threading.Thread(target=append, daemon=True)
    appender.start()
    try:
        argv = command(kafka_bootstrap, source, target, "--batch-size", "10")
        first, second = (Worker([*argv, "--member", name]) for name in ("a", "b"))
        outcomes = [first.finish(), second.finish()]
    finally:
        appending.set()
        appender.join()

    assert [code for code, _ in outcomes] == [0, 0], outcomes
    announced = [first.started(), second.started()]
    assert announced[0] is not None and announced[1] is not None
    assert announced[0]["run"] == announced[1]["run"]
    assert announced[0]["end_offsets"] == announced[1]["end_offsets"]
    assert sorted(e["phase"] for e in announced) == ["resumed", "started"]  # one took it
    ends = announced[0]["end_offsets"]
    produced = sorted(source_of(m) for m in read_topic(kafka_bootstrap, target))
    assert produced == expected_sources(kafka_bootstrap, source, ends)
    assert first.summary()["records_read"] + second.summary()["records_read"] == len(produced)


def test_a_finished_worker_exits_0_only_once_the_whole_replay_is_complete(
    kafka_bootstrap: str, six_partitions: tuple[str, str]
) -> None:
    source, target = six_partitions
    total = 2400
    produce_rows(kafka_bootstrap, source, sample_rows(total))
    argv = command(kafka_bootstrap, source, target, "--batch-size", "10")
    stuck = Worker([*argv, "--member", "stuck"])
    wait_until(lambda: stuck.started() is not None)
    done = Worker([*argv, "--member", "done"])
    # Both own partitions (the rebalance gave some of the first's to the second).
    wait_until(lambda: any(e["event"] == "assigned" for e in done.events))
    assert stuck.process.poll() is None and done.process.poll() is None
    stuck.process.send_signal(signal.SIGSTOP)  # keeps its partitions, reads nothing more
    try:
        # The group moves the stuck member's partitions only after session.timeout.ms (6 s):
        # until then the replay cannot be complete, whatever "done" has left to read.
        time.sleep(3)
        assert done.process.poll() is None, "exited while partitions of a peer were not done"
        code, stderr = done.finish()  # the stuck member's partitions move to it, then done
    finally:
        stuck.process.send_signal(signal.SIGCONT)

    assert code == 0, stderr
    summary = done.summary()
    assert summary["complete"] is True
    stuck.process.send_signal(signal.SIGKILL)
    stuck.finish()
    wait_until_no_open_transaction(kafka_bootstrap, target)
    ends = summary["end_offsets"]
    produced = sorted(source_of(m) for m in read_topic(kafka_bootstrap, target))
    assert produced == expected_sources(kafka_bootstrap, source, ends)

    late = Worker([*argv, "--member", "late"])
    code, stderr = late.finish()

    assert code == 0, stderr
    started = late.started()
    assert started is not None and started["phase"] == "complete"
    assert "already complete" in started["message"]
    assert late.summary()["records_read"] == 0


def test_workers_option_runs_local_worker_processes_stopped_and_resumed(
    kafka_bootstrap: str, six_partitions: tuple[str, str]
) -> None:
    source, target = six_partitions
    total = 1200
    produce_rows(kafka_bootstrap, source, sample_rows(total))
    argv = command(kafka_bootstrap, source, target, "--batch-size", "10", "--workers", "2")
    parent = Worker(argv)
    wait_until(lambda: parent.started() is not None)  # OUT exists by now
    counter = CommittedCounter(kafka_bootstrap, target)
    counter.wait_for(total // 5)
    counter.consumer.close()
    parent.process.send_signal(signal.SIGTERM)  # forwarded to both workers
    code, stderr = parent.finish(timeout_s=60)
    assert code == 143, stderr
    assert stderr.splitlines()[-1] == "error: terminated"
    assert sum(line.endswith("] error: terminated") for line in stderr.splitlines()) == 2

    finished = subprocess.run(argv, capture_output=True, text=True, timeout=180)

    assert finished.returncode == 0, finished.stderr
    lines = [json.loads(line) for line in finished.stdout.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "summary"
    assert (summary["workers"], summary["complete"]) == (2, True)
    members = {line["member"] for line in lines if line["event"] == "worker_summary"}
    assert len(members) == 2
    ends = next(line for line in lines if line.get("phase"))["end_offsets"]
    produced = sorted(source_of(m) for m in read_topic(kafka_bootstrap, target))
    assert produced == expected_sources(kafka_bootstrap, source, ends)
    assert len(produced) == total


def test_batches_read_before_partitions_were_lost_are_never_committed() -> None:
    progress = GroupProgress()
    progress.yielded()
    progress.written()  # batch 1 committed
    progress.yielded()  # batch 2 handed on...
    progress.yielded()
    progress.lost()  # ...then the group went on without this member

    assert not progress.may_commit()  # batch 2 would commit with the next generation
    progress.restart()  # read again from the committed offsets
    progress.yielded()
    assert progress.may_commit()


@pytest.mark.parametrize("write_between", [False, True])
def test_a_worker_gives_up_after_ten_aborted_batches_in_a_row_with_nothing_written_between(
    monkeypatch: pytest.MonkeyPatch, write_between: bool
) -> None:
    from types import SimpleNamespace

    from streamscore import replay_group
    from streamscore.config import ReplayOptions, ScoringOptions
    from streamscore.errors import TransactionAborted
    from streamscore.kafka.settings import KafkaSettings
    from streamscore.replay import ReplaySummary
    from streamscore.reporting import SilentReporter

    progress = GroupProgress()
    runs = 0

    def pipeline(*args: Any, **kwargs: Any) -> None:  # each run: a batch rolled back
        nonlocal runs
        runs += 1
        if runs > 30:
            return  # the replay is done
        if write_between:
            progress.yielded()
            progress.written()
        raise TransactionAborted("the group moved partitions")

    monkeypatch.setattr(replay_group, "run_pipeline", pipeline)
    options = ReplayOptions(
        KafkaSettings("127.0.0.1:9"), "in", "out", ScoringOptions(MODEL), member="w0"
    )
    run = replay_group.GroupReplayRun(options, SilentReporter())
    source = SimpleNamespace(rewind=lambda: None)
    sink = SimpleNamespace(producer=SimpleNamespace(fatal=False))
    summary = ReplaySummary("in", "out", "out.dlq", "g", "m", "1", "sha", "exactly-once")

    def serve() -> None:
        run._serve(source, None, sink, progress, summary, check_first=False)  # type: ignore[arg-type]

    if write_between:
        serve()
        assert runs == 31
    else:
        with pytest.raises(TransactionAborted):
            serve()
        assert runs == replay_group.MAX_REWINDS + 1


@pytest.mark.parametrize(
    ("codes", "worst"),
    [([0, 0], 0), ([0, 130], 130), ([143, 130], 143), ([130, 6, 3], 6), ([0, -9], 13)],
)
def test_the_exit_code_of_several_workers_is_the_worst_one(codes: list[int], worst: int) -> None:
    assert worst_exit_code(codes) == worst


def test_a_closed_stdout_does_not_stop_a_workers_output_from_being_read() -> None:
    """`replay --workers N | head`: relaying fails, but each child's pipe is still read to its
    end (a child blocked on a full pipe would hang the whole run)."""
    import io

    from streamscore.workers import _relay

    stream = io.StringIO("".join(f'{{"event": "progress", "n": {i}}}\n' for i in range(10_000)))
    seen: list[str] = []

    def handle(line: str) -> None:
        seen.append(line)
        raise BrokenPipeError(32, "Broken pipe")

    _relay(stream, handle).join(timeout=10)
    assert len(seen) == 1 and stream.read() == ""  # dropped after the failure, read through


def test_a_group_member_refuses_a_commit_interval() -> None:
    from streamscore.kafka.sink import GroupExactlyOnce

    with pytest.raises(ValueError, match="commits every batch"):
        GroupExactlyOnce(None, None, commit_interval_s=1.0)  # type: ignore[arg-type]


def test_a_worker_refuses_a_cooperative_assignor() -> None:
    from streamscore.config import ReplayOptions, ScoringOptions
    from streamscore.errors import UsageError
    from streamscore.kafka.settings import KafkaSettings

    kafka = KafkaSettings("127.0.0.1:9", (("partition.assignment.strategy", "cooperative-sticky"),))
    with pytest.raises(UsageError, match="cooperative-sticky cannot share a replay") as refused:
        ReplayOptions(kafka, "in", "out", ScoringOptions(MODEL), member="w0")
    assert "range or roundrobin" in (refused.value.hint or "")
    ReplayOptions(kafka, "in", "out", ScoringOptions(MODEL))  # a single replay: no group


# A static member of a replay group (argv: bootstrap, topic, group, fate): prints each
# assignment it gets. Fate "die": exits inside its first revocation callback, in the middle of
# a rebalance. "live": joins once told to on stdin (its imports done by then), and stays.
MEMBER = """
import os, sys
from streamscore.kafka.client import Consumer
from streamscore.kafka.settings import KafkaSettings
from streamscore.replay_group import WORKER_CONSUMER_DEFAULTS
bootstrap, topic, group, fate = sys.argv[1:]
if fate == "live":
    sys.stdin.readline()
settings = KafkaSettings(bootstrap, (("session.timeout.ms", "6000"),))
config = {"group.instance.id": "first"}
with Consumer(settings, group, config=config, defaults=WORKER_CONSUMER_DEFAULTS) as consumer:
    def revoked(partitions):
        if fate == "die":
            os._exit(0)
    consumer.subscribe(topic, on_assign=lambda p: print(*p, flush=True), on_revoke=revoked)
    while True:
        consumer.consume(1, 0.1)
"""


class Member:
    """A MEMBER process; ``assigned`` collects the assignments it printed."""

    def __init__(self, bootstrap: str, topic: str, group: str, fate: str) -> None:
        argv = [sys.executable, "-c", MEMBER, bootstrap, topic, group, fate]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.assigned: list[set[int]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.assigned.append({int(p) for p in line.split()})

    def join(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("join\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def test_a_worker_killed_inside_a_rebalance_and_restarted_at_once_leaves_no_partition_unowned(
    kafka_bootstrap: str, six_partitions: tuple[str, str]
) -> None:
    """A static member restarted in a stable group gets its last assignment back without a
    rebalance. Under cooperative-sticky, a member killed between the rounds of a rebalance
    (after giving partitions up, before the round that hands them on) would come back to
    fewer partitions and leave the rest unowned: the replay would wait for them forever."""
    from streamscore.kafka.client import Consumer
    from streamscore.kafka.settings import KafkaSettings
    from streamscore.replay_group import WORKER_CONSUMER_DEFAULTS

    source, _ = six_partitions
    group = f"{source}.group"
    first = Member(kafka_bootstrap, source, group, "die")
    restarted = Member(kafka_bootstrap, source, group, "live")
    try:
        wait_until(lambda: bool(first.assigned), timeout_s=30)
        assert first.assigned == [set(range(6))]  # the only member: owns every partition
        owned: set[int] = set()
        settings = KafkaSettings(kafka_bootstrap, (("session.timeout.ms", "6000"),))
        config = {"group.instance.id": "second"}
        with Consumer(settings, group, config=config, defaults=WORKER_CONSUMER_DEFAULTS) as second:
            second.subscribe(source, on_assign=owned.update, on_revoke=owned.difference_update)
            deadline = time.monotonic() + 30
            while first.process.poll() is None:  # it dies in the rebalance
                assert time.monotonic() < deadline, "the first member saw no rebalance"
                second.consume(1, 0.1)
            assert first.process.returncode == 0
            restarted.join()  # at once: well within session.timeout.ms

            def everything_owned() -> bool:
                back = restarted.assigned[-1] if restarted.assigned else set()
                return owned | back == set(range(6)) and not owned & back

            deadline = time.monotonic() + 20  # the second member's share arrives too
            while not everything_owned() and time.monotonic() < deadline:
                second.consume(1, 0.1)
            assert everything_owned(), (owned, restarted.assigned)
    finally:
        first.kill()
        restarted.kill()
