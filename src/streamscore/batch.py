"""``streamscore batch``: score every Parquet file under INPUT into a mirrored OUTPUT tree.

Built for unattended nightly runs:

* one output file per input file, at the same relative path (hive ``key=value/`` folders
  included), written under a temporary name and renamed when complete;
* an input whose output already carries the same source fingerprint, model sha256 and
  options digest is skipped, so a rerun after a crash resumes where it stopped;
* rows that cannot be scored go to ``OUTPUT/_rejected/`` with a reason (``--on-error``);
* a corrupt input is reported and the others still run; the summary says the run was
  partial and is also written to ``OUTPUT/_streamscore_run.json``;
* a lock file refuses a second run on the same OUTPUT while one is running;
* a ``stop`` event (the CLI sets it on SIGINT/SIGTERM) ends the run at the next batch: the
  file in progress is abandoned (temporary files removed) and the summary, marked
  ``interrupted``, is still written.

Files are scored here one after another, or with ``BatchOptions.ray`` by the workers of a
Ray cluster (:mod:`streamscore.ray_batch`); both call :meth:`BatchRun.score_file`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamscore import __version__
from streamscore.arrays import use_reusing_allocator
from streamscore.config import BatchOptions, OnError
from streamscore.errors import (
    InputError,
    LockedError,
    ModelError,
    OutputError,
    RemoteError,
    StreamscoreError,
    UsageError,
    output_error,
)
from streamscore.model import resolve_model
from streamscore.model.base import Model, close_model, open_model
from streamscore.model.session import load_model, runs_on_cpu
from streamscore.pipeline import PipelineStats, SourceBatch, run_pipeline
from streamscore.reporting import Reporter, SilentReporter
from streamscore.scoring import REASON_COLUMN, ScoredBatch, Scorer
from streamscore.sinks.parquet import ParquetFileSink, remove_stale_temp_files
from streamscore.sources.parquet import (
    ParquetInput,
    ParquetSource,
    discover_parquet,
    fingerprint,
    open_parquet,
)

LOCK_NAME = ".streamscore.lock"
SUMMARY_NAME = "_streamscore_run.json"
REJECTED_DIR = "_rejected"
META_PREFIX = "streamscore."


@dataclass
class FileResult:
    """What happened to one input file."""

    input: str
    output: str
    status: str  # ok | skipped | failed
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    error: str | None = None
    rejected_reasons: dict[str, int] = field(default_factory=dict)

    def event(self) -> dict[str, Any]:
        payload = {"event": "file", **asdict(self)}
        del payload["rejected_reasons"]  # summed up in the run summary
        return {k: v for k, v in payload.items() if v is not None}


@dataclass
class BatchSummary:
    """The outcome of one batch run; also written to OUTPUT/_streamscore_run.json."""

    run_id: str
    output: str
    model: str
    model_version: str
    model_sha256: str
    provider: str
    model_server: str | None = None  # a remote model's server (its base URL)
    model_lineage: dict[str, str] = field(default_factory=dict)  # registry, alias, run_id
    files_ok: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by a signal before every file was done
    summary_error: str | None = None  # why OUTPUT/_streamscore_run.json could not be written
    streamscore_version: str = __version__

    @property
    def partial(self) -> bool:
        return self.files_failed > 0

    def add(self, result: FileResult) -> None:
        if result.status == "ok":
            self.files_ok += 1
        elif result.status == "skipped":
            self.files_skipped += 1
        else:
            self.files_failed += 1
            self.failures.append(f"{result.input}: {result.error}")
        self.rows_in += result.rows_in
        self.rows_scored += result.rows_scored
        self.rows_rejected += result.rows_rejected
        for reason, count in result.rejected_reasons.items():
            self.rejected_reasons[reason] = self.rejected_reasons.get(reason, 0) + count

    def as_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        if payload["model_server"] is None:  # an embedded model
            del payload["model_server"]
        return payload


@dataclass
class _PlannedFile:
    item: ParquetInput
    output: Path
    rejected: Path
    scorer: Scorer
    columns: list[str]
    keep: list[str]
    rows: int
    fingerprint: str
    schema: pa.Schema
    # A part of a file split by row group (Ray): only these row groups, whose first row is
    # row ``first_row`` of the file; ``output`` and ``rejected`` are then the part's files.
    row_groups: tuple[int, ...] | None = None
    first_row: int = 0


@contextlib.contextmanager
def output_lock(output: Path, run_id: str) -> Iterator[None]:
    """Hold an exclusive lock on OUTPUT for the run; the OS frees it if the process dies."""
    path = output / LOCK_NAME
    try:
        output.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockedError(
                f"{output} is being written by another streamscore run ({holder})",
                hint="wait for it to finish; the lock is released when that process exits",
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}, run {run_id}")
            handle.flush()
        except OSError as exc:
            raise output_error(path, exc) from exc
        yield
    finally:
        with contextlib.suppress(OSError):  # a failed write leaves a buffer close can't flush
            handle.close()


def options_digest(options: BatchOptions) -> str:
    """Identifies everything besides model and input that changes an output file."""
    return options.scoring.digest(on_error=options.on_error.value)


def _output_metadata(path: Path) -> dict[str, str]:
    try:
        raw = pq.read_metadata(path).metadata or {}
    except Exception:  # unreadable output counts as absent: it will be rewritten
        return {}
    return {k.decode(): v.decode() for k, v in raw.items()}


def _is_current(output: Path, wanted: dict[str, str]) -> bool:
    if not output.is_file():
        return False
    found = _output_metadata(output)
    return all(found.get(key) == value for key, value in wanted.items())


class _Stopped(Exception):
    """Raised between batches once ``stop`` is set: unwinds the pipeline through its abort."""


class BatchRun:
    """One execution of ``streamscore batch``; use :func:`run_batch`."""

    def __init__(
        self,
        options: BatchOptions,
        model: Model,
        reporter: Reporter,
        stop: threading.Event | None = None,
        *,
        run_id: str | None = None,
        calls: int = 1,
    ) -> None:
        """``run_id`` is given by Ray workers, which score files of the driver's run;
        ``calls``: model calls run at once (:meth:`BatchOptions.placement`)."""
        self.options = options
        self.model = model
        self.calls = calls
        self.reporter = reporter
        self.stop = stop or threading.Event()
        self.run_id = run_id or (
            time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        )
        self.digest = options_digest(options)
        ref = model.ref
        self.summary = BatchSummary(
            run_id=self.run_id,
            output=str(options.output),
            model=ref.name,
            model_version=ref.version,
            model_sha256=ref.sha256,
            provider=model.provider,
            model_server=ref.server or None,
            model_lineage=ref.lineage,
        )

    def _identity(self, fp: str) -> dict[str, str]:
        return {
            META_PREFIX + "source_fingerprint": fp,
            META_PREFIX + "model_sha256": self.model.ref.sha256,
            META_PREFIX + "options_digest": self.digest,
        }

    def plan(self, item: ParquetInput) -> _PlannedFile | FileResult:
        """Check one input before reading its data: skip it, fail it, or plan it."""
        output = self.options.output / item.relative
        base = FileResult(str(item.relative), str(output), "failed")
        try:
            parquet = open_parquet(item.path)
            schema = parquet.schema_arrow
            rows = parquet.metadata.num_rows
            parquet.close()
            _check_names(schema, quarantine=self.options.on_error is OnError.quarantine)
            fp = fingerprint(item.path)
            if not self.options.force and _is_current(output, self._identity(fp)):
                base.status = "skipped"
                return base
            return self.plan_scoring(item, fp, schema, rows)
        except InputError as exc:
            base.error = exc.one_line()
            return base

    def plan_scoring(
        self, item: ParquetInput, fp: str, schema: pa.Schema, rows: int
    ) -> _PlannedFile:
        """Plan how one input (footer already read) is scored; InputError if it cannot be."""
        output = self.options.output / item.relative
        s = self.options.scoring
        scorer = Scorer.for_schema(
            self.model,
            schema,
            features=s.features,
            outputs=s.outputs,
            reject_nan=s.reject_nan,
            batch_size=s.batch_size,
        )
        names = list(schema.names)
        keep = s.keep.resolve(names, scorer.plan.columns)
        scores = scorer.score_schema()
        clashes = [name for name in keep if scores is not None and name in scores.names]
        if clashes:  # two columns of one name make the output unreadable for most tools
            raise UsageError(
                f"input column(s) {', '.join(clashes)} of {item.path} have the name of a score "
                "column",
                hint="leave them out with --keep, or choose outputs with --outputs",
            )
        quarantine = self.options.on_error is OnError.quarantine
        wanted = set(names) if quarantine else set(scorer.plan.columns) | set(keep)
        return _PlannedFile(
            item=item,
            output=output,
            rejected=self.options.output / REJECTED_DIR / item.relative,
            scorer=scorer,
            columns=[name for name in names if name in wanted],
            keep=keep,
            rows=rows,
            fingerprint=fp,
            schema=schema,
        )

    def score_file(self, planned: _PlannedFile) -> FileResult:
        """Read, score and write one planned file; input errors fail only this file."""
        started = time.perf_counter()
        try:
            stats = self.write_scores(planned)
        except (InputError, ModelError, OutputError, RemoteError) as exc:
            # A model server that is away fails this file only: its output is discarded and
            # a rerun scores it; nothing of it was quarantined as bad data.
            if self.options.on_error is OnError.fail:
                raise _naming(exc, planned.item.path) from exc
            return self.failed(planned, exc)
        return self.finish_file(planned, stats, started)

    def failed(self, planned: _PlannedFile, exc: StreamscoreError) -> FileResult:
        """Fail a file that could not be scored: remove its outputs (of earlier runs too)."""
        _discard_outputs(planned.output, planned.rejected)
        result = FileResult(str(planned.item.relative), str(planned.output), "failed")
        result.error = exc.one_line()
        return result

    def output_metadata(self, planned: _PlannedFile) -> dict[str, str]:
        """The key-value metadata of an output file (the row counts are added on commit)."""
        metadata = {
            **self._identity(planned.fingerprint),
            META_PREFIX + "model_name": self.model.ref.name,
            META_PREFIX + "model_version": self.model.ref.version,
            **{
                META_PREFIX + "model_" + key: value for key, value in self.model.ref.lineage.items()
            },
            META_PREFIX + "version": __version__,
            META_PREFIX + "source_file": str(planned.item.path),
            META_PREFIX + "run_id": self.run_id,
            META_PREFIX + "provider": self.model.provider,
        }
        if self.model.ref.server:
            metadata[META_PREFIX + "model_server"] = self.model.ref.server
        scores = planned.scorer.score_schema()
        if scores is not None:  # lets `compare --scored` tell scores from kept columns
            metadata[META_PREFIX + "score_columns"] = ",".join(scores.names)
        return metadata

    def write_scores(self, planned: _PlannedFile) -> PipelineStats:
        """Score one planned file (or part) into its output and rejected files, atomically.

        Raises InputError, ModelError or OutputError when it cannot; nothing partial is left
        then.
        """
        scores = planned.scorer.score_schema()
        sink = ParquetFileSink(
            planned.output,
            planned.rejected,
            planned.keep,
            row_group_rows=self.options.row_group_rows,
            metadata=self.output_metadata(planned),
            quarantine=self.options.on_error is OnError.quarantine,
            # An output without rows (empty input, every row rejected) keeps its columns,
            # so the output folder still reads as one table.
            empty_schema=None
            if scores is None
            else pa.schema([planned.schema.field(c) for c in planned.keep] + list(scores)),
        )
        source = ParquetSource(
            planned.item.path,
            planned.columns,
            self.options.chunk_rows,
            row_groups=planned.row_groups,
        )
        position = planned.first_row

        def on_batch(batch: SourceBatch, scored: ScoredBatch) -> None:
            nonlocal position
            if self.stop.is_set():
                raise _Stopped
            if len(scored.rejected) and self.options.on_error is OnError.fail:
                row = position + int(scored.rejected[0])
                raise InputError(
                    f"{planned.item.path}: row {row}: {scored.reasons[0]}",
                    hint="fix the data, or use --on-error quarantine to set bad rows aside",
                )
            position += batch.rows.num_rows
            self.reporter.advance("rows", batch.rows.num_rows)

        try:
            return run_pipeline(
                source, planned.scorer, sink, on_batch=on_batch, score_workers=self.calls
            )
        except OSError as exc:  # reading errors are InputErrors: this is the output
            raise output_error(planned.output, exc) from exc

    def finish_file(
        self, planned: _PlannedFile, stats: PipelineStats, started: float
    ) -> FileResult:
        """The result of a file whose outputs are written; fails it if no row could be scored."""
        result = FileResult(str(planned.item.relative), str(planned.output), "ok")
        self.reporter.advance("files", 1)
        if stats.rows_in and not stats.rows_scored:
            # Most likely a schema problem (e.g. text where numbers belong), not bad rows:
            # fail the file, keep its rejects for inspection, and retry it on the next run.
            _discard_outputs(planned.output, None)
            first = next(iter(stats.reasons), "")
            result.status = "failed"
            result.error = f"all {stats.rows_in} rows were rejected (e.g. {first})"
        result.rejected_reasons = dict(stats.reasons)
        result.rows_in, result.rows_scored = stats.rows_in, stats.rows_scored
        result.rows_rejected = stats.rows_rejected
        result.seconds = round(time.perf_counter() - started, 3)
        return result

    def execute(self) -> BatchSummary:
        started = time.perf_counter()
        _check_paths(self.options.input, self.options.output)
        inputs = discover_parquet(self.options.input, exclude=self.options.output)
        if not inputs:
            raise InputError(f"no .parquet files under {self.options.input}")
        with output_lock(self.options.output, self.run_id):
            remove_stale_temp_files(self.options.output)
            plans = [self.plan(item) for item in inputs]
            todo = [p for p in plans if isinstance(p, _PlannedFile)]
            if not todo and all(p.status == "failed" for p in plans if isinstance(p, FileResult)):
                failures = [p for p in plans if isinstance(p, FileResult)]
                more = f" (and {len(failures) - 1} more file(s))" if len(failures) > 1 else ""
                raise InputError(
                    f"{failures[0].input}: {failures[0].error or 'cannot be read'}{more}"
                )
            self.reporter.add_task("files", "files", len(todo))
            self.reporter.add_task("rows", "rows", sum(p.rows for p in todo))
            for plan in plans:
                if isinstance(plan, FileResult):
                    if plan.status == "failed":  # its earlier output no longer matches it
                        output = Path(plan.output)
                        relative = output.relative_to(self.options.output)
                        _discard_outputs(output, self.options.output / REJECTED_DIR / relative)
                    self._record(plan)
            try:
                for result in self._score(todo):
                    self._record(result)
                    if self.stop.is_set():
                        break
            except _Stopped:
                pass
            self.summary.failures.sort()  # workers finish in any order
            self.summary.interrupted = self.stop.is_set()
            if self.options.input.is_dir() and not self.summary.interrupted:
                self._handle_orphans({item.relative for item in inputs})
            self.summary.seconds = round(time.perf_counter() - started, 3)
            if self.summary.seconds > 0:
                self.summary.rows_per_second = round(self.summary.rows_in / self.summary.seconds, 1)
            summary_path = self.options.output / SUMMARY_NAME
            try:
                _write_json_atomically(summary_path, self.summary.as_dict())
            except OSError as exc:  # the outputs are done: report them, then the failure
                self.summary.summary_error = output_error(summary_path, exc).one_line()
        return self.summary

    def _score(self, todo: list[_PlannedFile]) -> Iterable[FileResult]:
        """Score the planned files here, one after another, or on a Ray cluster."""
        if self.options.ray is None:
            return (self.score_file(planned) for planned in todo)
        from streamscore.ray_batch import score_on_ray  # needs the ray extra

        return score_on_ray(self, todo)

    def _handle_orphans(self, current: set[Path]) -> None:
        """Outputs whose input is gone: listed in the summary, deleted with ``prune``."""
        orphans = find_orphans(self.options.output, current)
        for relative in orphans:
            if self.options.prune:
                rejected = self.options.output / REJECTED_DIR / relative
                _discard_outputs(self.options.output / relative, rejected)
            self.summary.orphans.append(str(relative))
        if orphans:
            action = "deleted" if self.options.prune else "kept (use --prune to delete them)"
            self.reporter.event(
                {
                    "event": "warning",
                    "message": f"{len(orphans)} output file(s) have no input any more: {action}",
                }
            )

    def _record(self, result: FileResult) -> None:
        self.summary.add(result)
        self.reporter.event(result.event())


def _check_paths(source: Path, output: Path) -> None:
    """Refuse OUT layouts that would overwrite inputs or are not directories."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--out {output} exists and is not a directory")
    if source.exists() and _is_within(source.resolve(), output.resolve()):
        raise UsageError(
            f"--out {output} contains the input {source}; outputs would overwrite inputs",
            hint="choose an output directory outside the input (inside it is fine)",
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {output}: {exc.strerror}") from exc


def _naming(exc: StreamscoreError, path: Path) -> StreamscoreError:
    """``exc`` with a message that names the input file, as a one-line error must."""
    if str(path) in exc.message or exc.message.startswith(f"{path.name}:"):
        return exc
    return type(exc)(f"{path}: {exc.message}", hint=exc.hint)


def _check_names(schema: pa.Schema, *, quarantine: bool) -> None:
    """Column names that would make an output or its rejects file ambiguous."""
    seen: set[str] = set()
    for name in schema.names:
        if name in seen:
            raise InputError(
                f"column '{name}' appears twice in the file",
                hint="give every column a distinct name",
            )
        seen.add(name)
    if quarantine and REASON_COLUMN in seen:
        raise InputError(
            f"input column '{REASON_COLUMN}' clashes with the reason column of rejected rows",
            hint="rename it, or use --on-error skip",
        )


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _discard_outputs(output: Path, rejected: Path | None) -> None:
    for path in (output, rejected):
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def find_orphans(output: Path, current: set[Path]) -> list[Path]:
    """Outputs written by streamscore whose input (relative path) is not in ``current``."""
    orphans: list[Path] = []
    for path in sorted(output.rglob("*.parquet")):
        relative = path.relative_to(output)
        if relative.parts[0] == REJECTED_DIR or any(p.startswith(".") for p in relative.parts):
            continue
        if relative not in current and META_PREFIX + "source_file" in _output_metadata(path):
            orphans.append(relative)
    return orphans


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        os.replace(temp, path)
    except BaseException:  # a full disk, say: leave no half-written file behind
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise


def run_batch(
    options: BatchOptions,
    reporter: Reporter | None = None,
    *,
    stop: threading.Event | None = None,
) -> BatchSummary:
    """Score every Parquet file under ``options.input``; see the module docstring.

    Returns the summary; a summary with ``partial`` set means some files failed, one with
    ``interrupted`` that ``stop`` was set before the end, one with ``summary_error`` that
    the summary file could not be written. Raises StreamscoreError subclasses
    for problems that stop the whole run.
    """
    reporter = reporter or SilentReporter()
    use_reusing_allocator()
    s = options.scoring
    if options.ray is not None:  # check before the slow part: the extra is installed
        from streamscore.ray_batch import check_ray_installed
        from streamscore.remote import is_model_url

        check_ray_installed()
        if is_model_url(s.model):
            raise UsageError(
                "--ray scores with the model inside each Ray worker; a model server URL is "
                "not supported there",
                hint="run batch without --ray for a model on a server",
            )
        # The driver only plans (model signature and identity); Ray workers score.
        model: Model = load_model(
            resolve_model(s.model, s.registry), provider="cpu", threads=1, spin=False
        )
        calls = 1
    else:
        from streamscore.remote.url import is_model_url

        embedded_cpu = not is_model_url(s.model) and runs_on_cpu(s.provider)
        threads, calls = options.placement(on_cpu=embedded_cpu)
        # No spinning: ONNX Runtime's idle workers would take the cores reader and writer need.
        model = open_model(
            s.model,
            provider=s.provider,
            threads=threads,
            spin=False,
            remote=s.remote,
            registry=s.registry,
        )
    try:
        return BatchRun(options, model, reporter, stop, calls=calls).execute()
    finally:
        close_model(model)
        reporter.close()
