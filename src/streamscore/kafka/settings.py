"""Kafka connection settings: bootstrap servers plus raw librdkafka properties, secrets hidden.

Properties come from ``-X key=value`` (as kcat takes them) and ``--config FILE`` (a Java
``.properties`` file, as Kafka's own tools take them; ``sasl.jaas.config`` credentials are
turned into librdkafka's ``sasl.username``/``sasl.password``). Secret values never appear in
the settings' repr, and :meth:`KafkaSettings.redact` removes them from any text. Pure: this
module does not load librdkafka (``streamscore.kafka.client`` does).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamscore.errors import UsageError

BOOTSTRAP_ENV = "STREAMSCORE_BOOTSTRAP_SERVERS"
DEFAULT_CONNECT_TIMEOUT_S = 10.0

_SECRET_WORDS = (
    "password",
    "secret",
    "jaas",
    "token",
    "credential",
    "private",
    "key.pem",
    "oauthbearer",
)
_MASK = "***"


def is_secret(key: str) -> bool:
    """True for properties whose value must never be shown (passwords, keys, tokens)."""
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


@dataclass(frozen=True, repr=False)
class KafkaSettings:
    """Where the cluster is and how to talk to it; ``properties`` go to librdkafka as they are.

    Build it with :meth:`resolve`, which reads the environment when it is called.
    """

    bootstrap_servers: str
    properties: tuple[tuple[str, str], ...] = ()
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise UsageError("the Kafka bootstrap servers are empty", hint="give HOST:PORT")
        if self.connect_timeout_s <= 0:
            raise UsageError(
                f"the Kafka connect timeout must be positive, got {self.connect_timeout_s}"
            )

    @classmethod
    def resolve(
        cls,
        bootstrap_servers: str | None = None,
        overrides: Sequence[str] = (),
        config_file: Path | None = None,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> KafkaSettings:
        """Combine ``--config FILE``, then ``-X key=value`` (later wins), then the bootstrap.

        The bootstrap address is ``bootstrap_servers``, else ``bootstrap.servers`` from -X or
        the file, else the ``STREAMSCORE_BOOTSTRAP_SERVERS`` environment variable.
        """
        properties: dict[str, str] = {}
        if config_file is not None:
            properties.update(read_properties_file(config_file))
        properties.update(parse_overrides(overrides))
        from_properties = properties.pop("bootstrap.servers", None)
        bootstrap = bootstrap_servers or from_properties or os.environ.get(BOOTSTRAP_ENV)
        if not bootstrap:
            raise UsageError(
                "no Kafka bootstrap servers given",
                hint=f"pass --bootstrap-servers HOST:PORT or set {BOOTSTRAP_ENV}",
            )
        return cls(bootstrap, tuple(sorted(properties.items())), connect_timeout_s)

    def as_librdkafka_dict(self) -> dict[str, str]:
        """The configuration librdkafka takes: bootstrap.servers and every property."""
        return {"bootstrap.servers": self.bootstrap_servers, **dict(self.properties)}

    def redact(self, text: str) -> str:
        """``text`` with every secret property value replaced by ``***``."""
        for key, value in self.properties:
            if value and is_secret(key):
                text = text.replace(value, _MASK)
        return text

    def __repr__(self) -> str:
        shown = {key: _MASK if is_secret(key) else value for key, value in self.properties}
        return (
            f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, properties={shown!r}, "
            f"connect_timeout_s={self.connect_timeout_s!r})"
        )

    __str__ = __repr__


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` (repeated ``-X`` options) -> a dict; later keys win."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Show only what cannot be a secret: "sasl.password:hunter2" must not be echoed.
            name = re.split(r"[:=\s]", item.strip(), maxsplit=1)[0]
            raise UsageError(f"-X takes key=value, got {name!r} without '='")
        parsed[key.strip()] = value  # values are kept exactly: passwords may hold spaces
    return parsed


def read_properties_file(path: Path) -> dict[str, str]:
    """Read a Java ``.properties`` client configuration (SASL/SSL settings) for librdkafka."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read Kafka config {path}: {exc.strerror}") from None
    return translate_java_properties(parse_properties(text))


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped = match.group(1)
        if escaped.startswith("u"):
            return chr(int(escaped[1:], 16))
        return _ESCAPES.get(escaped, escaped)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", replace, text)


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = raw.lstrip() if pending else raw.strip()
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:  # an odd number of backslashes continues the line
            pending += line[:-1]
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java properties: ``key=value``, ``key: value`` or ``key value``; # and ! comments."""
    parsed: dict[str, str] = {}
    for line in _logical_lines(text):
        match = re.match(r"((?:\\.|[^=:\s\\])+)\s*[=:\s]\s*(.*)$", line)
        if match:
            key, value = match.group(1), match.group(2)
        else:
            key, value = line, ""
        parsed[_unescape(key)] = _unescape(value)
    return parsed


def translate_java_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """Turn Java-only client settings into librdkafka ones (``sasl.jaas.config`` credentials)."""
    out = dict(properties)
    jaas = out.pop("sasl.jaas.config", None)
    if jaas is not None:
        for field in ("username", "password"):
            match = re.search(rf'\b{field}\s*=\s*"((?:[^"\\]|\\.)*)"', jaas)
            if match:
                out.setdefault(f"sasl.{field}", match.group(1))
    return out
