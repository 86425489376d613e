"""Describe the machine a benchmark ran on, so reports compare like with like."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil

from streamscore import __version__
from streamscore.bench.report import Environment
from streamscore.model.session import listed_providers, ort_version


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; elsewhere what Python knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def collect_environment(providers_used: list[str]) -> Environment:
    """CPU, cores, OS, Python, ONNX Runtime and streamscore versions, and the providers."""
    return Environment(
        cpu_model=cpu_model(),
        cpu_cores_logical=os.cpu_count() or 0,
        cpu_cores_physical=psutil.cpu_count(logical=False),
        os=platform.platform(),
        python=platform.python_version(),
        onnxruntime=ort_version(),
        streamscore=__version__,
        providers_listed=listed_providers(),
        providers_used=sorted(set(providers_used)),
    )
