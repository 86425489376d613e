"""What keeps ``streamscore batch`` fast without changing its results (issue 9).

Timings live in benchmarks/; these tests check the behaviour the speed-ups rely on:
the hot path never imports pandas (pyarrow's pandas shim costs about half a second inside
the first batch), the zero-copy conversions give what pyarrow's own would, and outputs are
encoded per column type (delta for integers and times) yet read back unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.data import dense_table, write_parquet
from helpers.models import TrainedModel
from helpers.runs import score
from streamscore.arrays import from_numpy, to_numpy
from streamscore.sinks.parquet import AtomicParquetWriter

NUMERIC = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64]
FLOATS = [np.float16, np.float32, np.float64]


def test_a_batch_run_never_imports_pandas(tmp_path: Path, dense_model: TrainedModel) -> None:
    pytest.importorskip("pandas")  # installed with the dev extra (mlflow): pyarrow would use it
    source = write_parquet(tmp_path / "in" / "a.parquet", dense_table(5_000))
    code = (
        "import sys\n"
        "from streamscore.batch import run_batch\n"
        "from streamscore.config import BatchOptions, ScoringOptions\n"
        "from pathlib import Path\n"
        f"options = BatchOptions(Path({str(source.parent)!r}), Path({str(tmp_path / 'out')!r}),"
        f" ScoringOptions(model={str(dense_model.path)!r}, provider='cpu'))\n"
        "summary = run_batch(options)\n"
        "assert summary.rows_scored == 5000, summary\n"
        "print('pandas' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("dtype", NUMERIC + FLOATS)
def test_to_numpy_matches_pyarrow_and_shares_memory(dtype: type[np.generic]) -> None:
    values = np.arange(1, 101).astype(dtype)
    array = pa.array(values)[7:60]  # an offset into the buffer
    converted = to_numpy(array)
    assert converted.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(converted, array.to_numpy())
    assert np.shares_memory(converted, np.frombuffer(array.buffers()[1], dtype=np.uint8))


def test_to_numpy_falls_back_for_nulls_and_booleans() -> None:
    with_nulls = pa.array([1.0, None, 3.0])
    np.testing.assert_array_equal(to_numpy(with_nulls), [1.0, np.nan, 3.0])
    assert to_numpy(pa.array([True, False])).tolist() == [True, False]
    assert to_numpy(pa.array(["a", "b"])).tolist() == ["a", "b"]


@pytest.mark.parametrize("dtype", NUMERIC + FLOATS)
def test_from_numpy_equals_pa_array(dtype: type[np.generic]) -> None:
    matrix = np.arange(60).reshape(20, 3).astype(dtype)
    for values in (matrix[:, 0], matrix[:, 2], matrix.ravel()):  # strided columns too
        assert from_numpy(values).equals(pa.array(values))


def test_from_numpy_keeps_nan_a_value_and_handles_other_kinds() -> None:
    floats = from_numpy(np.array([np.nan, 1.0], dtype=np.float32))
    assert floats.null_count == 0 and floats.type == pa.float32()
    assert from_numpy(np.array([True, False])).equals(pa.array([True, False]))
    assert from_numpy(np.array(["x", "y"], dtype=object)).equals(pa.array(["x", "y"]))


def test_integer_and_time_columns_are_delta_encoded_and_read_back_unchanged(
    tmp_path: Path, dense_model: TrainedModel
) -> None:
    table = dense_table(2_000).append_column(
        "at", pa.array(np.arange(2_000) * 1_000, pa.timestamp("ms", tz="UTC"))
    )
    table = table.append_column("small", pa.array(np.arange(2_000) % 7, pa.int8()))
    write_parquet(tmp_path / "in" / "p.parquet", table)
    score(tmp_path / "in", tmp_path / "out", dense_model.path, row_group_rows=700)
    output = tmp_path / "out" / "p.parquet"
    metadata = pq.read_metadata(output)
    encodings = {
        metadata.row_group(0).column(c).path_in_schema: metadata.row_group(0).column(c).encodings
        for c in range(metadata.num_columns)
    }
    for name in ("id", "at", "small", "label"):  # passthrough and score integers
        assert "DELTA_BINARY_PACKED" in encodings[name], name
    assert "RLE_DICTIONARY" in encodings["note"]
    assert "PLAIN" in encodings["probabilities_1"]
    written = pq.read_table(output)
    kept = table.select(["id", "note", "at", "small"])
    assert written.select(kept.schema.names).replace_schema_metadata(None).equals(kept)


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1, None, -(2**63), 2**63 - 1], pa.int64()),
        pa.array([0, 2**64 - 1, None, 3], pa.uint64()),
        pa.array([1, 2, None, 4], pa.time32("ms")),  # Parquet has no seconds unit
        pa.array([10, None, 0, -5], pa.date32()),
        pa.array([5, 1, None, 7], pa.duration("ms")),
    ],
)
def test_every_delta_type_round_trips(tmp_path: Path, column: pa.Array) -> None:
    writer = AtomicParquetWriter(tmp_path / "o.parquet", row_group_rows=3)
    batch = pa.RecordBatch.from_arrays([column], names=["c"])
    writer.write(batch)
    writer.commit({})
    assert pq.read_table(tmp_path / "o.parquet").column("c").combine_chunks().equals(column)
