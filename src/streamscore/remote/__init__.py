"""Remote models: score through a model server speaking the Open Inference Protocol (KServe v2).

MODEL may be ``http(s)://HOST:PORT/v2/models/NAME`` (the version the server serves now, pinned
for the run) or ``.../v2/models/NAME/versions/VERSION``. The signature comes from the server's
metadata endpoint; each micro-batch is one REST request; outages are retried with backoff
behind a circuit breaker shared by every model of one server in the process.

Modules: ``url`` (parsing MODEL), ``settings`` (headers, TLS, timeouts, concurrency),
``protocol`` (OIP JSON: datatypes, request encoding, response checks), ``breaker`` (the
circuit breaker), ``client`` (the only module that imports httpx) and ``model`` (a
:class:`RemoteModel` that scores like an embedded one). Needs the ``remote`` extra
(``pip install 'streamscore[remote]'``); nothing here is imported until MODEL is a URL.
"""

from streamscore.remote.url import ModelURL, is_model_url

__all__ = ["ModelURL", "is_model_url"]
