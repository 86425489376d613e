"""``batch --ray``: score the files of a batch run on a Ray cluster.

The driver (this process) plans the run exactly as a local run does: it holds the lock on
OUTPUT, decides which files to skip, writes the summary and handles orphans. Only the
scoring moves: a pool of Ray actors (``ray.util.ActorPool``), each loading the model once,
calls the same :meth:`BatchRun.score_file` a local run calls, so every output file is still
written under a temporary name and renamed when complete.

Why an actor pool and not Ray Data's ``map_batches``: our unit of output is a file (one per
input, at a mirrored path, with its own rejects file and footer metadata, renamed atomically
so a rerun can skip it). Ray Data would own reading and writing and name the files itself;
rows would cross the object store. With actors, workers read their input and write their
output straight from and to storage, and Ray only schedules, restarts and retries.

A file with more than ``RayOptions.part_rows`` rows is split at row-group boundaries, so one
big file does not keep one worker busy while the others idle. Each part is scored into a
hidden part file beside the output (named like every temporary file, so a rerun after a
crash deletes leftovers); when all parts are in, one worker joins them, in order, into the
output and rejects files, which again appear only by rename.

Needs a filesystem that every node mounts at the same path (NFS, a parallel filesystem or a
FUSE mount of an object store): workers change into the driver's working directory, so
relative paths mean on every node what they mean here. The model file is shipped to the
workers through Ray's object store, so it need not be shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from streamscore.arrays import use_reusing_allocator
from streamscore.batch import META_PREFIX, BatchRun, FileResult, _PlannedFile
from streamscore.config import BatchOptions, OnError, RayOptions
from streamscore.errors import (
    ClusterError,
    InputError,
    ModelError,
    OutputError,
    StreamscoreError,
    UsageError,
)
from streamscore.model.repository import ModelRef
from streamscore.model.session import load_model, runs_on_cpu
from streamscore.pipeline import PipelineStats
from streamscore.sinks.parquet import TEMP_MARKER, AtomicParquetWriter, remove_stale_temp_files
from streamscore.sources.parquet import ParquetInput

EXTRA_HINT = "install it with: pip install 'streamscore[ray]'"
GPU_PROVIDERS = ("cuda", "tensorrt")
# A worker process that dies (killed, out of memory) is restarted, and its tasks retried,
# this many times before the run gives up; a rerun then resumes.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
CONNECT_TIMEOUT_S = 10.0
RAY_CLIENT_SCHEME = "ray://"
RAY_CLIENT_PORT = 10001  # Ray Client's default server port
STOP_POLL_S = 0.5  # how often the driver checks for a stop signal while workers score
# Errors that fail one file (unless --on-error fail), as in a local run.
FILE_ERRORS = (InputError, ModelError, OutputError)
_COUNT_KEYS = ("rows_in", "rows_scored", "rows_rejected")


def check_ray_installed() -> None:
    """Raise UsageError unless the ``ray`` extra is installed (without importing it)."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except ValueError:  # an entry of None in sys.modules: imports of ray are blocked
        found = False
    if not found:
        raise UsageError("--ray needs Ray, which is not installed", hint=EXTRA_HINT)


# ------------------------------------------------------------------------ work and results


@dataclass(frozen=True)
class Part:
    """Row groups ``row_groups`` of a split file; its first row is row ``first_row``."""

    number: int
    row_groups: tuple[int, ...]
    first_row: int


