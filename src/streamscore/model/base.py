"""What every model offers, embedded or remote, and the one place MODEL is opened.

An embedded model (:class:`streamscore.model.session.LoadedModel`) runs in the process; a
remote one (:class:`streamscore.remote.model.RemoteModel`) runs on a model server. Both have
a reference (lineage), a signature (mapping and outputs) and ``run``; a remote model also
``submit``\\ s work so several requests can be in flight (:class:`SubmittingModel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from streamscore.model.repository import ModelRef
from streamscore.model.signature import ModelSignature

if TYPE_CHECKING:
    from streamscore.config import RegistryOptions
    from streamscore.remote.settings import RemoteSettings


class Model(Protocol):
    """A model streamscore can score with."""

    ref: ModelRef
    signature: ModelSignature
    provider: str  # cpu, cuda, tensorrt, or remote

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[Any]:
        """The named outputs for ``feeds``, in order (raises a StreamscoreError)."""
        ...


@dataclass(frozen=True)
class Answer:
    """A remote model's answer for one submitted batch of rows.

    ``kept`` are positions (into the rows sent) that got ``values``; ``rejected`` positions
    the server refused, with its ``messages``.
    """

    values: list[np.ndarray]
    kept: np.ndarray
    rejected: np.ndarray
    messages: list[str]


class Pending(Protocol):
    def result(self) -> Answer: ...


@runtime_checkable
class SubmittingModel(Protocol):
    """A model that takes work ahead of time: ``submit`` now, ``result()`` later, in order.

    ``in_flight`` is how many submissions may be pending at once; ``submit`` blocks beyond.
    """

    in_flight: int

    def submit(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> Pending: ...


def open_model(
    spec: str,
    *,
    provider: str = "auto",
    threads: int | None = None,
    spin: bool = True,
    remote: RemoteSettings | None = None,
    registry: RegistryOptions | None = None,
) -> Model:
    """Open MODEL as given on the command line: a model URL, or a file or repository model."""
    from streamscore.remote.url import is_model_url

    if is_model_url(spec):
        from streamscore.remote.model import open_remote_model
        from streamscore.remote.settings import RemoteSettings

        return open_remote_model(spec, remote or RemoteSettings())
    from streamscore.model.repository import resolve_model
    from streamscore.model.session import load_model  # onnxruntime: only when needed

    return load_model(resolve_model(spec, registry), provider=provider, threads=threads, spin=spin)


def close_model(model: Model) -> None:
    """Release what a model holds (a remote model's connections and threads)."""
    close = getattr(model, "close", None)
    if close is not None:
        close()
