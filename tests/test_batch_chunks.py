"""``streamscore batch`` reads in large chunks and scores them in ``--batch-size`` slices.

The chunking is invisible in the results: scores are bit-identical to one model call on the
accepted rows, rejects and reasons are the same, whatever the read chunk and scoring batch.
Output files have row groups of ``--row-group-rows`` rows, statistics, a page index and zstd.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper

from helpers.data import dense_table, read_output, write_parquet
from helpers.models import TrainedModel
from helpers.runs import invoke, score
from streamscore.batch import REJECTED_DIR
from streamscore.config import MAX_DEFAULT_CALLS, BatchOptions, Parallelism, ScoringOptions
from streamscore.errors import UsageError
from streamscore.mapping import build_feeds, plan_inputs
from streamscore.model import resolve_model
from streamscore.model.session import load_model
from streamscore.pipeline import run_pipeline
from streamscore.scoring import MIN_CALL_ROWS, REASON_COLUMN, Scorer
from streamscore.sinks.parquet import AtomicParquetWriter, ParquetFileSink
from streamscore.sources.parquet import ParquetSource

FEATURES = ["f0", "f1", "f2", "f3"]
ROWS = 9_000  # more than two 4096-row conversion blocks, so block edges are crossed


def messy_table(rows: int = ROWS, seed: int = 7) -> pa.Table:
    """Random features with nulls, NaN, infinities and values too large for float32."""
    table = dense_table(rows, seed=seed)
    rng = np.random.default_rng(seed)
    for name in FEATURES:
        values = table.column(name).to_numpy().copy()
        special = rng.choice(rows, size=12, replace=False)
        values[special[:4]] = np.nan
        values[special[4:6]] = [np.inf, -np.inf]
        values[special[6:9]] = [1e300, -3e39, 5e38]  # finite, beyond float32
        nulls = np.zeros(rows, dtype=bool)
        nulls[special[9:]] = True
        column = pa.array(values, mask=nulls)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def expected_scores(
    model: TrainedModel, table: pa.Table, threads: int = 1
) -> tuple[np.ndarray, list[int]]:
    """The reference: every feature cast to float32 by numpy, rows with nulls or float32
    overflow left out, the rest scored by bare onnxruntime in one call on ``threads``
    intra-op threads (a tree ensemble's last bit can depend on them)."""
    x64 = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in FEATURES])
    nulls = np.column_stack([table.column(c).is_null().to_numpy(zero_copy_only=False)
                             for c in FEATURES]).any(axis=1)  # fmt: skip
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x64.astype(np.float32)
        overflow = (np.isinf(x32) & np.isfinite(x64)).any(axis=1)
    ok = ~nulls & ~overflow
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    _, proba = session.run(None, {"input": x32[ok]})
    keep = ~np.isnan(proba).any(axis=1)
    return proba[keep], table.column("id").to_numpy()[ok][keep].tolist()


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


def rows_of(table: pa.Table) -> list[tuple[object, ...]]:
    """Rows as tuples, NaN as a string so that equal tables compare equal."""
    columns = [
        ["NaN" if isinstance(v, float) and v != v else v for v in column.to_pylist()]
        for column in table.columns
    ]
    return list(zip(*columns, strict=True))


@pytest.mark.parametrize("model_name", ["dense_model", "hgb_model"])
def test_scores_are_bit_identical_to_one_bare_model_call_whatever_the_chunking(
    tmp_path: Path, model_name: str, request: pytest.FixtureRequest
) -> None:
    model: TrainedModel = request.getfixturevalue(model_name)
    table = messy_table()
    write_parquet(tmp_path / "in" / "part.parquet", table)
    proba, ids = expected_scores(model, table)
    outputs = []
    for run, (batch_size, read_rows) in enumerate([(4096, None), (7, 300), (1000, 1000)]):
        out = tmp_path / f"out{run}"
        score(
            tmp_path / "in", out, model.path,
            batch_size=batch_size, read_rows=read_rows, threads=2,
        )  # fmt: skip
        outputs.append((read_output(out / "part.parquet"), pq.read_table(out / REJECTED_DIR)))
    scored, rejected = outputs[0]
    assert scored.column("id").to_pylist() == ids
    assert rejected.num_rows >= 24  # three nulls and three overflows in each feature
    got = np.column_stack([scored.column(f"probabilities_{i}").to_numpy() for i in (0, 1)])
    assert np.array_equal(bits(got), bits(proba))
    assert scored.num_rows + rejected.num_rows == ROWS
    for other_scored, other_rejected in outputs[1:]:
        assert other_scored.equals(scored)
        assert other_rejected.schema.equals(rejected.schema)
        assert rows_of(other_rejected) == rows_of(rejected)


