"""Hot reload of a model on a server: the version that answers ``/v2/models/NAME`` now.

When MODEL is a URL without a version, ``tail`` pins the version that answered at start
(its requests go to ``/v2/models/NAME/versions/V``) and watches the server with a
:class:`ServerFeed`: every ``--reload-interval`` it reads the model's metadata and asks which
version answers the unversioned URL (OIP metadata need not name it: MLServer's does not, so
one row of zeros is scored, as when the model was opened). When that version, or the
signature, changes (a new version loaded on the server), the watcher
(:class:`streamscore.model.watch.ModelWatcher`) checks the new version against recent
records and switches between batches with a ``model_loaded`` event, as for a repository.

The feed polls through its own client: no retries, a short timeout and a circuit breaker of
its own, so a poll during an outage never delays or trips the breaker scoring requests go
through. An outage means "no news": the serving version keeps serving and tail's own outage
handling (pause, probe, resume) applies. A server that names no version cannot be watched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from streamscore.errors import RemoteUnavailable
from streamscore.model.repository import ModelRef
from streamscore.model.watch import Candidate
from streamscore.remote.breaker import CircuitBreaker
from streamscore.remote.model import answering_version, model_ref, scoring_signature
from streamscore.remote.settings import RemoteSettings
from streamscore.remote.transport import connect
from streamscore.remote.url import ModelURL

POLL_TIMEOUT_S = 5.0


class ServerFeed:
    """The version answering an unversioned model URL (a :class:`VersionFeed`)."""

    def __init__(self, url: ModelURL, settings: RemoteSettings) -> None:
        if url.version is not None:
            raise ValueError("a pinned model URL has nothing to watch")
        self.url = url
        self.settings = dataclasses.replace(
            settings, retries=0, timeout_s=min(settings.timeout_s, POLL_TIMEOUT_S)
        )

    @property
    def name(self) -> str:
        return self.url.name

    def candidate(self) -> Candidate | None:
        """The version answering now, with a stamp that changes with it or its signature;
        None during an outage or when the server names no version."""
        client = connect(self.url, self.settings, pool=1, breaker=CircuitBreaker())
        try:
            signature = scoring_signature(self.url, client, self.settings)
            version = answering_version(self.url, client, signature)
        except RemoteUnavailable:
            return None  # no news; scoring requests meet the outage on their own
        finally:
            client.close()
        if not version:
            return None
        ref = model_ref(self.url, version, signature)
        return Candidate(ref.sha256, version, lambda: ref)

    def stamp_of(self, ref: ModelRef) -> Hashable | None:
        return ref.sha256 if ref.server else None
