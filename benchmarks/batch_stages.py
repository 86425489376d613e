"""Per-stage cost of `streamscore batch`, in nanoseconds per row, each stage run alone.

Runs the batch pipeline's own pieces one after another on one thread, timing each:

* read      - ``ParquetSource.batches()`` (Parquet decode of the needed columns, slicing);
* convert   - ``Scorer.prepare`` (validity checks, float32 feed matrix);
* score     - the model alone (``LoadedModel.run`` on the prepared feeds);
* assemble  - the rest of ``Scorer.run`` (score columns, NaN check) plus passthrough columns;
* encode    - ``AtomicParquetWriter.write`` (row groups: encode, zstd, into the page cache);
* commit    - ``AtomicParquetWriter.commit`` (the last row group, footer, fsync, rename).

Stages are timed one at a time in CPU time (all threads), so they add up to the CPU the
pipeline spends per row; it overlaps read/convert and write with scoring on other threads.
Medians of 3.

    .venv/bin/python benchmarks/batch_stages.py [--rows 2000000] [--model fraud_mlp/1]
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from pathlib import Path

from batch_throughput import DATA, LIGHT_GBDT, build_file, model_path
from streamscore.config import ROW_GROUP_ROWS, KeepColumns
from streamscore.model.repository import resolve_model
from streamscore.model.session import load_model
from streamscore.scoring import Scorer
from streamscore.sinks.parquet import AtomicParquetWriter
from streamscore.sources.parquet import ParquetSource, open_parquet


def stage_costs(source: Path, model_name: str, args: argparse.Namespace) -> dict[str, float]:
    """CPU seconds (all threads) spent in each stage over the whole file."""
    model = load_model(
        resolve_model(model_path(model_name)), provider="cpu", threads=args.threads, spin=False
    )
    schema = open_parquet(source).schema_arrow
    # Runs against older checkouts too: there the source yields batches of --batch-size rows
    # and the scorer runs whatever it is given in one call.
    chunked = "batch_size" in inspect.signature(Scorer.for_schema).parameters
    extra = {"batch_size": args.batch_size} if chunked else {}
    scorer = Scorer.for_schema(model, schema, **extra)  # type: ignore[arg-type]
    keep = KeepColumns().resolve(list(schema.names), scorer.plan.columns)
    columns = [n for n in schema.names if n in set(keep) | set(scorer.plan.columns)]
    chunk = args.chunk_rows if chunked else args.batch_size

    seconds = dict.fromkeys(STAGES, 0.0)
    clock = time.process_time
    with tempfile.TemporaryDirectory(prefix="ss-stages-") as folder:
        rows = args.row_group_rows if chunked else 65536
        writer = AtomicParquetWriter(Path(folder) / "out.parquet", row_group_rows=rows)
        batches = ParquetSource(source, columns, chunk).batches()
        while True:
            started = clock()
            batch = next(batches, None)
            seconds["read"] += clock() - started
            if batch is None:
                break
            started = clock()
            feeds = scorer.prepare(batch.rows)
            seconds["convert"] += clock() - started
            started = clock()
            for i in range(0, len(feeds.accepted), args.batch_size):
                sliced = {k: v[i : i + args.batch_size] for k, v in feeds.arrays.items()}
                model.run(scorer.outputs.run, sliced)
            model_seconds = clock() - started
            seconds["score"] += model_seconds
            started = clock()
            out = scorer.run(feeds).with_passthrough(batch.rows, keep)
            seconds["assemble"] += clock() - started - model_seconds
            started = clock()
            writer.write(out)
            seconds["encode"] += clock() - started
        started = clock()
        writer.commit({})
        seconds["commit"] += clock() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--chunk-rows", type=int, default=65536)
    parser.add_argument("--row-group-rows", type=int, default=ROW_GROUP_ROWS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", action="append", default=None)
    args = parser.parse_args()
    source = build_file(DATA / f"bench_{args.rows}.parquet", args.rows)
    print(f"input: {source.name}, batch size {args.batch_size}, {args.threads} ORT thread(s)")
    print(f"{'model':<12} " + " ".join(f"{s:>9}" for s in (*STAGES, "total")) + "  (CPU ns/row)")
    for name in args.model or ["fraud/1", LIGHT_GBDT, "fraud_mlp/1"]:
        runs = [stage_costs(source, name, args) for _ in range(3)]
        median = {s: sorted(r[s] for r in runs)[1] for s in STAGES}
        cells = [median[s] / args.rows * 1e9 for s in STAGES]
        # The first run in this process also pays one-off costs (lazy imports, allocator
        # warm-up) that a batch run pays once inside its first file.
        first = sum(runs[0].values()) - sum(median.values())
        print(
            f"{name:<12} "
            + " ".join(f"{c:>9.0f}" for c in [*cells, sum(cells)])
            + f"  first run +{first * 1e3:.0f} ms",
            flush=True,
        )


STAGES = ("read", "convert", "score", "assemble", "encode", "commit")

if __name__ == "__main__":
    main()
