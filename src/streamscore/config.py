"""Typed, frozen run options, validated once when built."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from streamscore.errors import UsageError


class OnError(str, Enum):
    """What to do with rows that cannot be scored."""

    quarantine = "quarantine"  # keep them, with a reason, beside the output
    skip = "skip"  # count them and drop them
    fail = "fail"  # stop at the first one


@dataclass(frozen=True)
class KeepColumns:
    """Passthrough columns copied next to the scores.

    ``mode`` is ``default`` (every column that is not a model input), ``all``, ``none`` or
    ``list`` (exactly ``names``).
    """

    mode: str = "default"
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> KeepColumns:
        if text is None or text.strip() in ("", "default"):
            return cls()
        if text.strip() in ("all", "none"):
            return cls(text.strip())
        names = (n.strip() for n in text.split(",") if n.strip())
        return cls("list", tuple(dict.fromkeys(names)))

    def resolve(self, columns: list[str], model_inputs: tuple[str, ...]) -> list[str]:
        """The kept column names for a source with ``columns``, in source order."""
        if self.mode == "all":
            return list(columns)
        if self.mode == "none":
            return []
        if self.mode == "default":
            used = set(model_inputs)
            return [c for c in columns if c not in used]
        missing = [n for n in self.names if n not in columns]
        if missing:
            raise UsageError(
                f"--keep names column(s) not in the input: {', '.join(missing)}",
                hint=f"available: {', '.join(columns[:12])}",
            )
        return list(self.names)


@dataclass(frozen=True)
class ScoringOptions:
    """How rows become model inputs and scores; shared by every command."""

    model: str
    features: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None
    keep: KeepColumns = KeepColumns()
    provider: str = "auto"
    threads: int | None = None
    batch_size: int = 4096
    reject_nan: bool = False

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive, got {self.batch_size}")
        if self.threads is not None and self.threads < 0:
            raise UsageError(
                f"--threads must be 0 (ONNX Runtime decides) or more, got {self.threads}"
            )


@dataclass(frozen=True)
class BatchOptions:
    """``streamscore batch``: score Parquet files under ``input`` into ``output``."""

    input: Path
    output: Path
    scoring: ScoringOptions
    on_error: OnError = OnError.quarantine
    force: bool = False
    prune: bool = False  # delete outputs whose input file is gone
    row_group_rows: int = 65536
