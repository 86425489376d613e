"""Remote models: score through a model server speaking the Open Inference Protocol (KServe v2).

MODEL may be ``http(s)://HOST:PORT/v2/models/NAME`` (the version the server serves now, pinned
for the run) or ``.../v2/models/NAME/versions/VERSION`` over REST, or the same with
``grpc://`` or ``grpcs://`` over gRPC. The signature comes from the server's metadata; each
micro-batch is one request; outages are retried with backoff behind a circuit breaker shared
by every model of one server in the process.

Modules: ``url`` (parsing MODEL), ``settings`` (headers, TLS, timeouts, concurrency),
``protocol`` (OIP datatypes, JSON requests, response checks), ``breaker`` (the circuit
breaker), ``policy`` (the retry policy and how failures are read, for both transports),
``transport`` (what a model needs from a server; picks the transport), ``client`` (REST, the
only module that imports httpx), ``grpc_client`` and ``grpc_messages`` (gRPC, the only
modules that import grpc and protobuf) and ``model`` (a :class:`RemoteModel` that scores like
an embedded one). REST needs the ``remote`` extra, gRPC the ``grpc`` extra; nothing here is
imported until MODEL is a URL.
"""

from streamscore.remote.url import ModelURL, is_model_url

__all__ = ["ModelURL", "is_model_url"]
