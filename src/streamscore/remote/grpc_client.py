"""OIP over gRPC: the only module that imports grpc (the ``grpc`` extra).

One channel per client (HTTP/2: every worker thread's request is multiplexed on it), the
methods of ``inference.GRPCInferenceService`` called generically with the message classes of
:mod:`streamscore.remote.grpc_messages`. Tensors travel as ``raw_input_contents`` (little-
endian bytes, BYTES as 4-byte length + value), which a server decodes far faster than typed
lists; answers are read from ``raw_output_contents`` or, from servers that send them, the
typed ``contents``. ``--header`` values and the token go as call metadata; ``grpcs://`` is
TLS, verified against the system's CAs or ``--ca-file``.

Status codes are read as REST's answers are (:mod:`streamscore.remote.policy`):
UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN, CANCELLED
and DATA_LOSS (a server away or failing, as HTTP 5xx) are outages, retried; an inference
answered INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE rejects the data (MLServer
answers its HTTP 400 and 422 errors with the first two); UNAUTHENTICATED/PERMISSION_DENIED,
NOT_FOUND and UNIMPLEMENTED are configuration errors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from streamscore.errors import ModelError, RemoteError, RemoteUnavailable
from streamscore.model.signature import ModelSignature
from streamscore.remote.breaker import CircuitBreaker, breaker_for
from streamscore.remote.policy import (
    DataRejected,
    Outage,
    Refusal,
    refusal,
    untrusted,
    with_retries,
)
from streamscore.remote.protocol import AnsweredTensor, checked_outputs, datatype_of, numpy_dtype
from streamscore.remote.settings import RemoteSettings
from streamscore.remote.url import ModelURL

try:
    import grpc

    from streamscore.remote import grpc_messages as pb
except ImportError as exc:  # the grpc extra is not installed
    raise ModelError(
        "a grpc:// model URL needs the grpc extra",
        hint="pip install 'streamscore[grpc]'",
    ) from exc

_OUTAGES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DATA_LOSS,
    }
)
_REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
_REFUSALS = {
    grpc.StatusCode.UNAUTHENTICATED: Refusal.access,
    grpc.StatusCode.PERMISSION_DENIED: Refusal.access,
    grpc.StatusCode.NOT_FOUND: Refusal.missing,
    grpc.StatusCode.UNIMPLEMENTED: Refusal.unsupported,
}
# Typed contents field per datatype, for servers that do not answer raw (FP16 has none).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
READY_TIMEOUT_S = 5.0
RECONNECT_INITIAL_MS = 200
RECONNECT_MAX_MS = 2000
_METHODS = ("ServerReady", "ModelReady", "ModelMetadata", "ModelInfer")


class GrpcOipClient:
    """One channel to a server's ``GRPCInferenceService`` (an :class:`OipTransport`)."""

    def __init__(
        self, server: str, settings: RemoteSettings, *, breaker: CircuitBreaker | None = None
    ) -> None:
        self.server = server
        self.settings = settings
        self.breaker: CircuitBreaker = breaker or breaker_for(server)
        target = ModelURL(server, "").target
        # No message size limit of our own: --batch-size bounds a request, the server its answer.
        # Reconnects are tried within RECONNECT_MAX_MS: gRPC's own backoff grows to 2 minutes,
        # which would keep a server that is back unused; our retries and breaker pace the load.
        options = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
        ]
        if server.startswith("grpcs://"):
            roots = settings.ca_file.read_bytes() if settings.ca_file is not None else None
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = settings.grpc_metadata()
        self._closing = threading.Event()
        # Requests and answers cross as bytes: encoded and decoded off the waiting thread.
        self._calls: dict[str, Callable[..., bytes]] = {
            name: self._channel.unary_unary(f"{pb.SERVICE}/{name}") for name in _METHODS
        }

    def close(self) -> None:
        self._closing.set()
        self._channel.close()

    def metadata(self, url: ModelURL, what: str) -> dict[str, Any]:
        request = pb.ModelMetadataRequest(name=url.name, version=url.version or "")
        answer = _parse(pb.ModelMetadataResponse, self._call("ModelMetadata", request, what))
        if answer is None:
            raise RemoteError(f"model server {self.server} answered {what} with no metadata")
        return {
            "name": answer.name,
            "versions": list(answer.versions),
            "platform": answer.platform,
            "inputs": [_tensor_metadata(t) for t in answer.inputs],
            "outputs": [_tensor_metadata(t) for t in answer.outputs],
        }

    def model_ready(self, url: ModelURL, version: str | None) -> bool:
        request = pb.ModelReadyRequest(name=url.name, version=_version(url, version))
        return self._ready("ModelReady", request, pb.ModelReadyResponse)

    def server_ready(self) -> bool:
        return self._ready("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse)

    def encode(
        self,
        url: ModelURL,
        version: str | None,
        signature: ModelSignature,
        arrays: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> bytes:
        request = pb.ModelInferRequest(model_name=url.name, model_version=_version(url, version))
        for name, array in arrays.items():
            datatype = datatype_of(signature.input(name))
            request.inputs.add(name=name, datatype=datatype, shape=array.shape)
            request.raw_input_contents.append(raw_bytes(array, datatype))
        for name in outputs:
            request.outputs.add(name=name)
        return bytes(request.SerializeToString())

    def infer(self, url: ModelURL, version: str | None, request: bytes) -> bytes:
        return self._call("ModelInfer", request, "infer", data=True)

    def decode(
        self,
        answer: bytes,
        signature: ModelSignature,
        outputs: Sequence[str],
        rows: int,
        where: str,
    ) -> tuple[list[np.ndarray], str]:
        response = _parse(pb.ModelInferResponse, answer)
        raw = list(response.raw_output_contents) if response is not None else []
        if response is None or (raw and len(raw) != len(response.outputs)):
            raise RemoteError(f"{where} answered something that is not an OIP response")
        tensors = {
            t.name: AnsweredTensor(
                t.name, t.datatype, list(t.shape), _values(raw[i] if raw else None, t.contents)
            )
            for i, t in enumerate(response.outputs)
        }
        return checked_outputs(tensors, signature, outputs, rows, where), response.model_version

    def _ready(self, method: str, request: Any, answer_type: Any) -> bool:
        try:
            answer = self._calls[method](
                request.SerializeToString(),
                timeout=min(self.settings.timeout_s, READY_TIMEOUT_S),
                metadata=self._metadata,
            )
        except grpc.RpcError:
            return False
        parsed = _parse(answer_type, answer)
        return bool(parsed is not None and parsed.ready)

    def _call(self, method: str, request: Any, what: str, *, data: bool = False) -> bytes:
        """One call, retried through outages; ``data``: INVALID_ARGUMENT & co. reject the rows."""
        body = request if isinstance(request, bytes) else request.SerializeToString()

        def attempt() -> bytes:
            try:
                return self._calls[method](
                    body, timeout=self.settings.timeout_s, metadata=self._metadata
                )
            except grpc.RpcError as exc:
                code, message = _status(exc)
            except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
                if not self._closing.is_set():
                    raise
                raise RemoteUnavailable(f"model server {self.server}: closed") from exc
            if "CERTIFICATE_VERIFY_FAILED" in message:  # not an outage: no retry
                raise untrusted(self.server)
            if code in _OUTAGES:
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise Outage(f"no answer within {self.settings.timeout_s:g} s")
                raise Outage(f"gRPC {code.name}: {message}")
            if data and code in _REJECTED:
                raise DataRejected(message)
            kind = _REFUSALS.get(code, Refusal.other)
            raise refusal(kind, self.server, what, f"gRPC {code.name}", message)

        return with_retries(
            attempt,
            server=self.server,
            what=what,
            settings=self.settings,
            breaker=self.breaker,
            closing=self._closing,
        )


def _version(url: ModelURL, version: str | None) -> str:
    """The version to ask for: ``version``, else the URL's, else '' (the one served)."""
    return version if version is not None else url.version or ""


def _status(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code of a failed call and the server's message, one line, short."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    text = str(details or "").strip()
    line = text.splitlines()[0][:300] if text else "no message"
    return code or grpc.StatusCode.UNKNOWN, line


def _parse(message_type: Any, body: bytes) -> Any:
    try:
        return message_type.FromString(body)
    except Exception:  # google.protobuf.message.DecodeError, or bytes of another message
        return None


def _tensor_metadata(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    """A tensor as OIP raw contents: little-endian values in row-major order; BYTES as a
    4-byte little-endian length before each value (str values UTF-8 encoded)."""
    if datatype == "BYTES":
        parts = []
        for value in array.ravel().tolist():
            encoded = value if isinstance(value, bytes) else str(value).encode()
            parts += [len(encoded).to_bytes(4, "little"), encoded]
        return b"".join(parts)
    dtype = numpy_dtype(datatype).newbyteorder("<")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def from_raw_bytes(raw: bytes, datatype: str) -> np.ndarray:
    """The flat values of raw contents (BYTES values decoded as UTF-8 text); ValueError when
    the bytes do not hold whole values."""
    if datatype != "BYTES":
        little_endian: np.dtype[Any] = numpy_dtype(datatype).newbyteorder("<")
        values: np.ndarray = np.frombuffer(raw, dtype=little_endian)
        return np.array(values)  # a copy that owns its memory, writable
    texts, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "little")
        if offset + 4 + size > len(raw):
            raise ValueError("a BYTES value runs past the end of its tensor")
        texts.append(raw[offset + 4 : offset + 4 + size].decode(errors="replace"))
        offset += 4 + size
    return np.array(texts, dtype=object)


def _values(raw: bytes | None, contents: Any) -> Callable[[str], np.ndarray]:
    def values(datatype: str) -> np.ndarray:
        if raw is not None:
            return from_raw_bytes(raw, datatype)
        typed = list(getattr(contents, _CONTENTS[datatype]))  # KeyError: FP16 has no field
        if datatype == "BYTES":
            return np.array([v.decode(errors="replace") for v in typed], dtype=object)
        return np.asarray(typed, dtype=numpy_dtype(datatype))

    return values
