"""``streamscore batch --ray`` on a real local Ray cluster: same outputs as a local run.

The cluster (conftest ``ray_cluster``) is started once per session with ``ray start``; its
workers are separate processes, so killing one is a real worker crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.data import dense_table, read_output, streamscore_metadata, write_parquet
from helpers.models import TrainedModel
from helpers.ray_cluster import RayCluster
from helpers.runs import batch_options, invoke
from streamscore.batch import SUMMARY_NAME, BatchSummary, run_batch
from streamscore.config import OnError, RayOptions
from streamscore.errors import InputError
from streamscore.reporting import RecordingReporter

pytestmark = pytest.mark.ray

VOLATILE_SUMMARY = ("run_id", "seconds", "rows_per_second")


class ProgressReporter(RecordingReporter):
    """Records events and adds up progress per task key."""

    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[str, int | None] = {}
        self.done: dict[str, int] = {}

    def add_task(
        self, key: str, description: str, total: int | None, *, completed: int = 0
    ) -> None:
        self.totals[key] = total

    def advance(self, key: str, amount: int) -> None:
        self.done[key] = self.done.get(key, 0) + amount


def with_nulls(table: pa.Table, column: str, rows: list[int]) -> pa.Table:
    values = table.column(column).to_pylist()
    for row in rows:
        values[row] = None
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values))


def parquet_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_same_outputs(local: Path, ray: Path) -> None:
    """Same files; same rows, row groups and metadata (but the run id) in each."""
    assert parquet_files(ray) == parquet_files(local)
    for relative in parquet_files(local):
        if not relative.endswith(".parquet"):
            continue
        a, b = local / relative, ray / relative
        assert read_output(b).equals(read_output(a)), relative
        assert pq.read_metadata(b).num_row_groups == pq.read_metadata(a).num_row_groups
        meta_a, meta_b = streamscore_metadata(a), streamscore_metadata(b)
        assert meta_a.pop("run_id") != meta_b.pop("run_id")
        assert meta_b == meta_a, relative


def summary_without_run(summary: BatchSummary | dict[str, Any]) -> dict[str, Any]:
    as_dict = summary if isinstance(summary, dict) else summary.as_dict()
    return {k: v for k, v in as_dict.items() if k not in VOLATILE_SUMMARY}


# ---------------------------------------------------------------- same outputs as a local run


def test_a_ray_run_writes_what_a_local_run_writes(
    tmp_path: Path, dense_model: TrainedModel, ray_cluster: RayCluster
) -> None:
    source = tmp_path / "in"
    write_parquet(source / "day=1" / "small.parquet", dense_table(300))
    write_parquet(
        source / "day=1" / "some-bad.parquet", with_nulls(dense_table(200), "f1", [3, 150])
    )
    # Split into 5 parts of 1,000 rows; bad rows in parts 1 and 4 go to the rejects file.
    big = with_nulls(dense_table(5000, seed=2), "f0", [7, 3456, 3999])
    write_parquet(source / "big.parquet", big, row_group_size=500)
    # Split in 2 parts, every row rejected: the file fails, its rejects stay.
    all_bad = with_nulls(dense_table(2000), "f2", list(range(2000)))
    write_parquet(source / "all-bad.parquet", all_bad, row_group_size=500)
    (source / "corrupt.parquet").write_bytes(b"PAR1 not really parquet")

    options = batch_options(source, tmp_path / "local", dense_model.path, threads=1)
    local_progress = ProgressReporter()
    local = run_batch(options, local_progress)
    ray_progress = ProgressReporter()
    ray = run_batch(
        replace(
            options,
            output=tmp_path / "ray",
            ray=RayOptions(ray_cluster.address, workers=2, part_rows=1000),
        ),
        ray_progress,
    )

    assert local.partial and (local.files_ok, local.files_failed) == (3, 2)
    assert summary_without_run(ray) == {
        **summary_without_run(local),
        "output": str(tmp_path / "ray"),
    }
    written = json.loads((tmp_path / "ray" / SUMMARY_NAME).read_text())
    assert summary_without_run(written) == summary_without_run(ray)
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
    assert (tmp_path / "ray" / "_rejected" / "big.parquet").exists()
    assert (tmp_path / "ray" / "_rejected" / "all-bad.parquet").exists()

    def file_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        volatile = ("seconds", "output")
        found = [
            {k: v for k, v in e.items() if k not in volatile}
            for e in events
            if e["event"] == "file"
        ]
        return sorted(found, key=lambda e: str(e["input"]))

    assert file_events(ray_progress.events) == file_events(local_progress.events)
    assert ray_progress.totals == local_progress.totals
    assert ray_progress.done == local_progress.done == {"rows": 7500, "files": 4}

    # What one wrote, the other skips: outputs carry the same identity.
    rerun = run_batch(replace(options, output=tmp_path / "ray"))
    assert (rerun.files_skipped, rerun.files_ok) == (3, 0)


def test_on_error_fail_stops_at_the_same_row_as_a_local_run(
    tmp_path: Path, dense_model: TrainedModel, ray_cluster: RayCluster
) -> None:
    source = tmp_path / "in"
    bad = with_nulls(dense_table(4000), "f3", [2345])
    write_parquet(source / "big.parquet", bad, row_group_size=500)
    options = batch_options(
        source, tmp_path / "local", dense_model.path, on_error=OnError.fail, threads=1
    )

    with pytest.raises(InputError) as local:
        run_batch(options)
    with pytest.raises(InputError) as ray:
        run_batch(
            replace(
                options,
                output=tmp_path / "ray",
                ray=RayOptions(ray_cluster.address, workers=2, part_rows=1000),
            )
        )

    assert "row 2345" in local.value.message
    assert ray.value.one_line() == local.value.one_line()
    assert not (tmp_path / "ray" / "big.parquet").exists()


# ---------------------------------------------------------------- crashes and reruns


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory, dense_model: TrainedModel) -> Path:
    """Enough rows that a run on 2 workers lasts a few seconds, with a local run's output."""
    root = tmp_path_factory.mktemp("many")
    for i in range(6):
        table = with_nulls(dense_table(200_000, seed=i, first_id=i * 1_000_000), "f0", [i])
        write_parquet(root / "in" / f"part-{i}.parquet", table, row_group_size=50_000)
    run_batch(batch_options(root / "in", root / "clean", dense_model.path, threads=1))
    return root


