"""What a model needs from a server, whatever carries it: REST (httpx) or gRPC (grpcio).

:func:`connect` picks the transport from MODEL's scheme (``http``/``https`` -> REST,
``grpc``/``grpcs`` -> gRPC) and imports its library only then. Both transports share the
retry policy, circuit breaker and failure reading of :mod:`streamscore.remote.policy`, and
the response checks of :mod:`streamscore.remote.protocol`; they differ only in how bytes
travel. Requests are encoded by the caller (:meth:`OipTransport.encode`, the reader thread),
sent by a worker thread (:meth:`OipTransport.infer`) and decoded by the scoring thread
(:meth:`OipTransport.decode`), so the thread waiting on the network does nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from streamscore.model.signature import ModelSignature
from streamscore.remote.breaker import CircuitBreaker
from streamscore.remote.settings import RemoteSettings
from streamscore.remote.url import ModelURL


class OipTransport(Protocol):
    """One server's OIP API: thread-safe, one connection pool or channel, retries built in."""

    server: str
    breaker: CircuitBreaker

    def close(self) -> None:
        """Close the connections; requests waiting to retry give up at once."""

    def metadata(self, url: ModelURL, what: str) -> dict[str, Any]:
        """The model's metadata in OIP's JSON shape (name, versions, platform, inputs, outputs)."""

    def model_ready(self, url: ModelURL, version: str | None) -> bool:
        """Does the model (that version, or the one served) say it is ready? No retries."""

    def server_ready(self) -> bool:
        """Does the server say it is ready? No retries."""

    def encode(
        self,
        url: ModelURL,
        version: str | None,
        signature: ModelSignature,
        arrays: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> bytes:
        """An inference request for ``arrays`` (model feeds), asking for ``outputs``."""

    def infer(self, url: ModelURL, version: str | None, request: bytes) -> bytes:
        """Send an encoded request; the answer undecoded (raises DataRejected)."""

    def decode(
        self,
        answer: bytes,
        signature: ModelSignature,
        outputs: Sequence[str],
        rows: int,
        where: str,
    ) -> tuple[list[np.ndarray], str]:
        """The requested outputs of ``rows`` rows, checked, and the model_version that answered."""


def connect(
    url: ModelURL,
    settings: RemoteSettings,
    *,
    pool: int | None = None,
    breaker: CircuitBreaker | None = None,
) -> OipTransport:
    """A transport to ``url``'s server (``pool``: connections; ``breaker``: a private one)."""
    if url.is_grpc:
        from streamscore.remote.grpc_client import GrpcOipClient  # grpcio: only for grpc://

        return GrpcOipClient(url.server, settings, breaker=breaker)
    from streamscore.remote.client import OipClient  # httpx: only for http(s)://

    return OipClient(url.server, settings, pool=pool, breaker=breaker)
