"""The end-offset snapshot of a replay, kept in the consumer group's committed offsets.

A replay reads each input partition from a start offset up to the end offset it saw when it
began. So that a restarted replay stops at the *same* ends, the snapshot is written into the
metadata string of every committed offset, in the same transaction as the progress itself
(Kafka stores up to 4 KiB of metadata per partition and returns it with the offset). The
first transaction of a replay commits every partition's start offset with the snapshot, so
from then on every partition has one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from streamscore.errors import UsageError
from streamscore.kafka.client import CommittedOffset

FORMAT = "streamscore.replay/1"


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``start`` (inclusive) to ``end`` (exclusive) of one partition."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class EndOffsets:
    """What one replay covers: a range per partition, who started it, with which settings."""

    ranges: dict[int, PartitionRange]
    run_id: str
    taken_at_ms: int
    identity: str  # digest of model and scoring options: a resume must match it

    @classmethod
    def take(cls, starts: Mapping[int, int], ends: Mapping[int, int], identity: str) -> EndOffsets:
        """A new snapshot; a start beyond its end (cannot happen in Kafka) is clamped."""
        ranges = {p: PartitionRange(min(starts[p], ends[p]), ends[p]) for p in sorted(ends)}
        return cls(ranges, uuid.uuid4().hex[:12], int(time.time() * 1000), identity)

    def metadata(self, partition: int) -> str:
        """The committed-offset metadata that records this snapshot for ``partition``."""
        r = self.ranges[partition]
        return json.dumps(
            {
                "format": FORMAT,
                "run": self.run_id,
                "at": self.taken_at_ms,
                "identity": self.identity,
                "start": r.start,
                "end": r.end,
            },
            separators=(",", ":"),
        )

    def commit_offsets(self, offsets: Mapping[int, int]) -> dict[int, tuple[int, str]]:
        """``{partition: next offset}`` -> what to commit: offsets with this snapshot."""
        return {p: (offset, self.metadata(p)) for p, offset in offsets.items()}

    @classmethod
    def from_committed(
        cls, committed: Mapping[int, CommittedOffset], group: str
    ) -> EndOffsets | None:
        """The snapshot recorded in a group's committed offsets; None if it has none."""
        if not committed:
            return None
        ranges: dict[int, PartitionRange] = {}
        seen: set[tuple[str, str, int]] = set()
        for partition, offset in committed.items():
            try:
                meta = json.loads(offset.metadata)
                if meta.get("format") != FORMAT:
                    raise ValueError(meta.get("format"))
                ranges[partition] = PartitionRange(int(meta["start"]), int(meta["end"]))
                seen.add((str(meta["run"]), str(meta["identity"]), int(meta["at"])))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise UsageError(
                    f"consumer group '{group}' has committed offsets that streamscore replay "
                    "did not write",
                    hint="choose another --group for the replay",
                ) from None
        if len(seen) != 1:  # cannot happen: the first transaction commits every partition
            raise UsageError(
                f"consumer group '{group}' holds offsets of {len(seen)} different replays",
                hint="choose another --group (or --output-topic) for a new replay",
            )
        run_id, identity, taken_at = seen.pop()
        return cls(ranges, run_id, taken_at, identity)

    def positions(self, committed: Mapping[int, CommittedOffset]) -> dict[int, int]:
        """Where each partition resumes: its committed offset, else its start."""
        return {
            p: max(committed[p].offset, r.start) if p in committed else r.start
            for p, r in self.ranges.items()
        }