def batch_process(
    inputs: Path, out: Path, model: Path, address: str, workers: int = 2
) -> subprocess.Popen[str]:
    """``streamscore batch --ray`` as a separate process, JSON lines on its stdout."""
    command = [sys.executable, "-m", "streamscore", "batch", str(inputs), "--out", str(out)]
    command += [
        "--model",
        str(model),
        "--threads",
        "1",
        "--ray",
        address,
        "--workers",
        str(workers),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )


def wait_for_first_file(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if json.loads(line)["event"] == "file":
            return lines
    raise AssertionError(f"no file finished: {process.communicate()[1][-2000:]}")


def visible_outputs_are_complete(out: Path, clean: Path) -> None:
    for path in out.rglob("*.parquet"):
        relative = path.relative_to(out)
        if not any(part.startswith(".") for part in relative.parts):
            assert read_output(path).equals(read_output(clean / relative)), relative


def test_a_killed_worker_is_replaced_and_the_run_completes(
    many_files: Path, dense_model: TrainedModel, ray_cluster: RayCluster
) -> None:
    out = many_files / "worker-killed"
    process = batch_process(many_files / "in", out, dense_model.path, ray_cluster.address)
    wait_for_first_file(process)
    victims = ray_cluster.workers()
    assert victims and process.poll() is None, "the run ended before a worker could be killed"
    victims[0].send_signal(signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=240)

    assert process.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout.splitlines()[-1])
    assert (summary["files_ok"], summary["files_failed"]) == (6, 0)
    assert all(line.startswith("{") for line in stdout.splitlines()), stdout
    events = {json.loads(line)["event"] for line in stdout.splitlines()}
    assert events <= {"file", "progress", "summary"}
    assert_same_outputs(many_files / "clean", out)
    assert not [p for p in out.rglob("*") if ".streamscore-tmp-" in p.name]


def test_a_rerun_after_the_driver_is_killed_completes_what_was_left(
    many_files: Path, dense_model: TrainedModel, ray_cluster: RayCluster
) -> None:
    out = many_files / "driver-killed"
    process = batch_process(many_files / "in", out, dense_model.path, ray_cluster.address)
    wait_for_first_file(process)
    assert process.poll() is None, "the run ended before the driver could be killed"
    process.kill()
    process.communicate()
    visible_outputs_are_complete(out, many_files / "clean")
    finished = len(list(out.glob("part-*.parquet")))

    rerun = batch_process(many_files / "in", out, dense_model.path, ray_cluster.address)
    stdout, stderr = rerun.communicate(timeout=240)

    assert rerun.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["files_skipped"] >= finished >= 1
    assert summary["files_ok"] + summary["files_skipped"] == 6
    assert_same_outputs(many_files / "clean", out)


