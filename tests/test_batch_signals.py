"""``streamscore batch`` stopped by SIGTERM or SIGINT (issue 8 §4): a real process, real signals.

A stopped run aborts the file in progress (its temporary files are removed), writes its
summary and exits 143 for SIGTERM (130 for SIGINT), as cron and systemd expect; the rerun
then scores what is left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers.data import write_parquet
from helpers.models import TrainedModel
from streamscore.batch import SUMMARY_NAME
from streamscore.sinks.parquet import TEMP_MARKER

FILES = 4
ROWS_PER_FILE = 60_000
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("signals") / "in"
    rng = np.random.default_rng(3)
    for i in range(FILES):
        columns = {f"f{j}": pa.array(rng.normal(size=ROWS_PER_FILE)) for j in range(4)}
        write_parquet(
            root / f"part-{i}.parquet", pa.table({"id": np.arange(ROWS_PER_FILE), **columns})
        )
    return root


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if TEMP_MARKER in p.name]


def start(source: Path, out: Path, model: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "streamscore", "batch", str(source), "--model", str(model),
        "--out", str(out), "--batch-size", "200", "--provider", "cpu", "--threads", "1",
        "--log-format", "json",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_mid_file(process: subprocess.Popen[str], out: Path, signum: int) -> None:
    """Send ``signum`` while a file is being written (its temporary file exists)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not (out.is_dir() and temp_files(out)):
        assert process.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signum)


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_mid_file_aborts_it_cleanly_writes_the_summary_and_exits_128_plus_n(
    tmp_path: Path, dataset: Path, dense_model: TrainedModel, signum: int, code: int, word: str
) -> None:
    out = tmp_path / "out"
    process = start(dataset, out, dense_model.path)
    signal_mid_file(process, out, signum)
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)

    assert process.returncode == code, stderr
    assert stderr.splitlines() == [stderr.splitlines()[0]] and stderr.startswith(f"error: {word}")
    assert temp_files(out) == []
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["interrupted"] is True
    assert summary["files_ok"] < FILES and summary["files_failed"] == 0
    assert json.loads(stdout.splitlines()[-1])["event"] == "summary"
    finished = sorted(p.name for p in out.glob("*.parquet"))
    assert len(finished) == summary["files_ok"]

    rerun = start(dataset, out, dense_model.path)
    rerun.communicate(timeout=TIMEOUT_S)
    assert rerun.returncode == 0
    resumed = json.loads((out / SUMMARY_NAME).read_text())
    assert (resumed["files_skipped"], resumed["files_ok"]) == (len(finished), FILES - len(finished))


def test_stopping_many_times_never_leaves_a_temporary_file(
    tmp_path: Path, dataset: Path, dense_model: TrainedModel
) -> None:
    # Ctrl-C used to leave a temporary file about one run in four (when it landed in close()).
    for attempt in range(6):
        out = tmp_path / f"out-{attempt}"
        process = start(dataset, out, dense_model.path)
        signal_mid_file(process, out, signal.SIGINT)
        time.sleep(0.001 * attempt)
        process.communicate(timeout=TIMEOUT_S)
        assert process.returncode == 130
        assert temp_files(out) == [], attempt
