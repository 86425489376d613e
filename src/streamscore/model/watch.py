"""Hot model reload: keep the newest version of a repository model serving.

When MODEL names a repository model (``REPO/NAME``), a :class:`ModelWatcher` polls
``REPO/NAME`` every interval for a new highest version. The candidate is prepared off the
serving path (loaded, and checked against the input plan by the caller's ``prepare``); if
that works it becomes :attr:`ModelWatcher.current`, which the serving loop reads once per
batch, so the switch always falls between batches. A candidate that fails to load or does
not fit the input is rejected with an event and not retried until its file changes; the
version already serving keeps serving.

Put a new version in place atomically (write ``REPO/NAME/.tmp-7/`` and rename it to
``REPO/NAME/7/``); a file still being written is skipped until it has been quiet for
``settle_s`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from streamscore.errors import StreamscoreError
from streamscore.model.repository import (
    MODEL_FILENAME,
    ModelRef,
    is_version,
    numeric_versions,
    resolve_model,
)

T = TypeVar("T")

EventSink = Callable[[Mapping[str, Any]], None]


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


class ModelWatcher(Generic[T]):
    """Serves the newest version of ``REPO/NAME`` that loads and fits; see the module doc.

    ``prepare(ref)`` turns a model reference into what the serving loop uses (for tail: a
    loaded, checked scorer) and raises a StreamscoreError when the version is unusable.
    """

    def __init__(
        self,
        name_dir: Path,
        initial: T,
        initial_ref: ModelRef,
        prepare: Callable[[ModelRef], T],
        *,
        interval_s: float = 30.0,
        settle_s: float = 1.0,
        on_event: EventSink | None = None,
    ) -> None:
        self.name_dir = name_dir
        self.interval_s = interval_s
        self.settle_s = settle_s
        self._prepare = prepare
        self._on_event = on_event or (lambda payload: None)
        self._current = initial
        self._current_ref = initial_ref
        self._served = self._stamp_of(initial_ref)
        self._rejected: set[_FileStamp] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one check at a time (poll thread or check_now)

    def _stamp_of(self, ref: ModelRef) -> _FileStamp | None:
        return _stamp(self.name_dir, ref.version) if is_version(ref.version) else None

    @property
    def current(self) -> T:
        """What serves now; read it once per batch."""
        return self._current

    @property
    def current_ref(self) -> ModelRef:
        return self._current_ref

    def check_now(self) -> bool:
        """Look for a new highest version once; True when a new one now serves."""
        with self._lock:
            versions = numeric_versions(self.name_dir)
            if not versions:
                return False
            stamp = _stamp(self.name_dir, versions[-1])
            if stamp is None or stamp == self._served or stamp in self._rejected:
                return False
            if time.time_ns() - stamp.mtime_ns < self.settle_s * 1e9:
                return False  # probably still being written; look again next time
            return self._try(stamp)

    def _try(self, stamp: _FileStamp) -> bool:
        path = self.name_dir / stamp.version
        try:
            ref = resolve_model(path)
            prepared = self._prepare(ref)
        except StreamscoreError as exc:
            self._rejected.add(stamp)
            self._on_event(
                {
                    "event": "model_rejected",
                    "model": self.name_dir.name,
                    "version": stamp.version,
                    "serving": self._current_ref.version,
                    "reason": exc.one_line(),
                }
            )
            return False
        previous = self._current_ref
        self._current, self._current_ref, self._served = prepared, ref, stamp
        self._on_event(
            {
                "event": "model_loaded",
                "model": ref.name,
                "version": ref.version,
                "previous_version": previous.version,
                "sha256": ref.sha256,
            }
        )
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