def test_sigterm_stops_a_ray_run_like_a_local_one_and_a_rerun_finishes_it(
    many_files: Path, dense_model: TrainedModel, ray_cluster: RayCluster
) -> None:
    out = many_files / "terminated"
    process = batch_process(many_files / "in", out, dense_model.path, ray_cluster.address)
    wait_for_first_file(process)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 143, stderr[-2000:]
    assert json.loads(stdout.splitlines()[-1])["interrupted"] is True
    assert json.loads((out / SUMMARY_NAME).read_text())["interrupted"] is True
    visible_outputs_are_complete(out, many_files / "clean")
    rerun = batch_process(many_files / "in", out, dense_model.path, ray_cluster.address)
    assert rerun.wait(timeout=240) == 0
    assert_same_outputs(many_files / "clean", out)


# ---------------------------------------------------------------- the command line


def test_cuda_workers_beyond_the_clusters_gpus_exit_11_with_one_line(
    tmp_path: Path, dense_model: TrainedModel, ray_cluster: RayCluster
) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", dense_table(10))
    result = invoke(
        "batch", tmp_path / "in", "--out", tmp_path / "out", "--model", dense_model.path,
        "--provider", "cuda", "--ray", ray_cluster.address, "--workers", "2",
    )  # fmt: skip
    assert result.exit_code == 11, result.output
    assert result.stderr.strip().count("\n") == 0
    assert "1 GPU(s); 2 worker(s)" in result.stderr and "--provider cpu" in result.stderr


def test_cuda_workers_get_a_gpu_and_a_provider_that_fails_to_load_exits_5(
    tmp_path: Path, dense_model: TrainedModel, ray_cluster: RayCluster
) -> None:
    # The cluster's one GPU exists only as a Ray resource: the worker is placed on it, then
    # ONNX Runtime finds no CUDA, as a local --provider cuda run would (exit 5, one line).
    write_parquet(tmp_path / "in" / "a.parquet", dense_table(10))
    result = invoke(
        "batch", tmp_path / "in", "--out", tmp_path / "out", "--model", dense_model.path,
        "--provider", "cuda", "--ray", ray_cluster.address, "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 5, result.output
    assert result.stderr.strip().count("\n") == 0
    assert "provider cuda requested" in result.stderr
    assert not (tmp_path / "out" / "a.parquet").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_cluster_exits_11_at_once(
    tmp_path: Path, dense_model: TrainedModel, address: str
) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", dense_table(10))
    started = time.monotonic()
    result = invoke(
        "batch", tmp_path / "in", "--out", tmp_path / "out", "--model", dense_model.path,
        "--ray", address,
    )  # fmt: skip
    assert result.exit_code == 11, result.output
    assert result.stderr.startswith(f"error: cannot connect to the Ray cluster at {address}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no Ray Client warning
    assert time.monotonic() - started < 20  # Ray Client alone waits 30 s


def test_without_the_ray_extra_ray_exits_2_naming_the_extra(
    tmp_path: Path, dense_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    write_parquet(tmp_path / "in" / "a.parquet", dense_table(10))
    result = invoke(
        "batch", tmp_path / "in", "--out", tmp_path / "out", "--model", dense_model.path,
        "--ray", "local",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "pip install 'streamscore[ray]'" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_workers_without_ray_exits_2(tmp_path: Path, dense_model: TrainedModel) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", dense_table(10))
    result = invoke(
        "batch", tmp_path / "in", "--out", tmp_path / "out", "--model", dense_model.path,
        "--workers", "2",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--workers needs --ray" in result.stderr


@pytest.mark.slow
def test_ray_local_starts_a_cluster_for_the_run(tmp_path: Path, dense_model: TrainedModel) -> None:
    write_parquet(tmp_path / "in" / "a.parquet", dense_table(100))
    write_parquet(tmp_path / "in" / "b.parquet", dense_table(100, seed=3))
    command = [sys.executable, "-m", "streamscore", "batch", str(tmp_path / "in")]
    command += ["--out", str(tmp_path / "ray"), "--model", str(dense_model.path)]
    command += ["--threads", "1", "--workers", "1", "--ray", "local"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["files_ok"] == 2
    run_batch(batch_options(tmp_path / "in", tmp_path / "local", dense_model.path, threads=1))
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
