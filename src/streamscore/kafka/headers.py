"""Headers stamped on every record streamscore writes: which model scored it, from where.

Outputs carry the model (name, version, sha256; the server for a remote model; for a registry
model also the registry, alias and run id) and the source record (topic, partition, offset);
dead letters carry the same plus the error type and message. Values are UTF-8.
"""

from __future__ import annotations

from streamscore.kafka.client import Headers
from streamscore.model.repository import ModelRef

MODEL = "streamscore.model"
MODEL_VERSION = "streamscore.model.version"
MODEL_SHA256 = "streamscore.model.sha256"
MODEL_SERVER = "streamscore.model.server"  # only for a model on a server: its base URL
MODEL_REGISTRY = "streamscore.model.registry"
MODEL_ALIAS = "streamscore.model.alias"
MODEL_RUN_ID = "streamscore.model.run_id"
_LINEAGE = {"registry": MODEL_REGISTRY, "alias": MODEL_ALIAS, "run_id": MODEL_RUN_ID}
SOURCE_TOPIC = "streamscore.source.topic"
SOURCE_PARTITION = "streamscore.source.partition"
SOURCE_OFFSET = "streamscore.source.offset"
ERROR_TYPE = "streamscore.error.type"
ERROR_MESSAGE = "streamscore.error.message"

_MAX_MESSAGE_BYTES = 1000


class HeaderStamp:
    """Builds the headers of records scored by one model from one source topic."""

    def __init__(self, model: ModelRef, source_topic: str) -> None:
        self.model = model
        self.source_topic = source_topic
        self._base: Headers = [
            (MODEL, model.name.encode()),
            (MODEL_VERSION, model.version.encode()),
            (MODEL_SHA256, model.sha256.encode()),
            *((_LINEAGE[key], value.encode()) for key, value in model.lineage.items()),
            (SOURCE_TOPIC, source_topic.encode()),
        ]
        if model.server:
            self._base.append((MODEL_SERVER, model.server.encode()))
        self._partitions: dict[int, bytes] = {}

    def output(self, partition: int, offset: int) -> Headers:
        """Headers of the scored output of the record at ``partition``/``offset``."""
        encoded = self._partitions.get(partition)
        if encoded is None:
            encoded = self._partitions[partition] = str(partition).encode()
        return [*self._base, (SOURCE_PARTITION, encoded), (SOURCE_OFFSET, b"%d" % offset)]

    def dead_letter(self, partition: int, offset: int, kind: str, message: str) -> Headers:
        """Headers of a dead letter: the output headers plus the error type and message."""
        text = message.encode()[:_MAX_MESSAGE_BYTES]
        return [*self.output(partition, offset), (ERROR_TYPE, kind.encode()), (ERROR_MESSAGE, text)]


def header_dict(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers as ``{name: text}`` (the last value of a repeated name wins); for readers."""
    return {name: (value or b"").decode(errors="replace") for name, value in headers or []}