TaskKind = Literal["file", "part", "join"]


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker: a whole file, one part of a file, or joining parts."""

    kind: TaskKind
    index: int  # position in the run's list of files to score
    item: ParquetInput
    fingerprint: str
    schema: pa.Schema
    rows: int
    parts: tuple[Part, ...] = ()  # the part to score, or the parts to join


@dataclass
class Outcome:
    """What a worker sends back: a file's result, a part's counts, or an error."""

    kind: TaskKind
    index: int
    provider: str = ""
    progress: dict[str, int] = field(default_factory=dict)
    result: FileResult | None = None
    stats: PipelineStats | None = None
    error: StreamscoreError | None = None
    fatal: bool = False  # the error stops the run (the worker cannot load the model…)
    seconds: float = 0.0


def split_file(path: Path, rows: int, part_rows: int) -> list[Part]:
    """Consecutive row groups of about ``part_rows`` rows each, or none: score it whole."""
    if rows <= part_rows:
        return []
    try:
        metadata = pq.read_metadata(path)
    except (OSError, pa.ArrowException):  # changed since planned: the worker reports it
        return []
    parts: list[Part] = []
    groups: list[int] = []
    first = taken = 0
    for group in range(metadata.num_row_groups):
        groups.append(group)
        taken += metadata.row_group(group).num_rows
        if taken - first >= part_rows:
            parts.append(Part(len(parts), tuple(groups), first))
            groups, first = [], taken
    if groups:
        parts.append(Part(len(parts), tuple(groups), first))
    return parts if len(parts) > 1 else []


def part_path(final: Path, part: Part) -> Path:
    """Where a part of ``final`` is written: hidden, and removed as a temporary file."""
    return final.with_name(f".{final.name}{TEMP_MARKER}part{part.number:05d}")


def for_part(planned: _PlannedFile, part: Part) -> _PlannedFile:
    """The plan of one part: its row groups, written to part files."""
    return dataclasses.replace(
        planned,
        output=part_path(planned.output, part),
        rejected=part_path(planned.rejected, part),
        row_groups=part.row_groups,
        first_row=part.first_row,
    )


def join_parts(
    parts: list[Path],
    final: Path,
    metadata: Mapping[str, str],
    *,
    row_group_rows: int,
) -> bool:
    """Concatenate the part files ``parts`` (in order, missing ones skipped) into ``final``.

    ``final`` appears only by rename, with ``metadata`` in its footer; row groups are cut
    every ``row_group_rows`` rows, as a local run cuts them. A join of parts without rows
    keeps their columns. Returns False, writing nothing, when no part file exists.
    """
    found = [pq.ParquetFile(path, pre_buffer=False) for path in parts if path.exists()]
    if not found:
        return False
    writer = AtomicParquetWriter(final, row_group_rows=row_group_rows)
    try:
        for part in found:
            for batch in part.iter_batches(batch_size=row_group_rows):
                _write_aligned(writer, _without_our_metadata(batch), row_group_rows)
        empty = found[0].schema_arrow
        writer.commit(metadata, empty.with_metadata(_their_metadata(empty)))
    except BaseException:
        writer.abort()
        raise
    finally:
        for part in found:
            part.close()
    return True


def summed_counts(parts: list[Path]) -> dict[str, str]:
    """The row counts in the footers of ``parts`` (streamscore.rows_in…), added up."""
    counts = dict.fromkeys(_COUNT_KEYS, 0)
    for path in parts:
        footer = pq.read_metadata(path).metadata or {}
        for key in _COUNT_KEYS:
            counts[key] += int(footer.get(f"{META_PREFIX}{key}".encode(), b"0"))
    return {f"{META_PREFIX}{key}": str(value) for key, value in counts.items()}


def _their_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """Schema metadata without our footer keys, which each part file carries."""
    return {
        k: v for k, v in (schema.metadata or {}).items() if not k.startswith(META_PREFIX.encode())
    }


def _without_our_metadata(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.replace_schema_metadata(_their_metadata(batch.schema) or None)


def _write_aligned(writer: AtomicParquetWriter, batch: pa.RecordBatch, group_rows: int) -> None:
    """Write ``batch`` in slices that end exactly on row-group boundaries."""
    while batch.num_rows:
        room = group_rows - writer.row_count % group_rows
        writer.write(batch.slice(0, room))
        batch = batch.slice(room)


# ------------------------------------------------------------------------ the worker (actor)


class _Tally:
    """A reporter that adds up progress, which the driver then reports as its own."""

    def __init__(self) -> None:
        self.progress: Counter[str] = Counter()

    def add_task(
        self, key: str, description: str, total: int | None, *, completed: int = 0
    ) -> None:
        pass

    def advance(self, key: str, amount: int) -> None:
        self.progress[key] += amount

    def event(self, payload: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> dict[str, int]:
        taken = dict(self.progress)
        self.progress.clear()
        return taken


class BatchWorker:
    """A Ray actor: loads the model once, then scores files, parts of files, and joins.

    The model comes with every task as an object ref (cheap: Ray sends the ref, and the
    worker fetches the bytes only for its first task), so a worker that Ray restarted after
    a crash loads it again by itself.
    """

    def __init__(self, options: BatchOptions, model: ModelRef, run_id: str, cwd: str) -> None:
        self.options, self.model, self.run_id = options, model, run_id
        self.tally = _Tally()
        self.run: BatchRun | None = None
        self.error: StreamscoreError | None = None
        try:
            os.chdir(cwd)
        except OSError:
            self.error = ClusterError(
                f"the driver's working directory {cwd} does not exist on Ray node "
                f"{os.uname().nodename}",
                hint="input and output must be on a filesystem every node mounts at the same path",
            )

    def _load(self, model_bytes: Any) -> BatchRun:
        import ray

        if self.error is not None:
            raise self.error
        if self.run is None:
            use_reusing_allocator()
            s = self.options.scoring
            with tempfile.TemporaryDirectory(prefix="streamscore-model-") as folder:
                local = Path(folder) / "model.onnx"
                local.write_bytes(ray.get(model_bytes))
                # --threads is this worker's CPUs (default 1), used as a local run uses them.
                threads, calls = self.options.placement(on_cpu=runs_on_cpu(s.provider), cores=1)
                loaded = load_model(
                    dataclasses.replace(self.model, path=local),
                    provider=s.provider,
                    threads=threads or 1,
                    spin=False,
                )
            loaded = dataclasses.replace(loaded, ref=self.model)  # named as the driver names it
            self.run = BatchRun(self.options, loaded, self.tally, run_id=self.run_id, calls=calls)
        return self.run

    def score(self, task: Task, model_bytes: list[Any]) -> Outcome:
        """Score a whole file (returns its result) or one part (returns its counts), or join."""
        outcome = Outcome(task.kind, task.index)
        started = time.perf_counter()
        try:
            run = self._load(model_bytes[0])
        except StreamscoreError as exc:
            outcome.error, outcome.fatal = exc, True
            return outcome
        outcome.provider = run.model.provider
        try:
            planned = run.plan_scoring(task.item, task.fingerprint, task.schema, task.rows)
            if task.kind == "file":
                outcome.result = run.score_file(planned)
            elif task.kind == "part":
                outcome.stats = run.write_scores(for_part(planned, task.parts[0]))
            else:
                self._join(run, planned, task.parts)
        except StreamscoreError as exc:
            outcome.error = exc
        outcome.progress = self.tally.take()
        outcome.seconds = time.perf_counter() - started
        return outcome

    @staticmethod
    def _join(run: BatchRun, planned: _PlannedFile, parts: tuple[Part, ...]) -> None:
        """Join the parts' rejects, then their scores (rejects first, as a local run does)."""
        outputs = [part_path(planned.output, part) for part in parts]
        if not all(path.exists() for path in outputs):
            raise InputError(f"parts of {planned.output} are gone", hint="rerun")
        # Every part has an output file (maybe without rows); only some have rejects.
        metadata = {**run.output_metadata(planned), **summed_counts(outputs)}
        rows = run.options.row_group_rows
        rejected = [part_path(planned.rejected, part) for part in parts]
        if not join_parts(rejected, planned.rejected, metadata, row_group_rows=rows):
            with contextlib.suppress(FileNotFoundError):  # rejects of an earlier run
                planned.rejected.unlink()
        join_parts(outputs, planned.output, metadata, row_group_rows=rows)


