"""What ``streamscore bench`` measures and how: typed, frozen options, validated once."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from streamscore.config import PROVIDER_NAMES as PROVIDERS
from streamscore.config import RegistryOptions
from streamscore.errors import UsageError
from streamscore.remote.settings import RemoteSettings
from streamscore.remote.url import is_model_url

PLOT_SUFFIXES = (".html", ".png", ".svg")
PIPELINES = ("batch",)


class Arrivals(str, Enum):
    """How open-loop requests are spaced in time."""

    constant = "constant"  # exactly 1/R apart
    poisson = "poisson"  # exponential gaps with mean 1/R, like independent clients


@dataclass(frozen=True)
class BenchOptions:
    """One ``streamscore bench`` run: the sweep, the timing rules and the outputs.

    Every combination of ``providers`` x ``threads`` x ``batch_sizes`` x ``concurrency``
    (x ``rates`` in open-loop mode) is one configuration. ``threads`` 0 lets ONNX Runtime
    decide. ``shapes`` fixes dynamic dimensions: ``(input_or_dim_name, dims)`` pairs.

    ``model`` may be a model server URL (provider ``remote``; providers and threads do not
    apply). ``served``, a model server URL, benchmarks it beside the embedded ``model`` on the
    same inputs and compares them per configuration. ``remote`` holds headers, TLS and timeouts.
    """

    model: str
    registry: RegistryOptions = RegistryOptions()  # for models:/ and runs:/ MODELs
    batch_sizes: tuple[int, ...] = (1, 64, 4096)
    threads: tuple[int, ...] = (0,)
    providers: tuple[str, ...] = ("cpu",)
    concurrency: tuple[int, ...] = (1,)
    rates: tuple[float, ...] = ()  # calls per second; empty means closed loop
    arrivals: Arrivals = Arrivals.constant
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    data: Path | None = None
    features: tuple[str, ...] | None = None
    warmup_s: float = 0.5
    window_s: float = 1.0
    max_duration_s: float = 10.0
    stability: float = 0.10
    require_provider: bool = False
    pipeline: str | None = None
    json_path: Path | None = None
    plot_path: Path | None = None
    baseline: Path | None = None
    max_regression: float = 0.10
    seed: int = 0
    served: str | None = None
    remote: RemoteSettings | None = None

    def __post_init__(self) -> None:
        _positive("--batch-sizes", self.batch_sizes)
        _positive("--concurrency", self.concurrency)
        _positive("--rate", self.rates)
        if not self.batch_sizes or not self.threads or not self.providers:
            raise UsageError("--batch-sizes, --threads and --providers each need a value")
        if any(t < 0 for t in self.threads):
            raise UsageError("--threads takes 0 (ONNX Runtime decides) or more")
        unknown = [p for p in self.providers if p not in PROVIDERS]
        if unknown:
            raise UsageError(
                f"unknown provider(s): {', '.join(unknown)}", hint=f"use {','.join(PROVIDERS)}"
            )
        if self.served is not None and not is_model_url(self.served):
            raise UsageError(
                f"the model to compare with must be a model server URL, not {self.served!r}",
                hint="streamscore bench MODEL http://HOST:PORT/v2/models/NAME",
            )
        if self.remote_only and self.served is not None:
            raise UsageError("bench MODEL URL compares an embedded MODEL with a served one")
        if (self.remote_only or self.served) and self.pipeline:
            raise UsageError("--pipeline runs embedded models only")
        if self.warmup_s < 0 or self.window_s <= 0 or self.max_duration_s <= 0:
            raise UsageError("--warmup must be >= 0; --window and --max-duration must be > 0")
        if not 0 < self.stability < 1:
            raise UsageError(f"stability must be between 0 and 1, got {self.stability}")
        if self.max_regression < 0:
            raise UsageError("--max-regression must not be negative")
        if self.plot_path is not None and self.plot_path.suffix.lower() not in PLOT_SUFFIXES:
            raise UsageError(
                f"--plot {self.plot_path}: unknown picture format",
                hint="name a .html (self-contained page), .png or .svg file",
            )
        if self.pipeline is not None:
            if self.pipeline not in PIPELINES:
                raise UsageError(f"--pipeline {self.pipeline!r}: only 'batch' is supported")
            if self.data is None:
                raise UsageError("--pipeline batch needs real files", hint="add --data DIR")
            if self.rates or self.concurrency != (1,):
                raise UsageError("--pipeline runs one caller; drop --rate and --concurrency")

    @property
    def remote_only(self) -> bool:
        """MODEL itself is on a model server."""
        return is_model_url(self.model)

    @property
    def measured_window_s(self) -> float:
        """The window length actually used: at most a third of --max-duration.

        Stability needs three windows, so a short --max-duration shortens the windows
        rather than making every configuration unstable.
        """
        return min(self.window_s, self.max_duration_s / 3)

    def shape_for(self, name: str) -> tuple[int, ...] | None:
        return next((dims for key, dims in self.shapes if key == name), None)


def _positive(option: str, values: Sequence[float]) -> None:
    if any(v <= 0 for v in values):
        raise UsageError(f"{option} takes positive values, got {','.join(map(str, values))}")


def parse_shapes(items: Sequence[str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``["tokens=128", "image=3x224x224"]`` -> ``(("tokens", (128,)), ("image", (3, 224, 224)))``.

    NAME is a model input (DIMS are its dimensions after the batch dimension) or the name of
    a symbolic dimension such as ``seq`` (DIMS is its one value).
    """
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for item in items:
        name, sep, dims = item.partition("=")
        parts = [p for p in re.split(r"[,x]", dims.strip()) if p.strip()]
        if not sep or not name.strip() or not parts or not all(p.strip().isdigit() for p in parts):
            raise UsageError(
                f"--shape {item!r}: expected NAME=DIMS",
                hint="e.g. --shape tokens=128 or --shape image=3x224x224",
            )
        shapes.append((name.strip(), tuple(int(p) for p in parts)))
    return tuple(shapes)


def parse_percent(text: str, option: str = "--max-regression") -> float:
    """``"10%"`` or ``"10"`` -> 0.10."""
    value = text.strip().removesuffix("%").strip()
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{option} takes a percentage like 10%, got {text!r}") from None
    if number < 0:
        raise UsageError(f"{option} must not be negative, got {text!r}")
    return number / 100


def parse_float_list(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{option} needs at least one value")
    return values
