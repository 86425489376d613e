"""`streamscore batch --ray` against a local `streamscore batch` on the same files, in one run.

Starts a Ray head node of this machine (127.0.0.1, its own temp dir, stopped at the end),
then measures, as separate CLI processes, medians of ``--repeat`` runs:

* throughput - ``--files`` files of ``--rows`` rows (the sample data repeated): rows/s of
               a local run (1 thread, and ONNX Runtime's default), and of ``--ray`` with
               2 workers x 1 thread; rows/s from each run's own summary (connecting to Ray
               and starting the workers included), plus wall time of the whole command;
* overhead   - files of 100 rows: the fixed cost of a Ray run (wall time of a 1-file run,
               ray minus local), and the time per file once running (between the first
               and the last file event of a ``--small-files`` run, ray minus local).

A 2-core machine cannot show a speed-up (the driver, the reader and writer threads and Ray's
own processes share the cores); what matters is that the overhead per file stays small and
that this is the code path a many-node cluster runs.

    .venv/bin/python benchmarks/ray_batch.py [--rows 500000] [--files 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "transactions"
MODEL = ROOT / "sample_data" / "models" / "fraud"
RAY = Path(sys.executable).parent / "ray"


def build_files(folder: Path, files: int, rows: int) -> Path:
    """``files`` Parquet files of ``rows`` rows each, made by repeating the sample data."""
    sample = pq.read_table(sorted(SAMPLE.rglob("*.parquet"))[0])
    for i in range(files):
        path = folder / f"part-{i:04d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, sample.schema, compression="zstd") as writer:
            written = 0
            while written < rows:
                take = sample.slice(0, min(sample.num_rows, rows - written))
                first = i * rows + written
                ids = pa.array(np.arange(first, first + take.num_rows, dtype=np.int64))
                writer.write_table(take.set_column(0, "transaction_id", ids), row_group_size=65536)
                written += take.num_rows
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def ray_cluster(cpus: int) -> Iterator[str]:
    """A Ray head node on 127.0.0.1 in its own temp dir; only its processes are stopped."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ssray-bench-", dir="/tmp"))
    port = free_port()
    command = [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}"]
    command += [f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats"]
    command += [f"--temp-dir={temp_dir}"]
    for option in ("ray-client-server", "dashboard-agent-listen", "dashboard-agent-grpc"):
        command.append(f"--{option}-port={free_port()}")
    command += [f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)
    print(f"ray start: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        procs = [
            p
            for p in psutil.process_iter(["cmdline"])
            if any(
                tag in arg
                for arg in p.info["cmdline"] or []
                for tag in (str(temp_dir), f"--address=127.0.0.1:{port}")
            )
        ]
        procs += [child for p in procs for child in p.children(recursive=True)]
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class Run:
    """One ``streamscore batch`` process, timed from outside."""

    wall: float  # seconds, process start to exit
    rows_per_second: float  # from its own summary (connecting to Ray included)
    file_times: list[float]  # when each file event reached stdout, seconds after start

    @property
    def per_file(self) -> float:
        """Steady-state seconds per file: between the first and the last file event."""
        times = self.file_times
        return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0


def run(inputs: Path, out: Path, *options: str) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "streamscore", "batch", str(inputs), "--out", str(out)]
    command += ["--model", str(MODEL), "--log-format", "json", *options]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    file_times, last = [], ""
    for line in process.stdout:
        if json.loads(line)["event"] == "file":
            file_times.append(time.perf_counter() - started)
        last = line
    stderr = process.stderr.read()
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    wall = time.perf_counter() - started
    return Run(wall, float(json.loads(last)["rows_per_second"]), file_times)


def median_run(repeat: int, inputs: Path, out: Path, *options: str) -> Run:
    """The run of median wall time among ``repeat`` runs."""
    runs = sorted((run(inputs, out, *options) for _ in range(repeat)), key=lambda r: r.wall)
    return runs[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000, help="rows per throughput file")
    parser.add_argument("--files", type=int, default=4, help="throughput files")
    parser.add_argument("--small-files", type=int, default=100, help="files for the overhead")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    # A one-machine cluster binds to 127.0.0.1 only with this (see streamscore.ray_batch).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # see tests/conftest.py

    work = Path(tempfile.mkdtemp(prefix="streamscore-ray-bench-"))
    try:
        big = build_files(work / "big", args.files, args.rows)
        small = build_files(work / "small", args.small_files, 100)
        one = build_files(work / "one", 1, 100)
        with ray_cluster(cpus=2) as address:
            ray = ("--ray", address, "--workers", "2", "--threads", "1")
            local_1 = median_run(args.repeat, big, work / "out", "--threads", "1")
            local_d = median_run(args.repeat, big, work / "out")
            on_ray = median_run(args.repeat, big, work / "out", *ray)
            small_local = median_run(args.repeat, small, work / "out", "--threads", "1")
            one_local = median_run(args.repeat, one, work / "out", "--threads", "1")
            small_ray = median_run(args.repeat, small, work / "out", *ray)
            one_ray = median_run(args.repeat, one, work / "out", *ray)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = args.files * args.rows
    print(f"throughput: {args.files} files x {args.rows:,} rows = {rows:,} rows, fraud model, ")
    print(f"median of {args.repeat} runs each, on this machine ({os.cpu_count()} cores)")
    print(f"  {'run':<30}{'rows/s':>10}{'wall s':>8}{'rows/s vs local 1t':>20}")
    for name, one in (
        ("local, 1 thread", local_1),
        ("local, ORT default threads", local_d),
        ("--ray, 2 workers x 1 thread", on_ray),
    ):
        ratio = one.rows_per_second / local_1.rows_per_second
        print(f"  {name:<30}{one.rows_per_second:>10,.0f}{one.wall:>8.2f}{ratio:>20.2f}")
    n = args.small_files
    print(f"overhead: files of 100 rows, median of {args.repeat} runs each")
    print(f"  wall, 1 file: local {one_local.wall:.2f} s, --ray {one_ray.wall:.2f} s")
    print(
        f"  fixed cost of a Ray run (connect, start workers, load model): "
        f"{one_ray.wall - one_local.wall:.2f} s"
    )
    print(
        f"  {n} files, steady state between first and last file: local "
        f"{small_local.per_file * 1000:.1f} ms/file, --ray (2 workers) "
        f"{small_ray.per_file * 1000:.1f} ms/file"
    )
    print(f"  added per file by Ray: {(small_ray.per_file - small_local.per_file) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