# ------------------------------------------------------------------------ the driver


@dataclass
class _FileState:
    """A planned file on its way through the pool."""

    planned: _PlannedFile
    parts: list[Part]
    pending: int = 0
    stats: list[PipelineStats] = field(default_factory=list)
    error: StreamscoreError | None = None
    seconds: float = 0.0


def score_on_ray(run: BatchRun, todo: list[_PlannedFile]) -> Iterator[FileResult]:
    """Score ``todo`` with a pool of Ray workers; yields each file's result when it is done."""
    if not todo:
        return
    ray_options = run.options.ray
    assert ray_options is not None
    with _connected(ray_options.address):
        yield from _score(run, ray_options, todo)
    # After the workers are gone: temporary files of attempts that Ray retried elsewhere,
    # or of files abandoned when the run was stopped.
    remove_stale_temp_files(run.options.output)


def _score(run: BatchRun, options: RayOptions, todo: list[_PlannedFile]) -> Iterator[FileResult]:
    """Submit every file (or its parts) to the pool; yield results as files complete."""
    pool, model_bytes = _start_pool(run, options)
    submit = functools.partial(_submit, pool, [model_bytes])
    files = [
        _FileState(planned, split_file(planned.item.path, planned.rows, options.part_rows))
        for planned in todo
    ]
    for index, state in enumerate(files):
        if not state.parts:
            submit(_task("file", index, state.planned))
        for part in state.parts:
            submit(_task("part", index, state.planned, (part,)))
        state.pending = len(state.parts)
    providers: set[str] = set()
    while pool.has_next():
        outcome = _next(pool, run.stop)
        if outcome is None:  # stopped (SIGINT/SIGTERM): the workers stop with the driver
            return
        if outcome.provider:  # the summary names what the workers ran on
            providers.add(outcome.provider)
            run.summary.provider = ",".join(sorted(providers))
        for key, amount in outcome.progress.items():
            run.reporter.advance(key, amount)
        result = _take(run, submit, files[outcome.index], outcome)
        if result is not None:
            yield result


