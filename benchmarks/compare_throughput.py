"""Compare throughput and memory: `streamscore compare` against two `streamscore batch` runs.

`compare DATA -m A -m B` reads DATA once and scores it with both models; the alternative is
scoring it twice with `batch` and joining the outputs. Measured now, on this machine, as
subprocesses (median of --repeat runs):

* batch A + batch B  - wall seconds of the two batch runs together;
* compare            - wall seconds of one compare run (statistics, top rows, no report);
* ratio              - compare / (batch A + batch B) (target: <= 1.0: one pass, no writes);
* peak RSS of compare on N rows and on 4N rows (target: 4N within 1.25x of N: bounded).

    .venv/bin/python benchmarks/compare_throughput.py [--rows 400000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "transactions"
MODELS = ROOT / "sample_data" / "models"
CLI = [sys.executable, "-m", "streamscore"]


def build_file(path: Path, rows: int) -> Path:
    """``rows`` rows made by repeating the sample data."""
    sample = pq.read_table(SAMPLE)
    sample = sample.drop_columns([c for c in sample.column_names if c == "date"])
    copies = [sample] * (rows // sample.num_rows + 1)
    table = pa.concat_tables(copies).slice(0, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=65536)
    return path


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one subprocess."""
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        assert process.stderr is not None
        raise SystemExit(f"failed ({status}): {' '.join(args)}\n{process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    a, b = str(MODELS / "fraud" / "1"), str(MODELS / "fraud" / "2")
    common = ["--provider", "cpu", "--threads", "1", "--log-format", "json"]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        small = build_file(tmp / "n" / "part-0.parquet", options.rows).parent
        large = build_file(tmp / "4n" / "part-0.parquet", options.rows * 4).parent
        batch_s, compare_s, rss_small, rss_large = [], [], [], []
        for _ in range(options.repeat):
            seconds = 0.0
            for name, model in (("a", a), ("b", b)):
                out = tmp / f"out-{name}"
                seconds += run([*CLI, "batch", str(small), "-m", model, "-o", str(out),
                                "--force", *common])[0]  # fmt: skip
            batch_s.append(seconds)
            seconds, rss = run([*CLI, "compare", str(small), "-m", a, "-m", b, *common])
            compare_s.append(seconds)
            rss_small.append(rss)
            rss_large.append(run([*CLI, "compare", str(large), "-m", a, "-m", b, *common])[1])
    batch, compare = statistics.median(batch_s), statistics.median(compare_s)
    print(f"rows {options.rows:,} (fraud v1 vs v2, 1 thread, median of {options.repeat})")
    print(f"batch A + batch B  {batch:6.2f} s")
    print(f"compare            {compare:6.2f} s   ratio {compare / batch:.2f} (target <= 1.0)")
    small_rss, large_rss = statistics.median(rss_small), statistics.median(rss_large)
    print(
        f"compare peak RSS   {small_rss:6.0f} MiB on N rows, {large_rss:.0f} MiB on 4N "
        f"(x{large_rss / small_rss:.2f}, target <= 1.25)"
    )


if __name__ == "__main__":
    main()
