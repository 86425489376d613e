"""The admin client: topic metadata, topic creation and offset queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import confluent_kafka as ck

# Public names of confluent_kafka.admin (re-exported there without __all__).
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from streamscore.errors import KafkaError
from streamscore.kafka.base import KafkaClient
from streamscore.kafka.retry import Retry
from streamscore.kafka.settings import KafkaSettings
from streamscore.kafka.translation import (
    AUTH_CODES,
    UNREACHABLE_CODES,
    kafka_error_of,
    translate,
    translated,
)

_E = ck.KafkaError


class Admin(KafkaClient):
    """Topic metadata, topic creation and offset queries."""

    action = "admin client"

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings, {})

    def _create(self, config: dict[str, Any]) -> Any:
        return AdminClient(config)

    def _metadata(self, topic: str | None, action: str) -> Any:
        """Topic metadata, retried while no broker answers, up to the connect timeout.

        Short tries, serving the error callback in between: a refused login is reported at
        once rather than as an unreachable cluster at the deadline.
        """

        def attempt(left: float) -> Any:
            if any(error.code() in AUTH_CODES for error in self.errors):
                raise self.unreachable(action, 0)  # refused access, named as such
            metadata = self.handle.list_topics(topic, timeout=min(left, 0.5))
            self.raise_reported_errors(action)
            return metadata

        def unreachable(exc: ck.KafkaException) -> bool:
            kerr = kafka_error_of(exc)
            return kerr is not None and kerr.code() in UNREACHABLE_CODES

        retry = Retry(
            self.settings.connect_timeout_s,
            first_s=0.01,
            max_s=0.05,
            min_call_s=0.05,
            wait=lambda pause: self.handle.poll(pause),
        )
        try:
            return retry.run(attempt, unreachable)
        except ck.KafkaException as exc:
            if unreachable(exc):
                raise self.unreachable(action, round(retry.elapsed_s, 1)) from None
            raise translate(exc, self.settings, action) from None

    def check_reachable(self) -> None:
        """Fail within the connect timeout when no broker answers (or access is refused)."""
        self._metadata(None, "connecting")

    def partition_count(self, topic: str) -> int | None:
        """How many partitions ``topic`` has; None when it does not exist."""
        described = self._metadata(topic, f"describing topic '{topic}'").topics.get(topic)
        if described is None or described.error is not None:
            if described is not None and described.error.code() in AUTH_CODES:
                raise translate(described.error, self.settings, f"describing topic '{topic}'")
            return None
        return len(described.partitions)

    def input_partition_count(self, topic: str) -> int:
        """How many partitions the input ``topic`` has; KafkaError when it does not exist."""
        count = self.partition_count(topic)
        if count is None:
            raise KafkaError(
                f"input topic '{topic}' does not exist on {self.settings.bootstrap_servers}",
                hint="check --input-topic",
                code="UNKNOWN_TOPIC_OR_PART",
            )
        return count

    def topic_config(self, topic: str, names: Sequence[str]) -> dict[str, str]:
        """The values of the named settings of ``topic`` (defaults included)."""
        resource = ConfigResource(ResourceType.TOPIC, topic)
        with translated(self.settings, f"reading the settings of topic '{topic}'"):
            future = self.handle.describe_configs(
                [resource], request_timeout=self.settings.connect_timeout_s
            )[resource]
            entries = future.result(timeout=self.settings.connect_timeout_s * 3)
        return {name: entries[name].value for name in names if name in entries}

    def create_topic(
        self, topic: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``topic`` with the broker's default replication; an existing one is fine."""
        action = f"creating topic '{topic}'"
        new_topic = NewTopic(topic, partitions, -1, config=dict(config or {}))
        future = self.handle.create_topics(
            [new_topic], request_timeout=self.settings.connect_timeout_s
        )[topic]
        try:
            future.result(timeout=self.settings.connect_timeout_s * 3)
        except ck.KafkaException as exc:
            kerr = kafka_error_of(exc)
            if kerr is None or kerr.code() != _E.TOPIC_ALREADY_EXISTS:
                raise translate(exc, self.settings, action) from None
        # Metadata reaches every client a moment after creation; wait until leaders exist.

        def leaders_elected(_left: float) -> None:
            described = self._metadata(topic, action).topics.get(topic)
            if described is not None and described.error is None:
                leaders = [p.leader for p in described.partitions.values()]
                if len(leaders) >= partitions and all(leader >= 0 for leader in leaders):
                    return
            raise ck.KafkaException(ck.KafkaError(_E.LEADER_NOT_AVAILABLE, retriable=True))

        def no_leader(exc: ck.KafkaException) -> bool:
            kerr = kafka_error_of(exc)
            return kerr is not None and kerr.code() == _E.LEADER_NOT_AVAILABLE

        try:
            Retry(self.settings.connect_timeout_s, first_s=0.05, max_s=0.2).run(
                leaders_elected, no_leader
            )
        except ck.KafkaException:
            raise KafkaError(
                f"{action}: its partitions have no leader yet", hint="try again"
            ) from None

    def list_offsets(
        self, topic: str, partitions: Sequence[int], spec: str | int, *, committed: bool = True
    ) -> dict[int, int]:
        """Offsets per partition: ``"earliest"``, ``"latest"`` (the last stable offset, as
        read_committed consumers see it; with ``committed=False`` the high watermark, records
        of open transactions included) or the first offset at or after a timestamp in ms
        (the latest offset where no record is that recent)."""
        if spec == "earliest":
            offset_spec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        elif spec == "latest":
            offset_spec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        else:
            offset_spec = OffsetSpec.for_timestamp(int(spec))
        requests = {ck.TopicPartition(topic, p): offset_spec for p in partitions}
        action = f"reading offsets of topic '{topic}'"
        with translated(self.settings, action):
            futures = self.handle.list_offsets(
                requests,
                isolation_level=ck.IsolationLevel.READ_COMMITTED
                if committed
                else ck.IsolationLevel.READ_UNCOMMITTED,
                request_timeout=self.settings.connect_timeout_s,
            )
            found = {
                tp.partition: future.result(timeout=self.settings.connect_timeout_s * 3).offset
                for tp, future in futures.items()
            }
        if isinstance(spec, int) and any(offset < 0 for offset in found.values()):
            latest = self.list_offsets(topic, partitions, "latest")
            found = {p: latest[p] if offset < 0 else offset for p, offset in found.items()}
        return found
