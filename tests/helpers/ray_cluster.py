"""The local Ray cluster of the tests (conftest ``ray_cluster``): its address and processes."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


def processes_of(*tags: str) -> list[Any]:
    """Processes whose command line names one of ``tags``, with their descendants (not us)."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found: dict[int, Any] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            args = proc.info["cmdline"] or []
            if proc.pid not in mine and any(tag in arg for arg in args for tag in tags):
                for one in [proc, *proc.children(recursive=True)]:
                    found[one.pid] = one
        except psutil.Error:
            continue
    return list(found.values())


def stop_processes(procs: list[Any]) -> None:
    """SIGTERM, and SIGKILL what is left after 2 s (zombies count as gone)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(_running(proc) for proc in procs):
        time.sleep(0.1)
    for proc in procs:
        if _running(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _running(proc: Any) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


@dataclass(frozen=True)
class RayCluster:
    """A running cluster: ``address`` for ``--ray``; every process of it names ``temp_dir``."""

    address: str
    temp_dir: Path

    def processes(self) -> list[Any]:
        """Every process of this cluster (the Ray Client server names only the address)."""
        return processes_of(str(self.temp_dir), f"--address={self.address}")

    def workers(self) -> list[Any]:
        """The BatchWorker actor processes of this cluster."""
        found = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if proc.cmdline() and proc.cmdline()[0].startswith("ray::BatchWorker"):
                    found.append(proc)
        return found
