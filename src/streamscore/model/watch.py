"""Hot model reload: keep the newest version of a repository model serving.

When MODEL names a repository model (``REPO/NAME``), a :class:`ModelWatcher` polls
``REPO/NAME`` every interval for a new highest version; when it names a registry alias or
``latest`` (``models:/NAME@champion``), it polls the registry for the version the alias
points to now (:class:`streamscore.model.mlflow_registry.RegistryFeed`); when it is a model
URL without a version, the server for the version that answers it now
(:class:`streamscore.remote.watch.ServerFeed`).

The candidate is prepared off the serving path (loaded, and checked against the input plan
by the caller's ``prepare``); if that works it becomes :attr:`ModelWatcher.current`, which
the serving loop reads once per batch, so the switch always falls between batches. A
candidate that fails to load or does not fit the input is rejected with an event and not
retried until its file changes (or the alias moves to another version); the version already
serving keeps serving. A registry that cannot be reached is a warning, not a rejection.

Put a new version in place atomically (write ``REPO/NAME/.tmp-7/`` and rename it to
``REPO/NAME/7/``); a file still being written is skipped until it has been quiet for
``settle_s`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from streamscore.config import RegistryOptions
from streamscore.errors import StreamscoreError
from streamscore.model.repository import (
    MLFLOW_SCHEMES,
    MODEL_FILENAME,
    ModelRef,
    is_version,
    numeric_versions,
    resolve_model,
)
from streamscore.remote.url import ModelURL, is_model_url

if TYPE_CHECKING:
    from streamscore.remote.settings import RemoteSettings

T = TypeVar("T")

EventSink = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class Candidate:
    """A version a feed offers: ``stamp`` tells it apart from the one serving."""

    stamp: Hashable
    version: str
    resolve: Callable[[], ModelRef]


class VersionFeed(Protocol):
    """Where a watcher looks for the version that should serve."""

    @property
    def name(self) -> str: ...

    def candidate(self) -> Candidate | None:
        """The version that should serve now, or None when there is none (yet)."""

    def stamp_of(self, ref: ModelRef) -> Hashable | None:
        """The stamp ``candidate`` would give ``ref``'s version."""


def reload_source(
    spec: str | Path, registry: RegistryOptions, remote: RemoteSettings | None = None
) -> Path | VersionFeed | None:
    """What to watch for MODEL: ``REPO/NAME``, a registry alias or ``latest``, or a model URL
    without a version (:mod:`streamscore.remote.watch`); else None."""
    if str(spec).startswith(MLFLOW_SCHEMES):
        from streamscore.model.mlflow_registry import registry_feed

        return registry_feed(str(spec), registry)
    if is_model_url(str(spec)):
        from streamscore.remote.settings import RemoteSettings
        from streamscore.remote.watch import ServerFeed  # httpx: only for model URLs

        url = ModelURL.parse(str(spec))
        return ServerFeed(url, remote or RemoteSettings()) if url.version is None else None
    return repository_model_dir(spec)


def repository_model_dir(spec: str | Path) -> Path | None:
    """``REPO/NAME`` as a directory when MODEL names a repository model, else None.

    A plain ``.onnx`` file or a pinned ``REPO/NAME/VERSION`` is not watched.
    """
    path = Path(spec)
    if not path.is_dir() or (path / MODEL_FILENAME).is_file():
        return None
    return path if numeric_versions(path) else None


@dataclass(frozen=True)
class _FileStamp:
    """What identifies one version's file between polls without hashing it."""

    version: str  # the folder name, as written
    size: int
    mtime_ns: int


def _stamp(name_dir: Path, version: str) -> _FileStamp | None:
    try:
        stat = (name_dir / version / MODEL_FILENAME).stat()
    except OSError:  # removed between listing and stat
        return None
    return _FileStamp(version, stat.st_size, stat.st_mtime_ns)


class _FolderFeed:
    """The highest version of ``REPO/NAME`` whose file has been quiet for ``settle_s``."""

    def __init__(self, name_dir: Path, settle_s: float) -> None:
        self.name_dir = name_dir
        self.settle_s = settle_s

    @property
    def name(self) -> str:
        return self.name_dir.name

    def candidate(self) -> Candidate | None:
        versions = numeric_versions(self.name_dir)
        stamp = _stamp(self.name_dir, versions[-1]) if versions else None
        if stamp is None or time.time_ns() - stamp.mtime_ns < self.settle_s * 1e9:
            return None  # nothing there, or probably still being written: look again later
        path = self.name_dir / stamp.version
        return Candidate(stamp, stamp.version, lambda: resolve_model(path))

    def stamp_of(self, ref: ModelRef) -> Hashable | None:
        return _stamp(self.name_dir, ref.version) if is_version(ref.version) else None


class ModelWatcher(Generic[T]):
    """Serves the newest version of ``REPO/NAME`` (or of a feed, such as a registry alias)
    that loads and fits; see the module doc.

    ``prepare(ref)`` turns a model reference into what the serving loop uses (for tail: a
    loaded, checked scorer) and raises a StreamscoreError when the version is unusable.
    """

    def __init__(
        self,
        source: Path | VersionFeed,
        initial: T,
        initial_ref: ModelRef,
        prepare: Callable[[ModelRef], T],
        *,
        interval_s: float = 30.0,
        settle_s: float = 1.0,
        on_event: EventSink | None = None,
    ) -> None:
        self.feed = _FolderFeed(source, settle_s) if isinstance(source, Path) else source
        self.interval_s = interval_s
        self._prepare = prepare
        self._on_event = on_event or (lambda payload: None)
        self._current = initial
        self._current_ref = initial_ref
        self._served = self.feed.stamp_of(initial_ref)
        self._rejected: set[Hashable] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one check at a time (poll thread or check_now)

    @property
    def current(self) -> T:
        """What serves now; read it once per batch."""
        return self._current

    @property
    def current_ref(self) -> ModelRef:
        return self._current_ref

    def check_now(self) -> bool:
        """Look for a new version once; True when a new one now serves."""
        with self._lock:
            candidate = self.feed.candidate()
            if candidate is None:
                return False
            if candidate.stamp == self._served or candidate.stamp in self._rejected:
                return False
            return self._try(candidate)

    def _try(self, candidate: Candidate) -> bool:
        try:
            ref = candidate.resolve()
            prepared = self._prepare(ref)
        except StreamscoreError as exc:
            self._rejected.add(candidate.stamp)
            self._on_event(
                {
                    "event": "model_rejected",
                    "model": self.feed.name,
                    "version": candidate.version,
                    "serving": self._current_ref.version,
                    "reason": exc.one_line(),
                }
            )
            return False
        previous = self._current_ref
        self._current, self._current_ref, self._served = prepared, ref, candidate.stamp
        loaded = {
            "event": "model_loaded",
            "model": ref.name,
            "version": ref.version,
            "previous_version": previous.version,
            "sha256": ref.sha256,
        }
        self._on_event({**loaded, "server": ref.server} if ref.server else loaded)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_now()
            except Exception as exc:  # a watcher that dies silently would never reload again
                self._on_event(
                    {"event": "warning", "message": f"model watcher: {type(exc).__name__}: {exc}"}
                )

    def start(self) -> ModelWatcher[T]:
        """Poll on a background thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="streamscore-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.interval_s, 5.0))
            self._thread = None

    def __enter__(self) -> ModelWatcher[T]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
