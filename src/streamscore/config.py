"""Typed, frozen run options, validated once when built."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamscore.errors import UsageError

if TYPE_CHECKING:
    from streamscore.kafka.settings import KafkaSettings
    from streamscore.remote.settings import RemoteSettings
    from streamscore.routing import CanarySpec


# Execution providers by their short names; ``auto`` = CUDA when it really loads, else CPU.
PROVIDER_NAMES = ("cpu", "cuda", "tensorrt")
PROVIDER_CHOICES = ("auto", *PROVIDER_NAMES)


class OnError(str, Enum):
    """What to do with rows that cannot be scored."""

    quarantine = "quarantine"  # keep them, with a reason, beside the output
    skip = "skip"  # count them and drop them
    fail = "fail"  # stop at the first one


class Parallelism(str, Enum):
    """How ``batch`` spreads an embedded model over ``--threads`` CPU cores."""

    # That many model calls at once, each on one core, on different batches: no waiting
    # inside a call for the slowest of its threads, and reading and writing slow one call,
    # not all. The most rows per second; the default.
    calls = "calls"
    # One call at a time, split over that many ONNX Runtime intra-op threads.
    intra_op = "intra-op"


# Calls at once when --threads is unset: every core, up to this many. Each call holds one
# read chunk (and its feeds and scores) in memory, and one reader thread feeds them all.
MAX_DEFAULT_CALLS = 8


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


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
class RegistryOptions:
    """Where ``models:/`` and ``runs:/`` MODEL URIs are looked up and their files cached.

    ``uri`` None means MLflow's own default: ``$MLFLOW_TRACKING_URI``, else
    ``sqlite:///mlflow.db``. ``cache_dir`` None means ``$XDG_CACHE_HOME/streamscore``
    (``~/.cache/streamscore``). Both environment variables are read when used.
    """

    uri: str | None = None
    cache_dir: Path | None = None

    def cache_root(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "streamscore"


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
    remote: RemoteSettings | None = None  # when MODEL is a URL: headers, TLS, retries…
    registry: RegistryOptions = RegistryOptions()

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive, got {self.batch_size}")
        if self.threads is not None and self.threads < 0:
            raise UsageError(
                f"--threads must be 0 (ONNX Runtime decides) or more, got {self.threads}"
            )

    @property
    def call_threads(self) -> int | None:
        """ONNX Runtime intra-op threads for one model call: ``--threads``, 1 when unset (so
        every command's scores are those of a one-thread call, bit for bit, unless asked
        otherwise), None for 0 (ONNX Runtime decides)."""
        if self.threads is None:
            return 1
        return self.threads or None

    def digest(self, **context: Any) -> str:
        """The run identity: a digest of every option that changes the scores written, plus
        what the command adds (``context``: model, topics, error policy…).

        Batch stamps it on output files and replay on its offsets snapshot, so an output made
        with other options is never taken for this run's. A new option that changes outputs
        belongs here, once, for every command.
        """
        described = {
            "features": self.features,
            "outputs": self.outputs,
            "keep": [self.keep.mode, list(self.keep.names)],
            "reject_nan": self.reject_nan,
            **context,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


# Output row groups: large enough for readers (polars writes this size too) and for the
# encoder; small enough that the writer thread encodes while the model runs (the last row
# group of a file is encoded after its last batch, with nothing left to overlap).
ROW_GROUP_ROWS = 262_144
# Rows read, converted and handed to the writer per step (the I/O chunk). Parquet decodes
# fastest, and the pipeline's per-step Python costs least per row, in large chunks; the
# scorer runs the model on slices of --batch-size. 64Ki rows x 30 float64 are ~16 MiB.
READ_ROWS = 65_536


@dataclass(frozen=True)
class RayOptions:
    """``batch --ray``: score on a Ray cluster instead of in this process.

    ``address`` is what ``ray.init`` takes (``auto``, ``ray://HOST:PORT``, ``HOST:PORT`` of
    the GCS), or None to start a local cluster for the run. ``workers`` (default: as many as
    the cluster's CPUs, or GPUs with ``--provider cuda``, allow) each load the model once.
    Files with more than ``part_rows`` rows are split at row-group boundaries into parts of
    about that many rows, scored in parallel and joined into one output file.
    """

    address: str | None = None
    workers: int | None = None
    part_rows: int = 1_000_000

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers <= 0:
            raise UsageError(f"--workers must be positive, got {self.workers}")
        if self.part_rows <= 0:
            raise UsageError(f"part_rows must be positive, got {self.part_rows}")


@dataclass(frozen=True)
class BatchOptions:
    """``streamscore batch``: score Parquet files under ``input`` into ``output``."""

    input: Path
    output: Path
    scoring: ScoringOptions
    on_error: OnError = OnError.quarantine
    force: bool = False
    prune: bool = False  # delete outputs whose input file is gone
    row_group_rows: int = ROW_GROUP_ROWS  # at most; the sink also cuts row groups by size
    read_rows: int = READ_ROWS
    ray: RayOptions | None = None  # score on a Ray cluster
    parallelism: Parallelism = Parallelism.calls

    def __post_init__(self) -> None:
        if self.row_group_rows <= 0:
            raise UsageError(f"--row-group-rows must be positive, got {self.row_group_rows}")
        if self.read_rows <= 0:
            raise UsageError(f"read_rows must be positive, got {self.read_rows}")

    def placement(self, *, on_cpu: bool, cores: int | None = None) -> tuple[int | None, int]:
        """ONNX Runtime intra-op threads per call (None: it decides) and calls at once.

        With ``calls`` on CPU, ``--threads`` one-thread calls at once (unset or 0: ``cores``,
        default every core this process may use, up to :data:`MAX_DEFAULT_CALLS`); otherwise
        one call at a time.
        """
        if self.parallelism is Parallelism.intra_op or not on_cpu:
            return self.scoring.call_threads, 1
        return 1, self.scoring.threads or cores or min(usable_cores(), MAX_DEFAULT_CALLS)

    @property
    def chunk_rows(self) -> int:
        """The I/O chunk: ``read_rows`` rounded up to whole scoring batches, so every model
        call but a file's last gets ``--batch-size`` rows."""
        batch = self.scoring.batch_size
        return -(-self.read_rows // batch) * batch


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def check_topic_name(name: str, option: str) -> None:
    """Raise UsageError unless ``name`` is a legal Kafka topic name."""
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(
            f"{option} {name!r} is not a valid Kafka topic name",
            hint="use up to 249 letters, digits, '.', '_' or '-'",
        )


MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_member_name(name: str) -> None:
    """A worker name: part of a transactional id and the group instance id."""
    if not MEMBER_NAME.fullmatch(name):
        raise UsageError(
            f"--member {name!r} is not a worker name",
            hint="use up to 100 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit, e.g. the host name",
        )


DEFAULT_COMMIT_INTERVAL_S = 1.0
MAX_COMMIT_INTERVAL_S = 30.0  # half librdkafka's default transaction.timeout.ms


@dataclass(frozen=True)
class ReplayOptions:
    """``streamscore replay``: rescore ``input_topic`` up to its end offsets at the start.

    ``group`` (default ``streamscore-replay.IN.OUT``) names the consumer group that holds the
    replay's progress; the transactional id is the same string, so a restarted replay fences
    a previous instance that is still running. With ``member`` the process is one worker of
    a replay shared by the group's members (:mod:`streamscore.replay_group`): static group
    member ``member``, transactional id ``GROUP.member``.
    """

    kafka: KafkaSettings
    input_topic: str
    output_topic: str
    scoring: ScoringOptions
    dlq_topic: str | None = None  # default: OUT.dlq
    group: str | None = None
    from_timestamp_ms: int | None = None
    exactly_once: bool = True
    max_record_bytes: int = 1_000_000
    allow_nonempty_output: bool = False  # a fresh replay into an OUT that holds records
    member: str | None = None  # this worker's name in a replay shared by several processes
    # Exactly-once: one transaction spans the batches of up to this many seconds (0: one
    # per batch). See streamscore.kafka.sink.ExactlyOnce.
    commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S

    def __post_init__(self) -> None:
        if self.member is not None:
            check_member_name(self.member)
            if not self.exactly_once:
                raise UsageError(
                    "--member (or --workers) needs exactly-once delivery",
                    hint="drop --at-least-once: workers hand partitions over through transactions",
                )
            strategy = str(dict(self.kafka.properties).get("partition.assignment.strategy", ""))
            if "cooperative" in strategy:
                raise UsageError(
                    f"-X partition.assignment.strategy={strategy} cannot share a replay among "
                    "workers: a worker restarted between the two rounds of a cooperative "
                    "rebalance leaves partitions unowned",
                    hint="drop the -X (workers use the eager range assignor) or name range "
                    "or roundrobin",
                )
        check_topic_name(self.input_topic, "--input-topic")
        check_topic_name(self.output_topic, "--output-topic")
        check_topic_name(self.dead_letter_topic, "--dlq-topic")
        if self.output_topic == self.input_topic:
            raise UsageError("--output-topic must differ from --input-topic")
        if self.dead_letter_topic in (self.input_topic, self.output_topic):
            raise UsageError("--dlq-topic must differ from the input and output topics")
        if self.group is not None and not self.group.strip():
            raise UsageError("--group must not be empty")
        if self.max_record_bytes <= 0:
            raise UsageError(f"--max-record-bytes must be positive, got {self.max_record_bytes}")
        if not 0 <= self.commit_interval_s <= MAX_COMMIT_INTERVAL_S:
            raise UsageError(
                f"--commit-interval must be 0 to {MAX_COMMIT_INTERVAL_S:g} seconds, "
                f"got {self.commit_interval_s:g}",
                hint="a transaction must commit well within transaction.timeout.ms (60 s)",
            )

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.output_topic}.dlq"

    @property
    def group_id(self) -> str:
        return self.group or f"streamscore-replay.{self.input_topic}.{self.output_topic}"


@dataclass(frozen=True)
class TailOptions:
    """``streamscore tail``: score ``input_topic`` live in consumer group ``group``.

    A batch closes at ``max_batch`` records or ``max_wait_ms`` after its first record.
    ``start_from`` (earliest or latest) is where a group without committed offsets begins.
    """

    kafka: KafkaSettings
    input_topic: str
    output_topic: str
    group: str
    scoring: ScoringOptions
    dlq_topic: str | None = None  # default: OUT.dlq
    exactly_once: bool = False
    max_batch: int = 1000
    max_wait_ms: int = 2
    start_from: str = "latest"
    reload_interval_s: float = 30.0
    canary: CanarySpec | None = None
    shadow: str | None = None
    shadow_topic: str | None = None  # default: OUT.shadow
    metrics_port: int | None = None
    status_interval_s: float = 10.0
    shutdown_timeout_s: float = 30.0
    max_record_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        topics = {"--input-topic": self.input_topic, "--output-topic": self.output_topic}
        topics["--dlq-topic"] = self.dead_letter_topic
        if self.shadow is not None:
            topics["--shadow-topic"] = self.shadow_output_topic
        for option, name in topics.items():
            check_topic_name(name, option)
        if len(set(topics.values())) != len(topics):
            raise UsageError(f"{', '.join(topics)} must name different topics")
        if not self.group.strip():
            raise UsageError("--group must not be empty")
        if self.max_batch <= 0 or self.max_wait_ms < 0:
            raise UsageError("--max-batch must be positive and --max-wait at least 0")
        if self.start_from not in ("earliest", "latest"):
            raise UsageError(f"--start-from must be earliest or latest, not {self.start_from!r}")
        if self.reload_interval_s <= 0 or self.status_interval_s <= 0:
            raise UsageError("--reload-interval and --status-interval must be positive")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise UsageError(f"--metrics-port must be 0..65535, got {self.metrics_port}")
        if self.shadow_topic is not None and self.shadow is None:
            raise UsageError("--shadow-topic needs --shadow VERSION")
        if self.shutdown_timeout_s <= 0 or self.max_record_bytes <= 0:
            raise UsageError("--shutdown-timeout and --max-record-bytes must be positive")

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.output_topic}.dlq"

    @property
    def shadow_output_topic(self) -> str:
        return self.shadow_topic or f"{self.output_topic}.shadow"
