"""A ``streamscore batch`` killed at any moment and rerun ends as if it had never been killed.

A real subprocess is SIGKILLed at a few points of a run over 8 files x 100k rows (some rows
bad, so rejected files are written too); the rerun's output tree must equal a clean run's:
the same files, the same rows in the same order, the same metadata apart from the run id,
and no temporary files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.data import read_output, streamscore_metadata, write_parquet
from helpers.models import TrainedModel
from streamscore.batch import SUMMARY_NAME
from streamscore.sinks.parquet import TEMP_MARKER

pytestmark = pytest.mark.slow

FILES = 8
ROWS_PER_FILE = 100_000
BATCH_SIZE = "500"  # small batches: the run lasts long enough to be killed mid-file
RUN_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 files in hive folders; every 9973rd row has a null input, so each file has rejects."""
    root = tmp_path_factory.mktemp("resume") / "in"
    rng = np.random.default_rng(7)
    for i in range(FILES):
        ids = np.arange(i * ROWS_PER_FILE, (i + 1) * ROWS_PER_FILE)
        columns: dict[str, pa.Array] = {"id": pa.array(ids)}
        for j in range(4):
            nulls = (ids % 9973 == 0) if j == 2 else None
            columns[f"f{j}"] = pa.array(rng.normal(size=ROWS_PER_FILE), mask=nulls)
        columns["extra"] = pa.array(rng.normal(size=ROWS_PER_FILE))
        write_parquet(
            root / f"date=2026-01-0{i // 4 + 1}" / f"part-{i % 4}.parquet", pa.table(columns)
        )
    return root


def batch_command(source: Path, out: Path, model: Path) -> list[str]:
    return [
        sys.executable, "-m", "streamscore", "batch", str(source), "--model", str(model),
        "--out", str(out), "--batch-size", BATCH_SIZE, "--provider", "cpu", "--log-format", "json",
    ]  # fmt: skip


def run_to_end(source: Path, out: Path, model: Path) -> dict[str, Any]:
    done = subprocess.run(
        batch_command(source, out, model), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def run_and_kill(source: Path, out: Path, model: Path, when: Callable[[Path], bool]) -> None:
    """Start a run and SIGKILL it as soon as ``when(out)`` holds."""
    process = subprocess.Popen(
        batch_command(source, out, model), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and when(out):
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if process.poll() is None and time.monotonic() >= deadline:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill point"


def outputs(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.parquet") if TEMP_MARKER not in p.name]


def temp_file_exists(out: Path) -> bool:
    return any(TEMP_MARKER in p.name for p in out.rglob("*"))


def at_least(n: int) -> Callable[[Path], bool]:
    return lambda out: len([p for p in outputs(out) if "_rejected" not in p.parts]) >= n


def snapshot(out: Path) -> dict[str, Any]:
    """Every file under ``out``: Parquet files as (rows, metadata without the run id)."""
    files: dict[str, Any] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = str(path.relative_to(out))
        if path.suffix == ".parquet":
            meta = streamscore_metadata(path)
            del meta["run_id"]
            files[relative] = (read_output(path), meta)
        else:
            files[relative] = None
    return files


@pytest.fixture(scope="module")
def clean_run(dataset: Path, dense_model: TrainedModel) -> dict[str, Any]:
    out = dataset.parent / "clean"
    summary = run_to_end(dataset, out, dense_model.path)
    assert summary["files_ok"] == FILES and summary["rows_rejected"] > 0
    return snapshot(out)


@pytest.mark.parametrize(
    ("kill_point", "when", "finished_before_kill"),
    [
        ("mid-first-file", temp_file_exists, 0),
        ("after-3-files", at_least(3), 3),
        ("after-7-files", at_least(7), 7),
    ],
)
def test_killed_run_resumes_to_the_same_output_as_a_clean_run(
    tmp_path: Path,
    dataset: Path,
    dense_model: TrainedModel,
    clean_run: dict[str, Any],
    kill_point: str,
    when: Callable[[Path], bool],
    finished_before_kill: int,
) -> None:
    out = tmp_path / "out"
    run_and_kill(dataset, out, dense_model.path, when)
    for visible in outputs(out):  # what a killed run leaves visible is complete
        table = pq.read_table(visible)
        meta = streamscore_metadata(visible)
        counted = meta["rows_rejected" if "_rejected" in visible.parts else "rows_scored"]
        assert table.num_rows == int(counted), visible

    summary = run_to_end(dataset, out, dense_model.path)

    assert not temp_file_exists(out)
    assert summary["files_skipped"] >= finished_before_kill
    assert summary["files_ok"] + summary["files_skipped"] == FILES
    resumed = snapshot(out)
    assert sorted(resumed) == sorted(clean_run)  # no missing, extra or temporary files
    for name, expected in clean_run.items():
        if expected is None:
            continue
        table, meta = resumed[name]
        assert table.equals(expected[0]), f"{name}: rows differ after resuming"
        assert meta == expected[1], name
    assert json.loads((out / SUMMARY_NAME).read_text())["files_failed"] == 0
