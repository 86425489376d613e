"""How to talk to a model server: headers (secrets masked), TLS, timeouts, retries, concurrency."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from streamscore.errors import UsageError

TOKEN_ENV = "STREAMSCORE_REMOTE_TOKEN"  # sent as "Authorization: Bearer <token>"
# Headers of the HTTP request that gRPC writes itself (it refuses them as metadata).
_HTTP_ONLY = frozenset({"content-type", "accept-encoding", "te", "host", "connection"})


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` -> ``("Name", "value")``; the value is never echoed in errors."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise UsageError(  # the text may be a secret: never echo it
            "a --header is not 'Name: value' (its text is not shown, it may be a secret)",
            hint="e.g. --header 'Authorization: Bearer TOKEN'",
        )
    return name.strip(), value.strip()


@dataclass(frozen=True)
class RemoteSettings:
    """Options of a remote model; ``headers`` values never show in repr, logs or errors.

    ``timeout_s`` bounds each request; an outage (connection refused, timeout, 429, 5xx) is
    retried ``retries`` times with exponential backoff and jitter from ``backoff_s`` up to
    ``max_backoff_s``. ``concurrency`` requests are in flight at most. ``signature`` is a
    local ONNX file whose inputs and outputs describe a server that publishes none, and
    ``signature_text`` the same as text (:func:`streamscore.remote.protocol.parse_signature`).
    """

    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    ca_file: Path | None = None
    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    concurrency: int = 4
    signature: Path | None = None
    signature_text: str | None = None

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise UsageError(f"--timeout must be positive, got {self.timeout_s}")
        if self.retries < 0:
            raise UsageError(f"--retries must be 0 or more, got {self.retries}")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise UsageError(f"--ca-file {self.ca_file} is not a file")
        if self.signature_text is not None:
            from streamscore.remote.protocol import parse_signature  # numpy: only when given

            parse_signature(self.signature_text)  # a mistake shows now, in one line

    @classmethod
    def build(
        cls,
        headers: list[str] | None = None,
        *,
        ca_file: Path | None = None,
        timeout_s: float = 30.0,
        retries: int = 5,
        concurrency: int = 4,
        signature: str | Path | None = None,
    ) -> RemoteSettings:
        """Settings from CLI values; ``Name: value`` headers parsed here, and ``signature``
        taken as text when it holds ``->`` (else as an ONNX file)."""
        text = signature if isinstance(signature, str) and "->" in signature else None
        return cls(
            headers=tuple(parse_header(text) for text in headers or ()),
            ca_file=ca_file,
            timeout_s=timeout_s,
            retries=retries,
            concurrency=concurrency,
            signature=None if signature is None or text is not None else Path(signature),
            signature_text=text,
        )

    def request_headers(self) -> dict[str, str]:
        """The headers to send, with $STREAMSCORE_REMOTE_TOKEN read now (not at import).

        Answers are asked for uncompressed: servers that compress (MLServer gzips every
        answer over 1 KB by default) spend more CPU on it than the network saves near the
        server; ``--header 'Accept-Encoding: gzip'`` asks for compression again.
        """
        sent = {"content-type": "application/json", "accept-encoding": "identity"}
        token = os.environ.get(TOKEN_ENV)
        if token:
            sent["authorization"] = f"Bearer {token}"
        given = {name.lower() for name, _ in self.headers}  # the user's headers win
        sent = {name: value for name, value in sent.items() if name not in given}
        sent.update(self.headers)
        return sent

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """The headers as gRPC metadata (lower-case keys): the token from $STREAMSCORE_REMOTE_TOKEN
        and every ``--header``, less those HTTP/2 and gRPC keep for themselves."""
        sent = {
            name: value
            for name, value in self.request_headers().items()
            if name.lower() not in _HTTP_ONLY and not name.lower().startswith("grpc-")
        }
        return tuple((name.lower(), value) for name, value in sent.items())

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.headers)
        return (
            f"RemoteSettings(headers=[{names}] (values hidden), ca_file={self.ca_file}, "
            f"timeout_s={self.timeout_s}, retries={self.retries}, concurrency={self.concurrency}, "
            f"signature={self.signature_text or self.signature})"
        )