def _take(
    run: BatchRun, submit: Callable[[Task], None], state: _FileState, outcome: Outcome
) -> FileResult | None:
    """Take in one outcome; returns a file's result once the file is done."""
    error = outcome.error
    if error is not None and (
        outcome.fatal or run.options.on_error is OnError.fail or not isinstance(error, FILE_ERRORS)
    ):
        raise error
    state.seconds += outcome.seconds
    if isinstance(error, FILE_ERRORS):
        state.error = state.error or error
    if outcome.kind == "file":
        return outcome.result or _failed(run, state)
    if outcome.kind == "part":
        state.pending -= 1
        if outcome.stats is not None:
            state.stats.append(outcome.stats)
        if state.pending:
            return None
        if state.error is None:
            submit(_task("join", outcome.index, state.planned, tuple(state.parts)))
            return None
    if state.error is not None:
        return _failed(run, state)
    result = run.finish_file(state.planned, _sum(state.stats), time.perf_counter())
    result.seconds = round(state.seconds, 3)
    _remove_parts(state)
    return result


def _failed(run: BatchRun, state: _FileState) -> FileResult:
    _remove_parts(state)
    assert state.error is not None
    return run.failed(state.planned, state.error)


def _remove_parts(state: _FileState) -> None:
    for part in state.parts:
        for final in (state.planned.output, state.planned.rejected):
            with contextlib.suppress(FileNotFoundError):
                part_path(final, part).unlink()


def _sum(stats: list[PipelineStats]) -> PipelineStats:
    total = PipelineStats()
    for one in stats:
        total.rows_in += one.rows_in
        total.rows_scored += one.rows_scored
        total.rows_rejected += one.rows_rejected
        total.batches += one.batches
        for reason, count in one.reasons.items():
            total.reasons[reason] = total.reasons.get(reason, 0) + count
    return total


def _task(kind: TaskKind, index: int, planned: _PlannedFile, parts: tuple[Part, ...] = ()) -> Task:
    return Task(kind, index, planned.item, planned.fingerprint, planned.schema, planned.rows, parts)


def _submit(pool: Any, model_bytes: list[Any], task: Task) -> None:
    pool.submit(lambda actor, value: actor.score.remote(value, model_bytes), task)


def _next(pool: Any, stop: threading.Event) -> Outcome | None:
    """The next finished outcome, or None once ``stop`` is set.

    A worker lost for good stops the run with ClusterError.
    """
    import ray.exceptions

    try:
        while True:
            try:
                outcome: Outcome = pool.get_next_unordered(timeout=STOP_POLL_S)
                return outcome
            except TimeoutError:
                if stop.is_set():
                    return None
    except ray.exceptions.RayActorError as exc:
        raise ClusterError(
            f"a Ray worker died and was restarted {MAX_RESTARTS} times: " + _first_line(exc),
            hint="see the Ray logs; rerun to resume: finished files are skipped",
        ) from exc
    return outcome


@contextlib.contextmanager
def _connected(address: str | None) -> Iterator[None]:
    """Connect to the cluster at ``address``, or start a local one, for the block."""
    gcs = _gcs_host_port(address)
    if address is None or (gcs is not None and gcs[0] in ("127.0.0.1", "localhost")):
        # A cluster of this machine alone: Ray then binds every server to 127.0.0.1, and
        # the driver finds its node at 127.0.0.1 rather than at the machine's own address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    reachable = gcs or _client_host_port(address)
    if reachable is not None:
        _check_reachable(address or "", *reachable)
    import ray

    _ray_messages_to_stderr()
    # Worker output must not reach our stdout, which carries JSON lines when piped.
    settings: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:
        settings.update(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    elif address.startswith("ray://"):
        settings["address"] = address
    else:
        settings.update(address=address, log_to_driver=False)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**settings)
    except Exception as exc:  # ray raises ConnectionError, RuntimeError, ValueError…
        where = address or "a local cluster"
        raise ClusterError(
            f"cannot connect to the Ray cluster at {where}: {_first_line(exc)}",
            hint="check the address given to --ray; for a cluster with token authentication "
            "set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN unless ~/.ray/auth_token holds it)",
        ) from exc
    # ray.init makes SIGTERM exit the process at once; keep ours (stop at the next batch,
    # write the summary), which the CLI set before.
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
    try:
        yield
    finally:
        ray.shutdown()


