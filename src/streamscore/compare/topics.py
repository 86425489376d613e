"""Compare two output topics written by ``replay``/``tail``, joined on their source records.

Both topics are read read_committed up to the end offsets they have when compare starts, and
records pair up on the ``streamscore.source.partition``/``streamscore.source.offset`` headers
that streamscore writes on every output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import orjson
import pyarrow as pa

from streamscore.compare.comparison import PairedBatch
from streamscore.compare.report import Side
from streamscore.compare.sources import Emit, PairSource
from streamscore.errors import InputError, KafkaError, UsageError
from streamscore.kafka import headers as h
from streamscore.kafka.client import Admin, Consumer
from streamscore.kafka.codec import DecodedBatch, JsonDecoder
from streamscore.kafka.settings import KafkaSettings
from streamscore.kafka.sink import KafkaBatch
from streamscore.kafka.source import PartitionRangeSource

Pending = tuple[dict[tuple[int, int], "_Row"], dict[tuple[int, int], "_Row"]]
Seen = tuple[dict[int, int], dict[int, int]]  # per side: source partition -> highest offset


class _Headered(Protocol):
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...

    def value(self) -> bytes | None: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...


@dataclass
class _Row:
    scores: list[float]
    keep: dict[str, Any]


class TopicPairs(PairSource):
    """Two output topics, read up to their end offsets at the start, joined on the source
    record (``streamscore.source.partition``/``.offset`` headers).

    Both topics are read partition by partition, a batch of each in turn. ``replay`` and
    ``tail`` write a record's output to its input partition number, in input order, so rows
    meet their partner within a batch or two and few wait; rows still unmatched at the end
    are counted as only on their side. Memory holds the waiting rows and one offset per source
    partition: a source offset at or below one already read from the same source partition
    is a redelivery (``tail`` is at-least-once) and counts once, as its first copy.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic_a: str,
        topic_b: str,
        keep: Sequence[str],
        wanted: Sequence[str] | None,
        batch_rows: int = 5000,
    ) -> None:
        self.settings = settings
        self.topics = (topic_a, topic_b)
        self.keep = list(keep)
        self.wanted = wanted
        self.batch_rows = batch_rows
        self.a, self.b = Side(f"topic {topic_a}"), Side(f"topic {topic_b}")
        self.columns: list[str] = []
        self.scored_topic: str | None = None  # the input topic both outputs must come from

    def feed(self, emit: Emit) -> None:
        ranges = []
        with Admin(self.settings) as admin:
            for topic in self.topics:
                count = admin.partition_count(topic)
                if count is None:
                    raise KafkaError(
                        f"--topics: topic '{topic}' does not exist on "
                        f"{self.settings.bootstrap_servers}",
                        hint="name the output topics of two replay or tail runs",
                        code="UNKNOWN_TOPIC_OR_PART",
                    )
                partitions = list(range(count))
                ranges.append(
                    (
                        admin.list_offsets(topic, partitions, "earliest"),
                        admin.list_offsets(topic, partitions, "latest"),
                    )
                )
        group = "streamscore-compare"  # assign() only: nothing is ever committed
        with Consumer(self.settings, group) as ca, Consumer(self.settings, group) as cb:
            self._join(ca, cb, ranges, emit)

    def _join(self, ca: Consumer, cb: Consumer, ranges: list[Any], emit: Emit) -> None:
        pending: Pending = ({}, {})
        seen: Seen = ({}, {})
        partitions = sorted(set(ranges[0][1]) | set(ranges[1][1]))
        for partition in partitions:
            streams = [
                self._records(consumer, topic, partition, starts, ends)
                for consumer, topic, (starts, ends) in zip(
                    (ca, cb), self.topics, ranges, strict=True
                )
            ]
            live = [True, True]
            while any(live):
                for side in (0, 1):
                    if not live[side]:
                        continue
                    records = next(streams[side], None)
                    if records is None:
                        live[side] = False
                        continue
                    emit(self.columns, self._match(side, records, pending, seen))
        width = len(self.columns)
        unmatched = PairedBatch(
            np.empty((0, width)),
            np.empty((0, width)),
            only_a=len(pending[0]),
            only_b=len(pending[1]),
        )
        emit(self.columns, unmatched)

    def _records(
        self,
        consumer: Consumer,
        topic: str,
        partition: int,
        starts: dict[int, int],
        ends: dict[int, int],
    ) -> Iterator[list[_Headered]]:
        if partition not in ends or starts[partition] >= ends[partition]:
            return
        source = PartitionRangeSource(
            consumer,
            topic,
            {partition: starts[partition]},
            {partition: ends[partition]},
            _Undecoded(),
            batch_size=self.batch_rows,
        )
        for batch in source.batches():
            context = batch.context
            assert isinstance(context, KafkaBatch)
            if context.records:
                yield cast(list[_Headered], context.records)

    def _match(
        self,
        side: int,
        records: list[_Headered],
        pending: Pending,
        seen: Seen,
    ) -> PairedBatch:
        topic = self.topics[side]
        parsed = []
        for record in records:
            found = h.header_dict(record.headers())
            where = f"topic '{topic}' partition {record.partition()} offset {record.offset()}"
            try:
                source = (int(found[h.SOURCE_PARTITION]), int(found[h.SOURCE_OFFSET]))
                value = orjson.loads(record.value() or b"")
            except (KeyError, ValueError):
                raise InputError(
                    f"{where}: no streamscore source headers or no JSON object value",
                    hint="--topics compares output topics written by streamscore replay or tail",
                ) from None
            if not isinstance(value, dict):
                raise InputError(f"{where}: the value is not a JSON object")
            self._check_scored_topic(where, found.get(h.SOURCE_TOPIC))
            parsed.append((source, value))
        if records and (self.a, self.b)[side].model is None:  # name the model from its headers
            found = h.header_dict(records[0].headers())
            named = Side(
                (self.a, self.b)[side].source,
                found.get(h.MODEL),
                found.get(h.MODEL_VERSION),
                found.get(h.MODEL_SHA256),
            )
            if side == 0:
                self.a = named
            else:
                self.b = named
        if not self.columns and parsed:
            self._discover(side, parsed[0][1])
        duplicates = 0
        matched_a: list[list[float]] = []
        matched_b: list[list[float]] = []
        details: list[dict[str, Any]] = []
        mine, theirs = pending[side], pending[1 - side]
        for source, value in parsed:
            if source[1] <= seen[side].get(source[0], -1):
                duplicates += 1
                continue
            seen[side][source[0]] = source[1]
            row = _Row(
                [_number(value.get(c)) for c in self.columns],
                {k: value.get(k) for k in self.keep},
            )
            partner = theirs.pop(source, None)
            if partner is None:
                mine[source] = row
                continue
            first, second = (row, partner) if side == 0 else (partner, row)
            matched_a.append(first.scores)
            matched_b.append(second.scores)
            details.append({"key": f"{source[0]}/{source[1]}", "keep": first.keep})
        width = len(self.columns)
        return PairedBatch(
            np.asarray(matched_a, dtype=np.float64).reshape(-1, width),
            np.asarray(matched_b, dtype=np.float64).reshape(-1, width),
            details.__getitem__,
            duplicates_a=duplicates if side == 0 else 0,
            duplicates_b=duplicates if side == 1 else 0,
        )

    def _check_scored_topic(self, where: str, scored: str | None) -> None:
        """Source offsets mean the same record only within one input topic."""
        if self.scored_topic is None:
            self.scored_topic = scored
        elif scored != self.scored_topic:
            raise InputError(
                f"{where}: scored records of topic '{scored}', but the records before it "
                f"came from '{self.scored_topic}': their source offsets name other records",
                hint="--topics compares two outputs of the same input topic",
            )

    def _discover(self, side: int, value: dict[str, Any]) -> None:
        """Score columns from the first record: numeric fields (not --keep ones)."""
        numeric = [
            k for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        numeric = [k for k in numeric if k not in self.keep]
        if self.wanted:
            missing = [c for c in self.wanted if c not in numeric]
            if missing:
                raise UsageError(
                    f"--columns {', '.join(missing)}: not a numeric field of topic "
                    f"'{self.topics[side]}'",
                    hint=f"numeric fields: {', '.join(numeric) or 'none'}",
                )
            self.columns = list(self.wanted)
        else:
            self.columns = numeric


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("nan")


class _Undecoded(JsonDecoder):
    """A decoder that decodes nothing: compare parses the record values itself."""

    def __init__(self) -> None:
        super().__init__({})

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        return DecodedBatch(_EMPTY_ROWS, np.arange(len(values), dtype=np.int64), None)


_EMPTY_ROWS = pa.RecordBatch.from_pydict({})