@pytest.mark.parametrize("model_name", ["dense_model", "hgb_model"])
def test_scores_do_not_depend_on_threads_with_calls_and_match_intra_op_calls(
    tmp_path: Path, model_name: str, request: pytest.FixtureRequest
) -> None:
    """With --parallelism calls, --threads N runs N one-thread calls at once: the scores are
    a one-thread bare call's whatever N. With intra-op, they are an N-thread call's."""
    model: TrainedModel = request.getfixturevalue(model_name)
    table = messy_table()
    write_parquet(tmp_path / "in" / "part.parquet", table)
    runs = [(1, Parallelism.calls), (3, Parallelism.calls), (2, Parallelism.intra_op)]
    for run, (threads, parallelism) in enumerate(runs):
        out = tmp_path / f"out{run}"
        score(  # in 1000-row chunks, so several are scored at once
            tmp_path / "in", out, model.path,
            threads=threads, parallelism=parallelism, read_rows=1000, batch_size=512,
        )  # fmt: skip
        scored = read_output(out / "part.parquet")
        reference = 1 if parallelism is Parallelism.calls else threads
        proba, ids = expected_scores(model, table, threads=reference)
        assert scored.column("id").to_pylist() == ids
        got = np.column_stack([scored.column(f"probabilities_{i}").to_numpy() for i in (0, 1)])
        assert np.array_equal(bits(got), bits(proba))


def test_rejects_and_reasons_do_not_depend_on_where_chunks_and_blocks_end(
    dense_model: TrainedModel,
) -> None:
    table = messy_table()
    batch = table.combine_chunks().to_batches()[0]
    plan = plan_inputs(
        load_model(resolve_model(dense_model.path), provider="cpu").signature,
        {f.name: f.type for f in table.schema},
    )
    whole = build_feeds(plan, batch)
    pieces = [build_feeds(plan, batch.slice(start, 1000)) for start in range(0, ROWS, 1000)]
    assert whole.rejected.tolist() == [
        start + i for start, p in zip(range(0, ROWS, 1000), pieces, strict=True) for i in p.rejected
    ]
    assert whole.reasons == [r for p in pieces for r in p.reasons]
    assert np.array_equal(
        bits(whole.arrays["input"]), bits(np.concatenate([p.arrays["input"] for p in pieces]))
    )
    assert whole.arrays["input"].flags.c_contiguous
    kinds = {reason.split(" in ")[0].split(" ")[0] for reason in whole.reasons}
    assert kinds == {"null", "value"}  # NaN and infinities are fed; overflow is rejected


