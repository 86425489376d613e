"""Read fixed offset ranges of a topic's partitions, decoded in micro-batches.

The source stops by itself: each partition is read from its position up to (not including)
its end offset, then paused. "Reached the end" is judged by the consumer's *position*, not
by the last record seen, because transaction markers and aborted records occupy offsets that
a read_committed consumer never returns: a partition whose last offsets are markers, or that
holds only aborted records, would otherwise never finish. An empty partition is done at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping

from streamscore.errors import KafkaError
from streamscore.kafka.client import Consumer, KafkaRecord
from streamscore.kafka.codec import JsonDecoder
from streamscore.kafka.sink import KafkaBatch
from streamscore.pipeline import Source, SourceBatch

DEFAULT_MAX_WAIT_S = 0.2
# A stall is given up on after this many connect timeouts, and never before the minimum: a
# transaction left open on the input blocks read_committed readers until it times out
# (60 s by default), and that alone should not fail a replay against a healthy broker.
STALL_CONNECT_TIMEOUTS = 6
MIN_STALL_TIMEOUT_S = 60.0
# A stall while the client reports the cluster unreachable is given up on sooner: as a
# transactional step is (README: "gives up within 3 × --connect-timeout").
UNREACHABLE_CONNECT_TIMEOUTS = 3


def stall_timeout_for(connect_timeout_s: float) -> float:
    """How long a read may make no progress before the broker is taken to be gone."""
    return max(STALL_CONNECT_TIMEOUTS * connect_timeout_s, MIN_STALL_TIMEOUT_S)


class PartitionRangeSource(Source):
    """Batches of up to ``batch_size`` records from ``positions`` up to ``ends``.

    ``metadata(partition)`` is the string committed with each offset (the replay's snapshot).
    A batch closes when full or ``max_wait_s`` after its first record, so progress is
    committed regularly even when records trickle in.
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        positions: Mapping[int, int],
        ends: Mapping[int, int],
        decoder: JsonDecoder,
        *,
        batch_size: int,
        metadata: Callable[[int], str] = lambda _partition: "",
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        stall_timeout_s: float | None = None,
    ) -> None:
        """``stall_timeout_s`` defaults to :func:`stall_timeout_for` the consumer's connect
        timeout."""
        self.consumer = consumer
        self.topic = topic
        self.position = dict(positions)
        self.ends = dict(ends)
        self.decoder = decoder
        self.batch_size = batch_size
        self.metadata = metadata
        self.max_wait_s = max_wait_s
        self.stall_timeout_s = (
            stall_timeout_for(consumer.settings.connect_timeout_s)
            if stall_timeout_s is None
            else stall_timeout_s
        )
        self.unreachable_timeout_s = (
            UNREACHABLE_CONNECT_TIMEOUTS * consumer.settings.connect_timeout_s
        )
        self.remaining = {p for p, end in self.ends.items() if self.position[p] < end}
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def batches(self) -> Iterator[SourceBatch]:
        if not self.remaining:
            return
        self.consumer.assign(self.topic, {p: self.position[p] for p in sorted(self.remaining)})
        while self.remaining and not self.stopping.is_set():
            records, next_offsets = self._collect()
            advanced: dict[int, int] = {}
            commit: dict[int, tuple[int, str]] = {}
            for partition, offset in next_offsets.items():
                advanced[partition] = offset - self.position[partition]
                self.position[partition] = offset
                commit[partition] = (offset, self.metadata(partition))
            decoded = self.decoder.decode([record.value() for record in records])
            context = KafkaBatch(self.topic, records, decoded, commit, advanced)
            yield SourceBatch(decoded.rows, context)

    def _collect(self) -> tuple[list[KafkaRecord], dict[int, int]]:
        """Records for one batch, and the next offset of every partition that moved."""
        records: list[KafkaRecord] = []
        next_offsets: dict[int, int] = {}
        ends, remaining = self.ends, self.remaining
        started = last_progress = time.monotonic()
        while remaining and len(records) < self.batch_size and not self.stopping.is_set():
            got, at_end = self.consumer.consume(self.batch_size - len(records), 0.1)
            moved = len(remaining)
            for record in got:
                partition = record.partition()
                offset = record.offset()
                if partition not in remaining:
                    continue  # fetched before its partition was paused
                if offset >= ends[partition]:  # appended after the snapshot
                    self._finish(partition, next_offsets)
                    continue
                records.append(record)
                next_offsets[partition] = offset + 1
                if offset + 1 >= ends[partition]:
                    self._finish(partition, next_offsets)
            for partition, offset in at_end.items():
                if partition in remaining and offset >= ends[partition]:
                    self._finish(partition, next_offsets)
            if not got and remaining:
                positions = self.consumer.positions(self.topic, sorted(remaining))
                for partition, offset in positions.items():
                    if offset >= ends[partition]:
                        self._finish(partition, next_offsets)
            now = time.monotonic()
            if got or len(remaining) != moved:
                last_progress = now
            elif now - last_progress > self.stall_timeout_s:
                raise self._stalled()
            elif now - last_progress > self.unreachable_timeout_s and self._unreachable_since(
                last_progress
            ):
                raise self.consumer.unreachable(
                    f"reading topic '{self.topic}'", round(now - last_progress, 1)
                )
            if records and now - started >= self.max_wait_s:
                break
        return records, next_offsets

    def _unreachable_since(self, moment: float) -> bool:
        """Whether the consumer reported the cluster unreachable after ``moment`` (or just
        before: the report of a broker's death can precede the last records it sent)."""
        reported = self.consumer.unreachable_at
        return reported is not None and reported >= moment - self.unreachable_timeout_s

    def _finish(self, partition: int, next_offsets: dict[int, int]) -> None:
        """Everything below the end offset is read: commit the end, stop fetching."""
        self.remaining.discard(partition)
        next_offsets[partition] = self.ends[partition]
        self.consumer.pause(self.topic, [partition])

    def _stalled(self) -> KafkaError:
        waiting = ", ".join(str(p) for p in sorted(self.remaining))
        last = self.consumer.last_error
        reason = f" (last client error: {last})" if last else ""
        return KafkaError(
            f"no progress reading partition(s) {waiting} of topic '{self.topic}' for "
            f"{self.stall_timeout_s:g}s{reason}",
            hint="a transaction left open on the input blocks read_committed readers until it "
            "times out; rerun the same command to resume",
        )
