"""``streamscore compare``: every statistic checked against numbers computed here, directly
from onnxruntime outputs with numpy/scipy; the three sources; the gate; JSON and HTML; CLI.

The sample models are real and different: fraud/1 (gradient boosting), fraud/2 (random
forest, never scores 0.5 or more on the holdout day) and fraud_mlp (an MLP).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from scipy import stats as scipy_stats

from helpers.runs import invoke
from streamscore import console
from streamscore.batch import run_batch
from streamscore.compare import SCHEMA_VERSION, CompareMode, CompareOptions, run_compare
from streamscore.compare.stats import Reservoir, TopRows, average_ranks, psi
from streamscore.config import BatchOptions, KeepColumns, ReplayOptions, ScoringOptions
from streamscore.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
DAY = REPO / "sample_data" / "transactions" / "date=2026-11-04" / "part-0.parquet"
MODELS = REPO / "sample_data" / "models"
V1, V2, MLP = MODELS / "fraud" / "1", MODELS / "fraud" / "2", MODELS / "fraud_mlp"
FEATURES = [f"f{i:02d}" for i in range(30)]
ROWS = 20_000


# ---------------------------------------------------------------- independent reference


def direct_scores(model: Path, table: pa.Table) -> dict[str, np.ndarray]:
    """label and probabilities_0/1 straight from onnxruntime, no streamscore code.

    One thread and calls of 4096 rows, as the runs under test use: float32 sums in the
    models then come out bit for bit the same.
    """
    path = model / "1" / "model.onnx" if (model / "1").is_dir() else model / "model.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    features = np.column_stack([table[f].to_numpy() for f in FEATURES]).astype(np.float32)
    name = session.get_inputs()[0].name
    parts = [
        session.run(None, {name: features[i : i + 4096]}) for i in range(0, len(features), 4096)
    ]
    label = np.concatenate([p[0] for p in parts])
    probabilities = np.concatenate([p[1] for p in parts])
    return {
        "label": label.astype(np.float64),
        "probabilities_0": probabilities[:, 0].astype(np.float64),
        "probabilities_1": probabilities[:, 1].astype(np.float64),
    }


def reference_psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI over expected's deciles, right-closed bins, shares floored at 1e-4."""
    edges = np.unique(np.percentile(expected, np.arange(10, 100, 10)))
    e = np.bincount(np.digitize(expected, edges, right=True), minlength=len(edges) + 1)
    a = np.bincount(np.digitize(actual, edges, right=True), minlength=len(edges) + 1)
    e = np.clip(e / e.sum(), 1e-4, None)
    a = np.clip(a / a.sum(), 1e-4, None)
    return float(((a - e) * np.log(a / e)).sum())


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROWS rows of the holdout day, as a folder with one Parquet file."""
    folder = tmp_path_factory.mktemp("day")
    pq.write_table(pq.read_table(DAY).slice(0, ROWS), folder / "part-0.parquet")
    return folder


def models_options(data: Path, a: Path, b: Path, **kwargs: Any) -> CompareOptions:
    scoring = [ScoringOptions(str(m), provider="cpu", threads=1) for m in (a, b)]
    return CompareOptions(
        CompareMode.models, data=data, scoring_a=scoring[0], scoring_b=scoring[1], **kwargs
    )


def check_against_reference(column: Any, a: np.ndarray, b: np.ndarray) -> None:
    assert column.compared == len(a)
    assert column.flips == int(np.count_nonzero((a >= 0.5) != (b >= 0.5)))
    assert column.table == [
        [int(np.sum((a < 0.5) & (b < 0.5))), int(np.sum((a < 0.5) & (b >= 0.5)))],
        [int(np.sum((a >= 0.5) & (b < 0.5))), int(np.sum((a >= 0.5) & (b >= 0.5)))],
    ]
    assert column.delta.max_abs == pytest.approx(np.abs(a - b).max(), abs=1e-12)
    assert column.delta.mean == pytest.approx(np.mean(a - b), rel=1e-9, abs=1e-12)
    assert column.psi == pytest.approx(reference_psi(a, b), rel=1e-9, abs=1e-12)
    assert column.a.mean == pytest.approx(a.mean(), rel=1e-9)
    assert column.a.quantiles["p95"] == pytest.approx(np.quantile(a, 0.95), rel=1e-9)
    if np.std(a) > 0 and np.std(b) > 0:
        assert column.pearson == pytest.approx(scipy_stats.pearsonr(a, b)[0], rel=1e-6)
        assert column.spearman == pytest.approx(scipy_stats.spearmanr(a, b)[0], rel=1e-6)


# ---------------------------------------------------------------- models over Parquet


@pytest.mark.parametrize("other", [V2, MLP], ids=["fraud-v2", "fraud_mlp"])
def test_two_models_on_parquet_match_numbers_computed_directly(day: Path, other: Path) -> None:
    report = run_compare(models_options(day, V1, other))
    table = pq.read_table(day / "part-0.parquet")
    a, b = direct_scores(V1, table), direct_scores(other, table)
    assert report.rows.matched == ROWS and report.rows.only_a == report.rows.only_b == 0
    assert [c.name for c in report.columns] == ["label", "probabilities_0", "probabilities_1"]
    for column in report.columns:
        assert column.classifier
        check_against_reference(column, a[column.name], b[column.name])
    flips = report.column("probabilities_1").flips
    assert flips is not None and flips > 0  # the models really disagree somewhere
    assert report.column("label").flips == int(np.count_nonzero(a["label"] != b["label"]))


def test_rows_only_one_model_scores_are_counted_not_dropped(tmp_path: Path) -> None:
    table = pq.read_table(DAY).slice(0, 2000)
    f15 = table["f15"].to_numpy().copy()
    f15[[3, 500, 1999]] = np.nan  # fraud/1 (gradient boosting) scores NaN; the MLP cannot
    table = table.set_column(table.schema.get_field_index("f15"), "f15", pa.array(f15))
    pq.write_table(table, tmp_path / "part-0.parquet")
    report = run_compare(models_options(tmp_path, V1, MLP))
    assert (report.rows.matched, report.rows.only_a, report.rows.only_b) == (1997, 3, 0)
    assert report.column("probabilities_1").compared == 1997


def test_a_sample_smaller_than_the_data_keeps_the_exact_statistics_exact(day: Path) -> None:
    report = run_compare(models_options(day, V1, MLP, sample_rows=2000))
    table = pq.read_table(day / "part-0.parquet")
    a = direct_scores(V1, table)["probabilities_1"]
    b = direct_scores(MLP, table)["probabilities_1"]
    column = report.column("probabilities_1")
    assert report.sample == {"rows": 2000, "exact": False}
    assert len(report.samples["probabilities_1"][0]) == 2000
    # exact over every row, whatever the sample size
    assert column.flips == int(np.count_nonzero((a >= 0.5) != (b >= 0.5)))
    assert column.delta.max_abs == pytest.approx(np.abs(a - b).max(), abs=1e-12)
    assert column.pearson == pytest.approx(scipy_stats.pearsonr(a, b)[0], rel=1e-6)
    # from the sample: close, not exact
    assert column.a.quantiles["p50"] == pytest.approx(np.median(a), rel=0.1)
    assert column.spearman == pytest.approx(scipy_stats.spearmanr(a, b)[0], abs=0.05)


def test_top_rows_are_the_largest_differences_with_their_kept_columns(day: Path) -> None:
    report = run_compare(models_options(day, V1, MLP, top=5))
    table = pq.read_table(day / "part-0.parquet")
    a = direct_scores(V1, table)["probabilities_1"]
    b = direct_scores(MLP, table)["probabilities_1"]
    top = report.column("probabilities_1").top
    largest = np.sort(np.abs(a - b))[::-1][:5]
    assert [abs(row["delta"]) for row in top] == pytest.approx(largest.tolist(), abs=1e-12)
    ids = table["transaction_id"].to_pylist()
    for row in top:
        index = ids.index(row["keep"]["transaction_id"])
        assert row["a"] == pytest.approx(a[index]) and row["b"] == pytest.approx(b[index])
        assert row["key"] == f"part-0.parquet#{index}"
        assert {"merchant_category", "is_fraud"} <= set(row["keep"])


# ---------------------------------------------------------------- two batch outputs


def test_scored_outputs_join_on_the_key_and_count_unmatched_rows(tmp_path: Path) -> None:
    table = pq.read_table(DAY).slice(0, 3000)
    for name, rows in (("a", table.slice(0, 2800)), ("b", table.slice(100, 2900))):
        (tmp_path / f"in-{name}").mkdir()
        pq.write_table(rows, tmp_path / f"in-{name}" / "part-0.parquet")
    for name, model in (("a", V1), ("b", V2)):
        run_batch(
            BatchOptions(
                input=tmp_path / f"in-{name}",
                output=tmp_path / f"out-{name}",
                scoring=ScoringOptions(
                    str(model), provider="cpu", threads=1, keep=KeepColumns.parse("transaction_id")
                ),
            )
        )
    report = run_compare(
        CompareOptions(
            CompareMode.scored,
            scored=(tmp_path / "out-a", tmp_path / "out-b"),
            key="transaction_id",
        )
    )
    # rows 0-99 only in A, 2800-2999 only in B
    assert (report.rows.matched, report.rows.only_a, report.rows.only_b) == (2700, 100, 200)
    # each side scored its own input; rows 100-2799 are A's 100.. and B's 0..
    whole_a, whole_b = direct_scores(V1, table.slice(0, 2800)), direct_scores(V2, table.slice(100))
    a = {name: values[100:] for name, values in whole_a.items()}
    b = {name: values[:2700] for name, values in whole_b.items()}
    assert [c.name for c in report.columns] == ["label", "probabilities_0", "probabilities_1"]
    for column in report.columns:
        check_against_reference(column, a[column.name], b[column.name])


def test_scored_key_must_be_unique(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        scores = pa.table({"id": [1, 1, 2], "score": [0.1, 0.2, 0.3]})
        pq.write_table(scores, tmp_path / name / "x.parquet")
    result = invoke("compare", "--scored", tmp_path / "a", tmp_path / "b", "--key", "id")
    assert result.exit_code == 4 and "not unique" in result.output and "id" in result.output


def _spoil_second_file(side: Path, how: str) -> None:
    """Spoil side B in a way polars meets only while joining (it reads the first schema)."""
    if how == "key type":  # text keys on B, integers on A
        for name in ("1", "2"):
            scores = pa.table({"id": [f"{name}a", f"{name}b"], "score": [0.1, 0.2]})
            pq.write_table(scores, side / f"{name}.parquet")
    elif how == "corrupt":
        (side / "2.parquet").write_bytes(b"PAR1 not really")
    else:  # a file without the score column
        pq.write_table(pa.table({"id": [3, 4]}), side / "2.parquet")


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("key type", "cannot join --scored A"),
        ("corrupt", "2.parquet"),
        ("missing column", "2.parquet has no column 'score'"),
    ],
)
def test_scored_files_that_cannot_be_joined_are_one_line_errors(
    tmp_path: Path, how: str, message: str
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        scores = pa.table({"id": [1, 2], "score": [0.1, 0.7]})
        pq.write_table(scores, tmp_path / name / "1.parquet")
    pq.write_table(pa.table({"id": [3, 4], "score": [0.1, 0.2]}), tmp_path / "a" / "2.parquet")
    _spoil_second_file(tmp_path / "b", how)
    result = invoke("compare", "--scored", tmp_path / "a", tmp_path / "b", "--key", "id",
                    "--columns", "score")  # fmt: skip
    assert result.exit_code == 4, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- the CLI, JSON and the gate


def test_cli_json_report_and_gate_exit_9_naming_the_columns(day: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    args = ["compare", day, "-m", V1, "-m", MLP, "--provider", "cpu", "--json", out]
    passed = invoke(*args, "--max-flip-rate", "5%", "--max-psi", "10")
    assert passed.exit_code == 0, passed.output
    data = json.loads(out.read_text())
    assert data["schema"] == "streamscore.compare" and data["schema_version"] == SCHEMA_VERSION
    assert data["a"]["model"] == "fraud" and data["b"]["model"] == "fraud_mlp"
    assert data["gate"] == {"max_flip_rate": 0.05, "max_psi": 10.0, "failures": []}
    flip_rate = data["columns"][2]["flip_rate"]
    assert 0 < flip_rate < 0.05
    failed = invoke(*args, "--max-flip-rate", f"{flip_rate * 100 / 2}%")
    assert failed.exit_code == 9
    error = failed.output.strip().splitlines()[-1]
    assert "probabilities_1 flip rate" in error and "label flip rate" in error
    psi_failed = invoke(*args, "--max-psi", "0.000001", "--columns", "probabilities_1")
    assert psi_failed.exit_code == 9 and "probabilities_1 PSI" in psi_failed.output
    assert "label" not in psi_failed.output.strip().splitlines()[-1]


def test_json_to_stdout_is_only_the_report(day: Path) -> None:
    result = invoke("compare", day, "-m", V1, "-m", V2, "--json", "-", "--top", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"]["matched"] == ROWS
    assert all(len(c["top"]) == 2 for c in data["columns"])


def test_html_report_is_one_self_contained_page(day: Path, tmp_path: Path) -> None:
    page_path = tmp_path / "compare.html"
    result = invoke("compare", day, "-m", V1, "-m", V2, "--report", page_path)
    assert result.exit_code == 0, result.output
    page = page_path.read_text()
    assert page.count("<svg") == 3  # one figure per score column
    assert "<script" not in page and "<link" not in page and "url(http" not in page
    assert 'src="' not in page and "<?xml" not in page
    for text in ("probabilities_1", "rows that differ most", "A fraud v1", "B fraud v2"):
        assert text in page
    # each top-rows table has a heading naming its column, not a muted caption line
    assert "<h3>probabilities_1: rows that differ most</h3>" in page


def test_report_without_matplotlib_is_a_one_line_error_naming_the_extra(
    day: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("compare", day, "-m", V1, "-m", V2, "--report", tmp_path / "r.html")
    assert result.exit_code == 2 and "streamscore[plot]" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", str(V1)], "--model twice"),
        ([], "exactly one of"),
        (["-m", str(V1), "-m", str(V2), "--topics", "a", "b"], "exactly one of"),
        (["-m", str(V1), "-m", str(V2), "--threshold", "2"], "--threshold"),
        (["-m", str(V1), "-m", str(V2), "--report", "x.png"], "HTML"),
        (["-m", str(V1), "-m", str(V2), "--columns", "nope"], "--columns nope"),
        (["-m", str(V1), "-m", str(V2), "--max-flip-rate", "lots"], "--max-flip-rate"),
        (["-m", str(V1), "-m", str(V2), "--key", "id"], "--key goes with --scored"),
        (["-m", str(V1), "-m", "http://127.0.0.1:1/v2/models/fraud"], "model server URL"),
    ],
)
def test_bad_options_exit_2_with_one_line(day: Path, args: list[str], message: str) -> None:
    data = [] if args == [] else [str(day)]
    result = invoke("compare", *data, *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_help_has_an_example() -> None:
    result = invoke("compare", "--help")
    assert result.exit_code == 0 and "Example: streamscore compare" in result.output


# ---------------------------------------------------------------- statistics units


def test_psi_matches_a_hand_computed_value() -> None:
    expected = np.arange(1.0, 101.0)  # deciles 10.9, 20.8, … : 10 rows a bin
    actual = np.concatenate([np.full(50, 5.0), np.full(50, 95.0)])  # half in the first bin
    # first and last bins hold 50 % each, the 8 others the floor 1e-4
    shares = np.array([0.5] + [1e-4] * 8 + [0.5])
    value = float(np.sum((shares - 0.1) * np.log(shares / 0.1)))
    assert psi(expected, actual) == pytest.approx(value)
    assert psi(expected, expected) == 0.0


def test_average_ranks_share_ties_like_scipy() -> None:
    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    assert average_ranks(values).tolist() == scipy_stats.rankdata(values).tolist()


def test_reservoir_is_uniform_and_bounded() -> None:
    reservoir = Reservoir(1000, 1, seed=1)
    for start in range(0, 100_000, 7_000):
        values = np.arange(start, min(start + 7_000, 100_000), dtype=np.float64)[:, None]
        reservoir.add(values, values)
    kept, _ = reservoir.column(0)
    assert len(kept) == 1000 and len(np.unique(kept)) == 1000 and not reservoir.exact
    assert 40_000 < kept.mean() < 60_000  # a uniform sample of 0..99 999


def test_infinite_scores_count_as_missing_and_leave_the_statistics_finite(
    tmp_path: Path,
) -> None:
    inf = float("inf")
    for name, scores in (("a", [inf, -inf, 0.3, 0.6]), ("b", [inf, 0.2, 0.3, 0.4])):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"id": [1, 2, 3, 4], "s": scores}), tmp_path / name / "x.parquet")
    report = run_compare(
        CompareOptions(CompareMode.scored, scored=(tmp_path / "a", tmp_path / "b"), key="id")
    )
    column = report.column("s")
    assert (column.compared, column.missing) == (2, 2)
    assert column.a.mean == pytest.approx(0.45) and column.delta.max_abs == pytest.approx(0.2)
    assert [row["key"] for row in column.top] == [4, 3]  # rows with an infinity are not ranked
    assert column.classifier and column.flips == 1


def test_a_generous_sample_size_holds_only_the_rows_seen(tmp_path: Path) -> None:
    reservoir = Reservoir(10**12, 2)  # 16 TB if allocated up front
    for start in range(0, 300, 100):
        values = np.arange(start, start + 100, dtype=np.float64)[:, None].repeat(2, axis=1)
        reservoir.add(values, -values)
    kept, negated = reservoir.column(1)
    assert kept.tolist() == list(range(300)) and (negated == -kept).all() and reservoir.exact
    assert len(reservoir.a) < 1000
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"id": [1, 2], "score": [0.1, 0.7]}), tmp_path / name / "x.parquet")
    result = invoke("compare", "--scored", tmp_path / "a", tmp_path / "b", "--key", "id",
                    "--sample-rows", str(10**12))  # fmt: skip
    assert result.exit_code == 0, result.output


def test_top_rows_keep_only_the_largest() -> None:
    top = TopRows(3)
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=1000)
    for start in range(0, 1000, 100):
        part = deltas[start : start + 100]
        top.add(part, np.zeros(100), lambda i, start=start: {"key": start + i, "keep": {}})
    largest = np.argsort(-np.abs(deltas))[:3]
    assert [row["key"] for row in top.rows()] == largest.tolist()


def test_options_are_validated_once() -> None:
    with pytest.raises(UsageError, match="--key"):
        CompareOptions(CompareMode.scored, scored=(Path("a"), Path("b")))


# ---------------------------------------------------------------- two output topics (Kafka)


def wait_for_records(bootstrap: str, topic: str, records: int, timeout_s: float = 30) -> None:
    """Until the end offsets of ``topic`` cover ``records`` records.

    Just after a replay creates its output topic, the broker may still answer 0 as the end
    of some partitions for a moment (seen here: about 0.2 s); commit markers only add.
    """
    import time

    from streamscore.kafka.client import Admin
    from streamscore.kafka.settings import KafkaSettings

    deadline = time.monotonic() + timeout_s
    with Admin(KafkaSettings(bootstrap)) as admin:
        partitions = list(range(admin.partition_count(topic) or 0))
        while sum(admin.list_offsets(topic, partitions, "latest").values()) < records:
            assert time.monotonic() < deadline, f"{topic}: fewer than {records} records"
            time.sleep(0.05)


@pytest.mark.kafka
def test_topics_of_two_replays_join_on_source_offsets(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    from streamscore.kafka.loader import load_parquet
    from streamscore.kafka.settings import KafkaSettings
    from streamscore.replay import run_replay

    rows = 1500
    source = unique_topic(partitions=3, prefix="compare-in")
    pq.write_table(pq.read_table(DAY).slice(0, rows), tmp_path / "part-0.parquet")
    settings = KafkaSettings(kafka_bootstrap)
    load_parquet(settings, tmp_path, source, timestamp_column=None)
    outputs = []
    for model in (V1, V2):
        target = f"{source}.v{model.name}"
        run_replay(
            ReplayOptions(
                kafka=settings,
                input_topic=source,
                output_topic=target,
                scoring=ScoringOptions(str(model), provider="cpu", threads=1, batch_size=200),
            )
        )
        outputs.append(target)
    for target in outputs:
        wait_for_records(kafka_bootstrap, target, rows)
    out = tmp_path / "topics.json"
    result = invoke(
        "compare", "--topics", *outputs, "-b", kafka_bootstrap, "--keep", "transaction_id",
        "--columns", "probabilities_1,label", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["mode"] == "topics"
    assert (data["a"]["model"], data["a"]["version"]) == ("fraud", "1")
    assert (data["b"]["model"], data["b"]["version"]) == ("fraud", "2")
    assert data["a"]["source"] == f"topic {outputs[0]}"
    assert data["rows"] == {"matched": rows, "only_a": 0, "only_b": 0, "neither": 0,
                            "duplicates_a": 0, "duplicates_b": 0}  # fmt: skip
    table = pq.read_table(tmp_path / "part-0.parquet")
    a, b = direct_scores(V1, table), direct_scores(V2, table)
    column = data["columns"][0]
    assert column["name"] == "probabilities_1" and column["compared"] == rows
    p1a, p1b = a["probabilities_1"], b["probabilities_1"]
    # replay writes float32 scores in their shortest text form: they read back exactly
    assert column["delta"]["max_abs"] == pytest.approx(np.abs(p1a - p1b).max(), abs=1e-7)
    assert column["flips"] == int(np.count_nonzero((p1a >= 0.5) != (p1b >= 0.5)))
    assert column["psi"] == pytest.approx(reference_psi(p1a, p1b), rel=1e-6)
    assert data["columns"][1]["flips"] == int(np.count_nonzero(a["label"] != b["label"]))
    ids = set(pc.cast(table["transaction_id"], pa.int64()).to_pylist())
    assert all(row["keep"]["transaction_id"] in ids for row in column["top"])


@pytest.mark.kafka
def test_rows_missing_from_one_topic_are_counted(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    from streamscore.kafka.loader import load_parquet
    from streamscore.kafka.settings import KafkaSettings
    from streamscore.replay import run_replay

    settings = KafkaSettings(kafka_bootstrap)
    source = unique_topic(partitions=2, prefix="compare-in")
    pq.write_table(pq.read_table(DAY).slice(0, 300), tmp_path / "part-0.parquet")
    load_parquet(settings, tmp_path, source, partitions=2, timestamp_column=None)
    first = f"{source}.first"
    run_replay(ReplayOptions(settings, source, first, ScoringOptions(str(V1), provider="cpu")))
    load_parquet(settings, tmp_path, source, partitions=2, timestamp_column=None, limit=40)
    second = f"{source}.second"  # replays the 40 records added since, too
    run_replay(ReplayOptions(settings, source, second, ScoringOptions(str(V1), provider="cpu")))
    wait_for_records(kafka_bootstrap, first, 300)
    wait_for_records(kafka_bootstrap, second, 340)
    result = invoke("compare", "--topics", first, second, "-b", kafka_bootstrap, "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["rows"]["matched"], data["rows"]["only_a"], data["rows"]["only_b"]) == (
        300,
        0,
        40,
    )
    assert all(c["max_abs"] == 0 for c in (col["delta"] for col in data["columns"]))


@pytest.mark.kafka
def test_topics_that_are_missing_or_not_written_by_streamscore_are_one_line_errors(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    from confluent_kafka import Producer

    plain = unique_topic(partitions=1, prefix="compare-plain")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(plain, b'{"score": 0.5}')
    assert producer.flush(10) == 0
    wait_for_records(kafka_bootstrap, plain, 1)
    missing = invoke("compare", "--topics", plain, "no-such-topic", "-b", kafka_bootstrap,
                     "--connect-timeout", "5")  # fmt: skip
    assert missing.exit_code == 6 and "'no-such-topic' does not exist" in missing.output
    other = unique_topic(partitions=1, prefix="compare-plain")
    unheaded = invoke("compare", "--topics", plain, other, "-b", kafka_bootstrap)
    assert unheaded.exit_code == 4, unheaded.output
    assert f"topic '{plain}' partition 0 offset 0" in unheaded.output
    assert "no streamscore source headers" in unheaded.output
    assert "Traceback" not in unheaded.output


@pytest.mark.kafka
def test_outputs_of_two_different_input_topics_are_refused(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    outputs = [unique_topic(partitions=1, prefix="compare-out") for _ in range(2)]
    for output, scored in zip(outputs, ("payments", "refunds"), strict=True):
        headers = [
            ("streamscore.source.topic", scored.encode()),
            ("streamscore.source.partition", b"0"),
            ("streamscore.source.offset", b"0"),
        ]
        producer.produce(output, b'{"score": 0.5}', headers=headers)
    assert producer.flush(10) == 0
    for output in outputs:
        wait_for_records(kafka_bootstrap, output, 1)
    result = invoke("compare", "--topics", *outputs, "-b", kafka_bootstrap)
    assert result.exit_code == 4, result.output
    assert "'refunds'" in result.output and "'payments'" in result.output
    assert "same input topic" in result.output and "Traceback" not in result.output


def test_scored_compares_the_score_columns_batch_recorded_not_kept_inputs(
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pq.read_table(DAY).slice(0, 500), tmp_path / "in" / "part-0.parquet")
    for name, model in (("a", V1), ("b", MLP)):
        run_batch(
            BatchOptions(
                tmp_path / "in", tmp_path / name, ScoringOptions(str(model), provider="cpu")
            )
        )
    scored = (tmp_path / "a", tmp_path / "b")
    default = run_compare(CompareOptions(CompareMode.scored, scored=scored, key="transaction_id"))
    # is_fraud is a numeric column both outputs kept, but no score
    assert [c.name for c in default.columns] == ["label", "probabilities_0", "probabilities_1"]
    chosen = run_compare(
        CompareOptions(
            CompareMode.scored, scored=scored, key="transaction_id", columns=("is_fraud",)
        )
    )
    assert [c.name for c in chosen.columns] == ["is_fraud"]
    assert chosen.columns[0].flips == 0 and chosen.columns[0].delta.max_abs == 0
    # each side names the model batch recorded, as when compare scores DATA itself
    assert (default.a.model, default.a.version) == ("fraud", "1")
    assert (default.b.model, default.b.version) == ("fraud_mlp", "1")
    assert default.b.sha256 is not None and len(default.b.sha256) == 64


def test_scored_outputs_of_mixed_models_name_no_model(tmp_path: Path) -> None:
    def score(first_row: int, model: Path, out: str) -> None:
        source = tmp_path / f"in{first_row}"
        source.mkdir(exist_ok=True)
        pq.write_table(pq.read_table(DAY).slice(first_row, 50), source / f"{first_row}.parquet")
        run_batch(BatchOptions(source, tmp_path / out, ScoringOptions(str(model), provider="cpu")))

    score(0, V1, "mixed")
    score(50, V2, "mixed")
    score(0, V2, "b")
    scored = (tmp_path / "mixed", tmp_path / "b")

    report = run_compare(CompareOptions(CompareMode.scored, scored=scored, key="transaction_id"))

    assert report.a.model is None  # 0.parquet scored by fraud 1, 50.parquet by fraud 2
    assert (report.b.model, report.b.version) == ("fraud", "2")


def test_an_unwritable_json_path_is_a_one_line_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"id": [1, 2], "score": [0.1, 0.7]}), tmp_path / name / "x.parquet")
    (tmp_path / "taken.json").mkdir()  # a folder where the file should go
    result = invoke("compare", "--scored", tmp_path / "a", tmp_path / "b", "--key", "id",
                    "--json", tmp_path / "taken.json")  # fmt: skip
    assert result.exit_code == 10 and "cannot write" in result.output
    assert "Traceback" not in result.output


def test_a_report_that_does_not_fit_on_the_disk_leaves_the_old_one_whole(
    tmp_path: Path,
) -> None:
    for name, scores in (("a", [0.1, 0.7]), ("b", [0.2, 0.6])):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"id": [1, 2], "score": scores}), tmp_path / name / "x.parquet")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {mounted.stderr.strip()}")
    try:
        (disk / "report.html").write_text("the last good report")  # the page needs ~95 KB
        result = invoke("compare", "--scored", tmp_path / "a", tmp_path / "b", "--key", "id",
                        "--report", disk / "report.html")  # fmt: skip
        assert result.exit_code == 10 and "No space left on device" in result.output
        assert [p.name for p in disk.iterdir()] == ["report.html"]  # no temporary file left
        assert (disk / "report.html").read_text() == "the last good report"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def test_off_a_terminal_stdout_holds_one_json_line_and_the_tables_go_to_stderr(
    day: Path,
) -> None:
    result = invoke("compare", day, "-m", V1, "-m", V2, "--top", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["event"] == "summary" and summary["schema"] == "streamscore.compare"
    assert "streamscore compare" in result.stderr and "probabilities_1" in result.stderr


def test_a_gate_fails_when_no_row_matched(tmp_path: Path) -> None:
    for name, ids in (("a", [1, 2]), ("b", [3, 4])):
        (tmp_path / name).mkdir()
        scores = pa.table({"id": ids, "score": [0.1, 0.7]})
        pq.write_table(scores, tmp_path / name / "x.parquet")
    args = ["compare", "--scored", tmp_path / "a", tmp_path / "b", "--key", "id", "--json", "-"]
    plain = invoke(*args)
    assert plain.exit_code == 0
    data = json.loads(plain.stdout)
    assert data["rows"]["matched"] == 0 and data["rows"]["only_a"] == data["rows"]["only_b"] == 2
    assert data["columns"][0]["a"]["mean"] is None  # nothing compared: no statistic
    gated = invoke(*args, "--max-psi", "0.2")
    assert gated.exit_code == 9 and "no row was scored by both sides" in gated.output
    assert "differ" not in gated.output and "top rows" not in gated.output  # nothing to show


def test_the_top_rows_table_never_cuts_the_key_on_a_narrow_terminal() -> None:
    key = "date=2026-11-04/part-0.parquet#22621"
    keep = {"event_time": "2026-11-04 10:49:20.207000+00:00", "note": "x" * 60}
    column = {"name": "p", "top": [{"key": key, "a": 0.9, "b": 0.1, "delta": 0.8, "keep": keep}]}
    out = io.StringIO()

    Console(file=out, width=90).print(console.format_compare_top(column))

    assert key in out.getvalue()
    assert "+0.8" in out.getvalue()


def test_the_top_rows_title_stays_on_one_line_above_a_narrow_table() -> None:
    column = {"name": "label", "top": [{"key": 7, "a": 1, "b": 0, "delta": 1, "keep": {}}]}
    out = io.StringIO()

    Console(file=out, width=120).print(console.format_compare_top(column))

    assert out.getvalue().splitlines()[0].strip() == "label: rows that differ most"
