"""A model on an OIP server that scores like an embedded one (see :mod:`streamscore.remote`).

Work is split so the thread waiting on the network does nothing else: the caller of
:meth:`RemoteModel.submit` (the pipeline's reader thread) encodes the request; a worker
thread of the model's pool only sends it and waits; :meth:`RemoteCall.result` (the scoring
thread) decodes and checks the answer. At most ``concurrency`` requests are in flight, as
many more wait encoded (a worker that gets its answer sends the next at once, without
waiting for the reader thread to wake), and results are taken in submission order, so
scores stay on their rows.

A batch the server rejects as data (HTTP 400/413/422, gRPC INVALID_ARGUMENT & co.) is
split in halves until the rows it refuses are isolated; those rows come back rejected with
the server's message, the others scored.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.errors import ModelError, RemoteError, RemoteUnavailable
from streamscore.model.base import Answer
from streamscore.model.repository import ModelRef
from streamscore.model.signature import ModelSignature
from streamscore.remote.policy import DataRejected
from streamscore.remote.protocol import SIGNATURE_EXAMPLE, parse_signature, signature_from_metadata
from streamscore.remote.settings import RemoteSettings
from streamscore.remote.transport import OipTransport, connect
from streamscore.remote.url import ModelURL

PROVIDER = "remote"


@dataclass
class _Exchange:
    """What the server made of one submitted batch, still undecoded: each answered part as
    (positions into the rows sent, the answer's body), and each refused row with the message."""

    parts: list[tuple[np.ndarray, bytes]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


class RemoteCall:
    """One submitted batch; :meth:`result` waits for it and decodes the answer."""

    def __init__(self, model: RemoteModel, future: Future[_Exchange], names: Sequence[str]) -> None:
        self._model = model
        self._future = future
        self._names = list(names)

    def result(self) -> Answer:
        exchange = self._future.result()
        model = self._model
        decoded = [
            model.decode(body, self._names, len(positions)) for positions, body in exchange.parts
        ]
        kept = (
            np.concatenate([positions for positions, _ in exchange.parts])
            if exchange.parts
            else np.zeros(0, dtype=np.int64)
        )
        values = (
            [np.concatenate([part[i] for part in decoded]) for i in range(len(self._names))]
            if decoded
            else []
        )
        rejected = np.array([position for position, _ in exchange.rejected], dtype=np.int64)
        return Answer(values, kept, rejected, [message for _, message in exchange.rejected])


class RemoteModel:
    """A model served over OIP (REST or gRPC); implements :class:`streamscore.model.base.Model`."""

    provider = PROVIDER

    def __init__(
        self,
        url: ModelURL,
        client: OipTransport,
        signature: ModelSignature,
        settings: RemoteSettings,
        version: str,
    ) -> None:
        self.url = url
        self.client = client
        self.signature = signature
        self.settings = settings
        self.version = version  # pinned: the version that answered at open, or the URL's
        # Submissions pending at most: those on the wire and as many queued behind them.
        self.in_flight = 2 * settings.concurrency
        self.ref = model_ref(url, version, signature)
        self._where = f"model server {url.server} (model {self.ref.label})"
        self._slots = threading.BoundedSemaphore(self.in_flight)
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="streamscore-oip")

    def close(self) -> None:
        """Give up on requests still out (an interrupted run must not wait for retries)."""
        self._closed.set()
        self.client.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def probe(self) -> bool:
        """Does the model answer its readiness endpoint now? A yes closes the breaker, so
        the next request goes out at once."""
        ready = self.client.model_ready(self.url, self.version or None)
        if ready:
            self.client.breaker.record_success()
        return ready

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[Any]:
        """Score every row, blocking; a row the server rejects is an error here."""
        answer = self.submit(output_names, feeds).result()
        if len(answer.rejected):
            row = int(answer.rejected[0])
            raise RemoteError(f"{self._where} rejected row {row}: {answer.messages[0]}")
        return list(answer.values)

    def submit(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> RemoteCall:
        """Encode now, send on a worker thread; blocks while ``in_flight`` calls are out."""
        names = list(output_names)
        body = self.encode(names, feeds)
        while not self._slots.acquire(timeout=0.1):
            if self._closed.is_set():
                raise RemoteUnavailable(f"{self._where}: closed")
        try:
            future = self._pool.submit(self._exchange, names, feeds, body)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return RemoteCall(self, future, names)

    def encode(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> bytes:
        """The request scoring ``feeds`` (on the caller's thread)."""
        return self.client.encode(self.url, self.version or None, self.signature, feeds, names)

    def send(self, body: bytes) -> bytes:
        """Send an encoded request to the pinned version, retrying outages; its answer."""
        return self.client.infer(self.url, self.version or None, body)

    def decode(self, body: bytes, names: Sequence[str], rows: int) -> list[np.ndarray]:
        """Check and decode one answer of ``rows`` rows (on the scoring thread)."""
        values, answered = self.client.decode(body, self.signature, names, rows, self._where)
        if self.version and answered and answered != self.version:
            raise RemoteError(
                f"{self._where} answered with version {answered}; this run is pinned to "
                f"{self.version}"
            )
        return values

    def _exchange(self, names: list[str], feeds: dict[str, np.ndarray], body: bytes) -> _Exchange:
        rows = len(next(iter(feeds.values())))
        exchange = _Exchange()
        self._send(names, feeds, body, np.arange(rows, dtype=np.int64), exchange)
        return exchange

    def _send(
        self,
        names: list[str],
        feeds: dict[str, np.ndarray],
        body: bytes | None,
        positions: np.ndarray,
        exchange: _Exchange,
    ) -> None:
        if body is None:
            body = self.encode(names, feeds)
        try:
            exchange.parts.append((positions, self.send(body)))
            return
        except DataRejected as exc:
            if len(positions) == 1:
                exchange.rejected.append((int(positions[0]), f"{self._where}: {exc.message}"))
                return
        half = len(positions) // 2
        for part in (slice(0, half), slice(half, None)):
            sub = {name: values[part] for name, values in feeds.items()}
            self._send(names, sub, None, positions[part], exchange)


def model_ref(url: ModelURL, version: str, signature: ModelSignature) -> ModelRef:
    described = {
        "server": url.server,
        "name": url.name,
        "version": version,
        "inputs": [spec.describe() for spec in signature.inputs],
        "outputs": [spec.describe() for spec in signature.outputs],
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return ModelRef(url.name, version, Path(), digest, 0, server=url.server)


def _probe_feeds(signature: ModelSignature) -> dict[str, np.ndarray]:
    """One row of zeros (empty strings) shaped like the inputs: enough to learn the version."""
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        dtype = spec.dtype
        if dtype is None:
            raise ModelError(f"model input '{spec.name}' has type {spec.type}, not supported")
        shape = [1] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
        feeds[spec.name] = np.full(shape, "" if dtype.kind == "O" else 0, dtype=dtype)
    return feeds


def server_signature(url: ModelURL, client: OipTransport) -> tuple[ModelSignature, dict[str, Any]]:
    """The signature the server publishes for ``url``, and its raw metadata."""
    what = f"model {url.name}" + (f" version {url.version}" if url.version else "")
    metadata = client.metadata(url, what)
    return signature_from_metadata(metadata, f"model server {url.server}"), metadata


def open_remote_model(spec: str, settings: RemoteSettings) -> RemoteModel:
    """Connect to MODEL's server, read the signature and pin the version that answers."""
    url = ModelURL.parse(spec)
    client = connect(url, settings)
    try:
        signature = scoring_signature(url, client, settings)
        version = url.version or answering_version(url, client, signature)
    except BaseException:
        client.close()
        raise
    return RemoteModel(url, client, signature, settings, version)


def scoring_signature(
    url: ModelURL, client: OipTransport, settings: RemoteSettings
) -> ModelSignature:
    """The signature to score ``url`` with: the user's ``--signature`` when given, else the
    one the server publishes (ModelError when it publishes none)."""
    signature, _ = server_signature(url, client)
    if settings.signature_text is not None:
        return parse_signature(settings.signature_text)
    if settings.signature is not None:
        from streamscore.model.repository import resolve_model
        from streamscore.model.session import load_model

        return load_model(resolve_model(settings.signature), provider="cpu").signature
    if not signature.inputs or not signature.outputs:
        raise ModelError(
            f"model server {url.server} publishes no signature for model {url.name} "
            "(MLServer publishes only what a model's settings declare)",
            hint="give a local copy of the model with --signature FILE.onnx, or its tensors "
            f"as --signature {SIGNATURE_EXAMPLE}",
        )
    return signature


def answering_version(url: ModelURL, client: OipTransport, signature: ModelSignature) -> str:
    """The version that answers ``/v2/models/NAME`` now ('' if the server does not say)."""
    names = signature.output_names()
    body = client.encode(url, None, signature, _probe_feeds(signature), names)
    try:
        answer = client.infer(url, None, body)
    except DataRejected:
        return ""
    _, version = client.decode(answer, signature, names, 1, f"model server {url.server}")
    return version


def inspect_remote_model(spec: str, settings: RemoteSettings) -> dict[str, Any]:
    """What ``models inspect URL`` shows: the server's metadata, readiness, answering version."""
    url = ModelURL.parse(spec)
    client = connect(url, settings, pool=1)
    try:
        signature, metadata = server_signature(url, client)
        version = url.version or ""
        if not version and signature.inputs and signature.outputs:
            version = answering_version(url, client, signature)
        return {
            "server": url.server,
            "name": url.name,
            "version": version,
            "ready": client.model_ready(url, url.version),
            "server_ready": client.server_ready(),
            "platform": signature.producer,
            "versions": [str(v) for v in metadata.get("versions") or []],
            "signature_published": bool(signature.inputs and signature.outputs),
            "inputs": [_tensor(s) for s in signature.inputs],
            "outputs": [_tensor(s) for s in signature.outputs],
        }
    finally:
        client.close()


def _tensor(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "type": spec.type, "shape": list(spec.shape)}