def _ray_messages_to_stderr() -> None:
    """Send the messages Ray relays from its raylet (a worker died…) to stderr.

    Ray prints them on stdout, which carries our JSON lines when piped; stderr is where
    human text belongs. Ray has no setting for it, so its printer is wrapped, once.
    """
    from ray._private import worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "to_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.to_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _gcs_host_port(address: str | None) -> tuple[str, int] | None:
    """HOST and PORT of a GCS address (not ``auto``, not ``ray://``), else None."""
    if address is None or "://" in address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--ray {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    return host.strip("[]"), int(port)


def _client_host_port(address: str | None) -> tuple[str, int] | None:
    """HOST and PORT of a Ray Client address ``ray://HOST[:PORT]`` (port 10001 by default)."""
    if address is None or not address.startswith(RAY_CLIENT_SCHEME):
        return None
    netloc = address.removeprefix(RAY_CLIENT_SCHEME).split("/")[0]
    host, colon, port = netloc.rpartition(":")
    if not colon or not port.isdigit():  # no port, or an IPv6 host without one
        return netloc.strip("[]"), RAY_CLIENT_PORT
    return host.strip("[]"), int(port)


def _check_reachable(address: str, host: str, port: int) -> None:
    """Fail fast: ``ray.init`` retries an unreachable GCS for many minutes."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}",
            hint="start one with `ray start --head`, or check the address given to --ray",
        ) from None


def _start_pool(run: BatchRun, options: RayOptions) -> tuple[Any, Any]:
    """Start the workers, each asking Ray for its CPUs (``--threads``) and a GPU with CUDA.

    Returns the pool and the object ref of the model file, which every task carries.
    """
    import ray
    from ray.util import ActorPool

    s = run.options.scoring
    cpus = s.threads or 1
    gpus = 1 if s.provider in GPU_PROVIDERS else 0
    workers = options.workers or _workers_that_fit(cpus, gpus)
    _check_fits(workers, cpus, gpus)
    data = run.model.ref.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != run.model.ref.sha256:
        raise ModelError(
            f"model {run.model.ref.path} changed on disk while the run started", hint="rerun"
        )
    model_bytes = ray.put(data)
    worker_options = dataclasses.replace(run.options, ray=None)
    actor_class = ray.remote(BatchWorker).options(
        num_cpus=cpus,
        num_gpus=gpus,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_TASK_RETRIES,
    )
    actors = [
        actor_class.remote(worker_options, run.model.ref, run.run_id, os.getcwd())
        for _ in range(workers)
    ]
    return ActorPool(actors), model_bytes


def _cluster_resources() -> dict[str, float]:
    import ray

    resources: dict[str, Any] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return {key: float(value) for key, value in resources.items()}


def _workers_that_fit(cpus: int, gpus: int) -> int:
    resources = _cluster_resources()
    fit = int(resources.get("CPU", 0) // cpus)
    if gpus:
        fit = min(fit, int(resources.get("GPU", 0)))
    return max(fit, 1)


def _check_fits(workers: int, cpus: int, gpus: int) -> None:
    """Refuse worker counts the cluster cannot place (Ray would wait for them forever)."""
    resources = _cluster_resources()
    have_cpus, have_gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if workers * gpus > have_gpus:
        raise ClusterError(
            f"the Ray cluster has {have_gpus:g} GPU(s); {workers} worker(s) with --provider "
            f"cuda need one each",
            hint="use fewer --workers, add GPU nodes, or use --provider cpu",
        )
    if workers * cpus > have_cpus:
        raise ClusterError(
            f"the Ray cluster has {have_cpus:g} CPU(s); {workers} worker(s) x {cpus} "
            "thread(s) need more",
            hint="use fewer --workers or --threads, or add nodes",
        )


def _first_line(exc: BaseException) -> str:
    """The first line of an error; with the last one when the first only announces it."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].endswith(":") and len(lines) > 1:  # e.g. a server's traceback follows
        return f"{lines[0]} {lines[-1]}"[:300]
    return lines[0]
