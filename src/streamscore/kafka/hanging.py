"""Close transactions left hanging on a replay's output partitions before it writes again.

A transaction is *hanging* on a partition when the partition holds records of it but no
marker ever ends it: the partition's last stable offset (LSO, where read_committed readers
stop) stays below its high watermark. Kafka 4.3 can leave one behind after a broker crash
(seen in its log): when the broker was down longer than the transaction timeout, its
coordinator rolls the open transaction back as soon as it starts, from the metadata it had
before the crash; the controller then fences the old broker incarnation, its partitions lose
their leader, the coordinator skips their abort markers ("Couldn't find leader endpoint for
partitions … can be skipped") and, if it records the rollback as complete before it resigns,
no later election sends them again. The next replay registers the same transactional id, so
it gets the same producer id, and its first COMMIT marker on that partition ends the hanging
transaction too: the crashed batch becomes visible next to its rerun, i.e. duplicates (and a
skipped marker on the group's offsets partition leaves an offset commit pending, which blocks
reading the group's offsets).

The defence uses the same rule in reverse: a transaction from our producer id that writes to
every hanging partition and is *aborted* ends the hanging records as aborted. It also sends
the group's offsets, so a transactional offset commit left pending by the crash is dropped
rather than committed later. Then the LSO must have passed the old high watermark; a
partition it did not (a transaction of another producer id) stops the replay with the
``kafka-transactions.sh`` command that aborts it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamscore.errors import KafkaError
from streamscore.kafka.client import Admin, Producer

CLEANUP_KEY = b"streamscore.abort-hanging-transaction"
CLEANUP_HEADER = "streamscore.cleanup"


@dataclass(frozen=True)
class HangingPartition:
    """A partition whose records from ``stable`` (its LSO) up to ``end`` are undecided."""

    topic: str
    partition: int
    stable: int
    end: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


def find_hanging(admin: Admin, partitions: Mapping[str, Sequence[int]]) -> list[HangingPartition]:
    """Partitions whose LSO is below their high watermark: an open transaction holds them."""
    found: list[HangingPartition] = []
    for topic, numbers in partitions.items():
        stable = _offsets_once_led(admin, topic, numbers, committed=True)
        ends = _offsets_once_led(admin, topic, numbers, committed=False)
        found += [
            HangingPartition(topic, p, stable[p], ends[p]) for p in numbers if stable[p] < ends[p]
        ]
    return found


# A topic created a moment ago may have no leader yet for some partitions.
# (UNKNOWN_LEADER_EPOCH: this broker has not caught up yet with a topic a peer just created.)
_LEADERLESS = {
    "NOT_LEADER_FOR_PARTITION",
    "LEADER_NOT_AVAILABLE",
    "UNKNOWN_TOPIC_OR_PART",
    "UNKNOWN_LEADER_EPOCH",
}


def _offsets_once_led(
    admin: Admin, topic: str, partitions: Sequence[int], *, committed: bool
) -> dict[int, int]:
    """``admin.list_offsets(topic, …, "latest")``, retried while partitions elect a leader."""
    deadline = time.monotonic() + admin.settings.connect_timeout_s
    while True:
        try:
            return admin.list_offsets(topic, partitions, "latest", committed=committed)
        except KafkaError as exc:
            if exc.code not in _LEADERLESS or time.monotonic() >= deadline:
                raise
        time.sleep(0.1)


def abort_hanging_transactions(
    admin: Admin,
    producer: Producer,
    outputs: Mapping[str, Sequence[int]],
    offsets_topic: str,
    offsets: Mapping[int, tuple[int, str]],
    group_metadata: Any,
    *,
    wait_s: float | None = None,
) -> list[HangingPartition]:
    """End, as aborted, what a crashed run of ``producer``'s transactional id left open.

    Call it right after ``producer.init_transactions()``, which already aborted whatever the
    coordinator still knew to be open. ``offsets`` (any values: the transaction is aborted)
    are sent so that a pending offset commit of the crashed run is dropped. Returns the
    partitions that were hanging; raises KafkaError naming any that still are after
    ``wait_s`` (default: the connect timeout). Workers of one replay wait longer: a
    partition may also hold a peer's transaction, which ends by itself (committed within a
    batch, or rolled back by the broker at the transaction timeout if the peer died).
    """
    hanging = find_hanging(admin, outputs)
    producer.begin_transaction()
    for stuck in hanging:
        producer.produce(
            stuck.topic,
            None,
            CLEANUP_KEY,
            partition=stuck.partition,
            headers=[(CLEANUP_HEADER, b"aborts a transaction a crash left open")],
        )
    if offsets:
        producer.send_offsets_to_transaction(offsets_topic, offsets, group_metadata)
    producer.abort_transaction(checked=True)
    if hanging:
        _wait_until_stable(
            admin, hanging, admin.settings.connect_timeout_s if wait_s is None else wait_s
        )
    return hanging


def _wait_until_stable(admin: Admin, hanging: list[HangingPartition], wait_s: float) -> None:
    """Wait (up to ``wait_s``) until every LSO passed its old high watermark."""
    deadline = time.monotonic() + wait_s
    while True:
        still = [
            stuck
            for stuck in hanging
            if admin.list_offsets(stuck.topic, [stuck.partition], "latest")[stuck.partition]
            < stuck.end
        ]
        if not still:
            return
        if time.monotonic() >= deadline:
            raise _still_hanging(admin, still[0], len(still))
        time.sleep(0.1)


def _still_hanging(admin: Admin, stuck: HangingPartition, count: int) -> KafkaError:
    others = f" (and {count - 1} more partition(s))" if count > 1 else ""
    command = (
        f"kafka-transactions.sh --bootstrap-server {admin.settings.bootstrap_servers} abort "
        f"--topic {stuck.topic} --partition {stuck.partition} --start-offset {stuck.stable}"
    )
    return KafkaError(
        f"partition {stuck}{others} holds a transaction left open by another producer since "
        f"offset {stuck.stable}: read_committed readers stop there, and writing after it "
        "could duplicate or hide records",
        hint=f"abort it with: {command}; then rerun",
        code="HANGING_TRANSACTION",
    )
