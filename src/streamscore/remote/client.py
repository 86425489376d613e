"""HTTP to a model server: the only module that imports httpx (the ``remote`` extra).

One keep-alive connection pool per client, shared by the worker threads. Every request goes
through one retry policy: an outage (connection refused or reset, timeout, 429, any 5xx) is
retried with exponential backoff and jitter behind the server's circuit breaker, then
raised as :class:`RemoteUnavailable`. Other answers are translated here: 400/413/422 (the
server rejects the data) -> :class:`DataRejected`; 401/403 -> RemoteError; 404 -> ModelError.
"""

from __future__ import annotations

import random
import ssl
import threading
from typing import Any

import orjson

from streamscore.errors import ModelError, RemoteError, RemoteUnavailable
from streamscore.remote.breaker import BreakerState, CircuitBreaker, breaker_for
from streamscore.remote.protocol import error_message
from streamscore.remote.settings import RemoteSettings

try:
    import httpx
except ImportError as exc:  # the remote extra is not installed
    raise ModelError(
        "a model URL needs the remote extra",
        hint="pip install 'streamscore[remote]'",
    ) from exc

REJECTED_STATUSES = frozenset({400, 413, 422})


class DataRejected(Exception):
    """The server refused the rows it was sent (4xx about the data); ``message`` is its own."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OipClient:
    """A pooled HTTP client for one server's OIP REST API, with retries and a breaker."""

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
        """Close the pool; requests waiting to retry give up at once."""
        self._closing.set()
        self._http.close()

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
        if code < 300:
            return
        message = error_message(response.content)
        if code in (401, 403):
            raise RemoteError(
                f"model server {self.server} refused access to {what} (HTTP {code})",
                hint="check --header 'Authorization: …' or $STREAMSCORE_REMOTE_TOKEN",
            )
        if code == 404:
            raise ModelError(f"model server {self.server} has no {what}: {message}")
        raise RemoteError(f"model server {self.server} answered HTTP {code} for {what}: {message}")

    def _send(self, method: str, path: str, body: bytes | None, what: str) -> httpx.Response:
        """One request, retried through outages; see the module docstring."""
        s = self.settings
        attempt = 0
        while True:
            delay: float | None = None
            if self.breaker.allow():
                try:
                    response = self._http.request(method, path, content=body)
                except httpx.TimeoutException:
                    failure = f"no answer within {s.timeout_s:g} s"
                except httpx.ConnectError as exc:
                    if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # not an outage: no retry
                        raise RemoteError(
                            f"model server {self.server}: its TLS certificate is not trusted",
                            hint="add the CA that signed it with --ca-file PEM",
                        ) from exc
                    failure = f"ConnectError: {str(exc)[:200] or 'connection failed'}"
                except httpx.TransportError as exc:
                    failure = f"{type(exc).__name__}: {str(exc)[:200] or 'connection failed'}"
                else:
                    code = response.status_code
                    if code != 429 and code < 500:
                        self.breaker.record_success()
                        return response
                    failure = f"HTTP {code}: {error_message(response.content)}"
                    delay = _retry_after(response)
                self.breaker.record_failure()
                if self.breaker.state is BreakerState.open:  # the next try is its probe
                    delay = max(delay or 0.0, self.breaker.remaining_s())
            else:
                failure = "circuit breaker open after repeated failures"
                delay = max(self.breaker.remaining_s(), 0.01)
            if attempt >= s.retries:
                self.breaker.trip()
                raise RemoteUnavailable(
                    f"model server {self.server} unavailable for {what} after "
                    f"{attempt + 1} attempt(s): {failure}",
                    hint="nothing was dead-lettered; a rerun resumes once the server answers",
                )
            backoff = min(s.max_backoff_s, s.backoff_s * 2**attempt)
            if self._closing.wait(delay if delay is not None else backoff * random.uniform(0.5, 1)):
                raise RemoteUnavailable(f"model server {self.server}: stopped while retrying")
            attempt += 1


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), 30.0)
    except ValueError:
        return None
