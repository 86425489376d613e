"""What the Kafka clients share: lazy creation, the error callback, context management,
and the record types streamscore reads and writes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import confluent_kafka as ck

from streamscore.errors import (
    KafkaError,
    StreamscoreError,
)
from streamscore.kafka.settings import KafkaSettings
from streamscore.kafka.translation import (
    AUTH_CODES,
    UNREACHABLE_CODES,
    translate,
    translated,
)

TIMESTAMP_NOT_AVAILABLE = ck.TIMESTAMP_NOT_AVAILABLE


# librdkafka logs through Python logging (not straight to stderr); the NullHandler keeps
# Python's last-resort handler from printing them, while an application can still opt in.
LOG = logging.getLogger("streamscore.kafka")
LOG.addHandler(logging.NullHandler())


class KafkaRecord(Protocol):
    """One consumed record (confluent_kafka's Message satisfies this)."""

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...

    def timestamp(self) -> tuple[int, int]: ...


Headers = list[tuple[str, bytes]]


# value, key, partition (-1: the partitioner decides), timestamp in ms (0: now), headers
OutgoingRecord = tuple[bytes | None, bytes | None, int, int, Headers | None]


@dataclass(frozen=True)
class CommittedOffset:
    """A consumer group's committed position in one partition, with its metadata string."""

    offset: int
    metadata: str


_C = TypeVar("_C", bound="KafkaClient")


class KafkaClient:
    """Shared by the wrappers: lazy creation, the error callback, context management."""

    action = "kafka"

    def __init__(
        self,
        settings: KafkaSettings,
        config: Mapping[str, Any],
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """``defaults`` yield to the user's -X/--config properties; ``config`` does not."""
        self.settings = settings
        self._config: dict[str, Any] = {
            **(defaults or {}),
            **settings.as_librdkafka_dict(),
            **config,
            "error_cb": self._on_error,
            "logger": LOG,
        }
        self._handle: Any = None
        # Errors librdkafka reports out of band (failed connections, refused logins).
        self.errors: deque[ck.KafkaError] = deque(maxlen=32)
        self.last_error = ""  # the latest of them, redacted, for messages about stalls
        # When librdkafka last said it cannot reach the cluster (monotonic seconds).
        self.unreachable_at: float | None = None

    def _on_error(self, error: ck.KafkaError) -> None:
        self.errors.append(error)
        self.last_error = f"{self.settings.redact(error.str())} [{error.name()}]"
        if error.code() in UNREACHABLE_CODES:
            self.unreachable_at = time.monotonic()

    def _create(self, config: dict[str, Any]) -> Any:
        raise NotImplementedError

    @property
    def handle(self) -> Any:
        if self._handle is None:
            with translated(self.settings, f"creating the Kafka {self.action}"):
                self._handle = self._create(dict(self._config))
        return self._handle

    def raise_reported_errors(self, action: str) -> None:
        """Raise a refused login or a fatal error that librdkafka reported out of band."""
        while self.errors:
            error = self.errors.popleft()
            if error.code() in AUTH_CODES or error.fatal():
                raise translate(error, self.settings, action)

    def unreachable(self, action: str, waited_s: float) -> StreamscoreError:
        """The error for a cluster that did not answer: refused access if it said so."""
        for error in list(self.errors):
            if error.code() in AUTH_CODES:
                return translate(error, self.settings, action)
        return KafkaError(
            f"{action}: cannot reach Kafka at {self.settings.bootstrap_servers} within "
            f"{waited_s:g}s",
            hint="check --bootstrap-servers and that the broker is up (--connect-timeout "
            "waits longer)",
            code="_TRANSPORT",
        )

    def close(self) -> None:
        self._handle = None

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # Unwinding already: whatever closing meets must not replace the error in flight.
        with contextlib.suppress(Exception):
            self.close()


def topic_positions(topic: str, offsets: Mapping[int, tuple[int, str]]) -> list[ck.TopicPartition]:
    return [
        ck.TopicPartition(topic, partition, offset, metadata=metadata)
        for partition, (offset, metadata) in sorted(offsets.items())
    ]