@pytest.mark.parametrize(
    ("rows", "calls"), [(10_000, [4096, 4096, 1808]), (4_100, [4096, MIN_CALL_ROWS])]
)
def test_the_model_runs_batch_size_rows_per_call_and_short_tails_are_padded(
    hgb_model: TrainedModel, rows: int, calls: list[int]
) -> None:
    model = load_model(resolve_model(hgb_model.path), provider="cpu", threads=2)
    seen: list[int] = []
    run = model.run

    def counting(names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[Any]:
        seen.append(len(feeds["input"]))
        return run(names, feeds)

    model.run = counting  # type: ignore[method-assign]
    batch = dense_table(rows).to_batches(max_chunksize=rows)[0]
    scored = Scorer.for_schema(model, batch.schema, batch_size=4096).score(batch)
    assert seen == calls
    assert len(scored.accepted) == scored.scores.num_rows == rows
    one_call = Scorer.for_schema(model, batch.schema).score(batch)  # as it comes: one call
    assert scored.scores.equals(one_call.scores)


def test_output_row_groups_have_statistics_a_page_index_and_zstd(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    write_parquet(tmp_path / "in" / "part.parquet", dense_table(1_000))
    score(
        tmp_path / "in", tmp_path / "out", dense_model.path,
        batch_size=16, read_rows=64, row_group_rows=300,
    )  # fmt: skip
    metadata = pq.read_metadata(tmp_path / "out" / "part.parquet")
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [300, 300, 300, 100]
    names = metadata.schema.to_arrow_schema().names
    for g in range(metadata.num_row_groups):
        for c in range(metadata.num_columns):
            column = metadata.row_group(g).column(c)
            assert column.compression == "ZSTD"
            assert column.statistics is not None and column.statistics.has_min_max
            assert column.has_column_index and column.has_offset_index
            text = names[c] == "note"
            assert ("RLE_DICTIONARY" in column.encodings) == text  # dictionary only for text


def test_the_default_row_group_is_256ki_rows_and_the_cli_can_change_it(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    options = BatchOptions(tmp_path, tmp_path / "out", ScoringOptions(model="m"))
    assert options.row_group_rows == 262_144
    write_parquet(tmp_path / "in" / "part.parquet", dense_table(500))
    result = invoke(
        "batch", tmp_path / "in", "-m", dense_model.path, "-o", tmp_path / "out",
        "--provider", "cpu", "--row-group-rows", "200",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metadata = pq.read_metadata(tmp_path / "out" / "part.parquet")
    assert [metadata.row_group(i).num_rows for i in range(3)] == [200, 200, 100]
    refused = invoke(
        "batch", tmp_path / "in", "-m", dense_model.path, "-o", tmp_path / "o2",
        "--row-group-rows", "0",
    )  # fmt: skip
    assert refused.exit_code == UsageError.exit_code
    assert "--row-group-rows" in refused.output


def test_row_groups_are_also_cut_by_size(tmp_path: Path) -> None:
    batch = pa.RecordBatch.from_pydict({"x": np.arange(1_000, dtype=np.int64)})  # 8000 bytes
    writer = AtomicParquetWriter(
        tmp_path / "o.parquet", row_group_rows=10_000, row_group_bytes=2_000
    )
    for start in range(0, 1_000, 100):  # 800 bytes per write: a row group every third write
        writer.write(batch.slice(start, 100))
    writer.commit({})
    metadata = pq.read_metadata(tmp_path / "o.parquet")
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [300, 300, 300, 100]
    assert pq.read_table(tmp_path / "o.parquet").column("x").to_pylist() == list(range(1_000))


def test_the_pipeline_reports_each_threads_cpu_time(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    path = write_parquet(tmp_path / "in.parquet", dense_table(5_000))
    model = load_model(resolve_model(dense_model.path), provider="cpu")
    scorer = Scorer.for_schema(model, pq.read_schema(path), batch_size=512)
    sink = ParquetFileSink(
        tmp_path / "out.parquet", None, ["id"], row_group_rows=1_000, metadata={}
    )
    stats = run_pipeline(ParquetSource(path, FEATURES + ["id"], 1_024), scorer, sink)
    assert stats.rows_scored == 5_000 and stats.batches == 5  # one per read chunk
    assert set(stats.cpu_seconds) == {"read", "score", "write"}
    assert all(seconds > 0 for seconds in stats.cpu_seconds.values())
    assert REASON_COLUMN not in pq.read_schema(tmp_path / "out.parquet").names


def test_values_a_float16_input_cannot_hold_are_rejected_from_any_numeric_column(
    tmp_path: Path,
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, tmp_path / "half.onnx")
    signature = load_model(resolve_model(tmp_path / "half.onnx"), provider="cpu").signature
    batch = pa.RecordBatch.from_pydict(
        {
            "a": pa.array([1, 70_000, 3], pa.int64()),  # int64 beyond float16's 65504
            "b": pa.array([1.5, 2.5, 1e5], pa.float32()),  # float32 beyond it
            "c": pa.array([1, 2, 65_535], pa.uint16()),  # uint16 beyond it
        }
    )
    plan = plan_inputs(signature, {f.name: f.type for f in batch.schema}, ["a", "b", "c"])
    feeds = build_feeds(plan, batch)
    assert feeds.rejected.tolist() == [1, 2]
    assert feeds.reasons == [
        "value 70000 in column 'a' (model input 'x') is out of range for float16",
        "value 100000.0 in column 'b' (model input 'x') is out of range for float16",
    ]
    assert feeds.arrays["x"].tolist() == [[1.0, 1.5, 1.0]]


def test_threads_are_one_thread_calls_at_once_on_cpu_and_intra_op_threads_otherwise(
    tmp_path: Path,
) -> None:
    def placement(threads: int | None, parallelism: Parallelism, on_cpu: bool = True) -> Any:
        scoring = ScoringOptions(model="m", threads=threads)
        options = BatchOptions(tmp_path, tmp_path / "out", scoring, parallelism=parallelism)
        return options.placement(on_cpu=on_cpu, cores=6)

    assert placement(None, Parallelism.calls) == (1, 6)  # unset: every core
    assert placement(0, Parallelism.calls) == (1, 6)
    assert placement(3, Parallelism.calls) == (1, 3)
    assert placement(3, Parallelism.calls, on_cpu=False) == (3, 1)  # a GPU: one call
    assert placement(3, Parallelism.intra_op) == (3, 1)
    assert placement(None, Parallelism.intra_op) == (1, 1)  # one thread per call by default
    assert placement(0, Parallelism.intra_op) == (None, 1)  # ONNX Runtime decides
    unset = BatchOptions(tmp_path, tmp_path / "out", ScoringOptions(model="m"))
    assert unset.placement(on_cpu=True)[1] <= MAX_DEFAULT_CALLS
