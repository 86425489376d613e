"""How pipelines report progress and events, without knowing who listens.

``streamscore.console`` implements the protocol for terminals (rich) and for pipes (JSON
lines); library users can pass :class:`SilentReporter` or their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Reporter(Protocol):
    """Receives progress (per task key) and events (JSON-able dicts with an ``event`` key)."""

    def add_task(
        self, key: str, description: str, total: int | None, *, completed: int = 0
    ) -> None:
        """Announce a unit of progress, e.g. all rows of a batch run or one partition.

        ``completed`` is work done before this run (a resumed replay): shown as done, but
        not counted in the rate.
        """

    def advance(self, key: str, amount: int) -> None:
        """``amount`` more records done on task ``key``."""

    def event(self, payload: Mapping[str, Any]) -> None:
        """Something worth a log line: a file finished, a model reloaded…"""

    def close(self) -> None:
        """No more reports; release the terminal."""


class SilentReporter:
    """A reporter that drops everything; the default for library calls."""

    def add_task(
        self, key: str, description: str, total: int | None, *, completed: int = 0
    ) -> None:
        pass

    def advance(self, key: str, amount: int) -> None:
        pass

    def event(self, payload: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class RecordingReporter(SilentReporter):
    """Keeps events in a list; handy in tests and notebooks."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def event(self, payload: Mapping[str, Any]) -> None:
        self.events.append(dict(payload))
