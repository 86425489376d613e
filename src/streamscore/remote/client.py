"""OIP over REST: the only module that imports httpx (the ``remote`` extra).

One keep-alive connection pool per client, shared by the worker threads. Every request goes
through the retry policy of :mod:`streamscore.remote.policy`: an outage (connection refused
or reset, timeout, 429, any 5xx) is retried with backoff behind the server's circuit
breaker. Other answers are read there too: 400/413/422 (the server rejects the data) ->
DataRejected; 401/403 -> RemoteError; 404 -> ModelError.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from streamscore.errors import ModelError, RemoteError
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
from streamscore.remote.protocol import decode_response, encode_request, error_message
from streamscore.remote.settings import RemoteSettings
from streamscore.remote.url import ModelURL

try:
    import httpx
except ImportError as exc:  # the remote extra is not installed
    raise ModelError(
        "a model URL needs the remote extra",
        hint="pip install 'streamscore[remote]'",
    ) from exc

REJECTED_STATUSES = frozenset({400, 413, 422})
_REFUSALS = {401: Refusal.access, 403: Refusal.access, 404: Refusal.missing}


class OipClient:
    """A pooled HTTP client for one server's OIP REST API (an :class:`OipTransport`)."""

    def __init__(
        self,
        server: str,
        settings: RemoteSettings,
        *,
        pool: int | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.server = server
        self.settings = settings
        # The process-wide breaker of the server, unless the caller keeps its own (a watcher
        # polling for new versions must not open the breaker the scoring requests go through).
        self.breaker: CircuitBreaker = breaker or breaker_for(server)
        # TLS verification is always on for https; plain http skips building an SSL context
        # (tens of milliseconds) it would never use, as redirects are not followed.
        verify: bool | ssl.SSLContext = server.startswith("https://")
        if verify and settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        self._closing = threading.Event()
        connections = pool or settings.concurrency + 1
        self._http = httpx.Client(
            base_url=server,
            headers=settings.request_headers(),
            verify=verify,
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def close(self) -> None:
        self._closing.set()
        self._http.close()

    def metadata(self, url: ModelURL, what: str) -> dict[str, Any]:
        return self.get_json(url.model_path(), what)

    def model_ready(self, url: ModelURL, version: str | None) -> bool:
        return self.is_ready(url.model_path(version) + "/ready")

    def server_ready(self) -> bool:
        return self.is_ready("/v2/health/ready")

    def encode(
        self,
        url: ModelURL,
        version: str | None,
        signature: ModelSignature,
        arrays: Mapping[str, np.ndarray],
        outputs: Sequence[str],
    ) -> bytes:
        return encode_request(signature, arrays, outputs)

    def infer(self, url: ModelURL, version: str | None, request: bytes) -> bytes:
        return self.post(url.model_path(version) + "/infer", request, "infer")

    def decode(
        self,
        answer: bytes,
        signature: ModelSignature,
        outputs: Sequence[str],
        rows: int,
        where: str,
    ) -> tuple[list[np.ndarray], str]:
        return decode_response(answer, signature, outputs, rows, where)

    def get_json(self, path: str, what: str) -> dict[str, Any]:
        """``GET path`` as JSON; ``what`` names the resource in errors."""
        response = self._send("GET", path, None, what)
        self._raise_for_status(response, what)
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise RemoteError(f"model server {self.server} answered {what} with no JSON") from exc
        if not isinstance(answer, dict):
            raise RemoteError(f"model server {self.server} answered {what} with no JSON object")
        return answer

    def is_ready(self, path: str) -> bool:
        """``GET path`` answers 200 (readiness endpoints answer 200 or an error status)."""
        try:
            response = self._http.get(path)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def post(self, path: str, body: bytes, what: str) -> bytes:
        """``POST path`` with a JSON body; the answer's body (raises DataRejected on 4xx)."""
        response = self._send("POST", path, body, what)
        if response.status_code in REJECTED_STATUSES:
            raise DataRejected(error_message(response.content))
        self._raise_for_status(response, what)
        return response.content

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        code = response.status_code
        if code >= 300:
            kind = _REFUSALS.get(code, Refusal.other)
            raise refusal(kind, self.server, what, f"HTTP {code}", error_message(response.content))

    def _send(self, method: str, path: str, body: bytes | None, what: str) -> httpx.Response:
        """One request, retried through outages (:func:`with_retries`)."""

        def attempt() -> httpx.Response:
            try:
                response = self._http.request(method, path, content=body)
            except httpx.TimeoutException:
                raise Outage(f"no answer within {self.settings.timeout_s:g} s") from None
            except httpx.ConnectError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # not an outage: no retry
                    raise untrusted(self.server) from exc
                raise Outage(f"ConnectError: {str(exc)[:200] or 'connection failed'}") from None
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {str(exc)[:200] or 'connection failed'}"
                raise Outage(failure) from None
            code = response.status_code
            if code == 429 or code >= 500:
                failure = f"HTTP {code}: {error_message(response.content)}"
                raise Outage(failure, _retry_after(response))
            return response

        return with_retries(
            attempt,
            server=self.server,
            what=what,
            settings=self.settings,
            breaker=self.breaker,
            closing=self._closing,
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), 30.0)
    except ValueError:
        return None
