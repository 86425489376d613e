"""What ``streamscore compare`` compares and how: typed, frozen options, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from streamscore.config import ScoringOptions, check_topic_name
from streamscore.errors import UsageError
from streamscore.remote.url import is_model_url

if TYPE_CHECKING:
    from streamscore.kafka.settings import KafkaSettings

REPORT_SUFFIXES = (".html", ".htm")
DEFAULT_SAMPLE_ROWS = 100_000  # matched rows kept for quantiles, Spearman, PSI and pictures


class CompareMode(str, Enum):
    """Where the two sides' scores come from."""

    models = "models"  # score DATA with two models
    scored = "scored"  # two batch output folders, joined on --key
    topics = "topics"  # two output topics, joined on the source offsets


@dataclass(frozen=True)
class CompareOptions:
    """One ``streamscore compare`` run.

    ``models``: ``data`` scored with ``scoring_a`` and ``scoring_b`` (which differ only in
    the model). ``scored``: ``scored`` folders joined on ``key``. ``topics``: ``topics`` read
    with ``kafka``. ``keep`` names columns shown beside the rows that differ most (None: as
    ``batch`` keeps them in models mode, none otherwise); ``columns`` the score columns to
    compare (None: every numeric column both sides have).
    """

    mode: CompareMode
    data: Path | None = None
    scoring_a: ScoringOptions | None = None
    scoring_b: ScoringOptions | None = None
    scored: tuple[Path, Path] | None = None
    key: str | None = None
    topics: tuple[str, str] | None = None
    kafka: KafkaSettings | None = None
    keep: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    threshold: float = 0.5
    top: int = 10
    sample_rows: int = DEFAULT_SAMPLE_ROWS
    max_flip_rate: float | None = None
    max_psi: float | None = None
    json_path: Path | None = None
    report_path: Path | None = None

    def __post_init__(self) -> None:
        if self.mode is CompareMode.models:
            if self.data is None or self.scoring_a is None or self.scoring_b is None:
                raise UsageError("compare DATA needs two models: --model A --model B")
            for scoring in (self.scoring_a, self.scoring_b):
                if is_model_url(scoring.model):
                    raise UsageError(
                        f"--model {scoring.model}: compare DATA runs both models in this "
                        "process and does not take a model server URL",
                        hint="score DATA with `streamscore batch --model URL` into a folder "
                        "per model, then compare them with --scored",
                    )
        elif self.mode is CompareMode.scored:
            if self.scored is None or not self.key:
                raise UsageError(
                    "--scored DIR_A DIR_B needs --key COLUMN",
                    hint="a column both outputs kept with one row per value, e.g. an id",
                )
        elif self.topics is None or self.kafka is None:
            raise UsageError("--topics OUT_A OUT_B needs Kafka settings")
        else:
            for topic in self.topics:
                check_topic_name(topic, "--topics")
            if self.topics[0] == self.topics[1]:
                raise UsageError("--topics names the same topic twice")
        if not 0 <= self.threshold <= 1:
            raise UsageError(f"--threshold must be between 0 and 1, got {self.threshold:g}")
        if self.top < 0:
            raise UsageError(f"--top must be 0 or more, got {self.top}")
        if self.sample_rows <= 0:
            raise UsageError(f"--sample-rows must be positive, got {self.sample_rows}")
        if self.max_flip_rate is not None and not 0 <= self.max_flip_rate <= 1:
            raise UsageError("--max-flip-rate must be between 0% and 100%")
        if self.max_psi is not None and self.max_psi < 0:
            raise UsageError("--max-psi must not be negative")
        if self.report_path is not None and self.report_path.suffix.lower() not in REPORT_SUFFIXES:
            raise UsageError(
                f"--report {self.report_path}: the report is an HTML page",
                hint="name a .html file",
            )
        for path, option in ((self.json_path, "--json"), (self.report_path, "--report")):
            if path is not None and not path.parent.is_dir():
                raise UsageError(
                    f"{option} {path}: folder {path.parent} does not exist",
                    hint="create it first; the check runs before comparing",
                )
