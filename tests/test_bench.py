"""``streamscore bench``: inputs, the harness, the JSON report, the CI gate, pictures, CLI.

Runs use tiny durations (tens of milliseconds per configuration); no test asserts a speed.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper

from helpers.runs import invoke
from streamscore import plotting
from streamscore.bench import (
    SCHEMA_VERSION,
    BenchOptions,
    BenchReport,
    compare_reports,
    load_report,
    regression_error,
    run_bench,
    save_report,
)
from streamscore.bench.harness import (
    HarnessSettings,
    Window,
    is_stable,
    measure_closed_loop,
    measure_open_loop,
)
from streamscore.bench.inputs import GeneratedInputs, load_rows
from streamscore.bench.options import parse_percent, parse_shapes
from streamscore.bench.plot import to_html, write_plot
from streamscore.errors import InputError, ModelError, UsageError
from streamscore.model import resolve_model
from streamscore.model.session import load_model, time_device_copies
from streamscore.model.signature import ModelSignature, TensorSpec

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
MLP = str(SAMPLE / "models" / "fraud_mlp")
COLUMNS_MODEL = str(SAMPLE / "models" / "fraud_columns")
DAY = SAMPLE / "transactions" / "date=2026-11-01" / "part-0.parquet"
QUICK = {"warmup_s": 0.02, "window_s": 0.05, "max_duration_s": 0.15}
TINY = HarnessSettings(warmup_s=0.01, window_s=0.03, max_duration_s=0.1)
QUICK_CLI = ["--warmup", "0.02", "--window", "0.05", "--max-duration", "0.15"]


def quick(model: str = MLP, **options: object) -> BenchOptions:
    """BenchOptions that finish in a fraction of a second per configuration."""
    return BenchOptions(model, **{"batch_sizes": (1, 8), **QUICK, **options})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> BenchReport:
    """One small real run shared by the report tests."""
    return run_bench(quick(json_path=tmp_path_factory.mktemp("bench") / "bench.json"))


def cuda_really_loads() -> bool:
    try:
        return load_model(resolve_model(MLP), provider="cuda").provider == "cuda"
    except ModelError:
        return False


# ---------------------------------------------------------------- inputs


def test_generated_inputs_follow_types_and_shapes_and_fill_dynamic_dims_from_shape() -> None:
    signature = ModelSignature(
        inputs=(
            TensorSpec("x", "tensor(float)", ("batch", "seq")),
            TensorSpec("ids", "tensor(int64)", (None, 3)),
            TensorSpec("city", "tensor(string)", ("batch", 1)),
        ),
        outputs=(),
    )
    feeds = GeneratedInputs(signature, dict(parse_shapes(["seq=5"]))).feeds(4)
    assert feeds["x"].shape == (4, 5) and feeds["x"].dtype == np.float32
    assert feeds["ids"].shape == (4, 3) and feeds["ids"].dtype == np.int64
    assert feeds["city"].shape == (4, 1) and all(
        isinstance(v, str) and v for v in feeds["city"].ravel()
    )
    again = GeneratedInputs(signature, {"seq": (5,)}).feeds(4)
    assert np.array_equal(feeds["x"], again["x"])  # seeded: two runs feed the same values


def test_a_dynamic_dimension_without_a_size_is_a_usage_error_naming_it() -> None:
    signature = ModelSignature(
        inputs=(TensorSpec("x", "tensor(float)", ("batch", "seq")),), outputs=()
    )
    with pytest.raises(UsageError) as raised:
        GeneratedInputs(signature, {}).feeds(2)
    assert "dimension 'seq'" in raised.value.one_line()
    assert "--shape seq=" in raised.value.one_line()


def test_a_fixed_batch_dimension_rejects_other_batch_sizes() -> None:
    signature = ModelSignature(inputs=(TensorSpec("x", "tensor(float)", (1, 3)),), outputs=())
    assert GeneratedInputs(signature, {}).feeds(1)["x"].shape == (1, 3)
    with pytest.raises(UsageError) as raised:
        GeneratedInputs(signature, {}).feeds(8)
    assert "--batch-sizes 1" in raised.value.one_line()


def test_bad_shape_and_percent_options_are_usage_errors() -> None:
    assert parse_shapes(["image=3x224x224"]) == (("image", (3, 224, 224)),)
    assert parse_percent("10%") == pytest.approx(0.10) and parse_percent("2.5") == pytest.approx(
        0.025
    )
    for bad in (["seq"], ["seq=abc"], ["=4"]):
        with pytest.raises(UsageError):
            parse_shapes(bad)
    with pytest.raises(UsageError):
        parse_percent("fast")


def test_real_rows_come_through_the_batch_mapping_and_repeat_to_fill_a_batch(
    tmp_path: Path,
) -> None:
    small = tmp_path / "three.parquet"
    pq.write_table(pq.read_table(DAY).slice(0, 3), small)
    model = load_model(resolve_model(COLUMNS_MODEL), provider="cpu")
    rows = load_rows(small, model.signature)
    feeds = rows.feeds(8)
    assert rows.rows == 3 and feeds["merchant_category"].shape == (8, 1)
    source = pq.read_table(small).column("merchant_category").to_pylist()
    assert feeds["merchant_category"].ravel().tolist() == [source[i % 3] for i in range(8)]
    assert feeds["f00"].dtype == np.float32


def test_bench_with_data_measures_real_rows() -> None:
    result = run_bench(quick(COLUMNS_MODEL, batch_sizes=(16,), data=DAY))
    assert "real rows" in result.settings.inputs
    assert result.results[0].calls > 0 and result.results[0].rows == 16 * result.results[0].calls


# ---------------------------------------------------------------- harness


def test_closed_loop_counts_every_call_of_every_caller() -> None:
    calls: list[int] = []
    m = measure_closed_loop(lambda: calls.append(1), concurrency=2, settings=TINY)
    assert 0 < m.calls <= len(calls)
    assert len(m.latency_ns) == len(m.service_ns) == m.calls
    assert m.overhead is not None and 0 <= m.overhead < 1
    assert m.reported_windows <= len(m.windows)


def test_open_loop_latency_counts_from_intended_start_so_queueing_shows() -> None:
    # 5 ms of work at 1000 requests/s: five times what one caller can serve.
    m = measure_open_loop(lambda: time.sleep(0.005), rate=1000, settings=TINY)
    assert np.all(m.latency_ns >= m.service_ns)
    assert np.median(m.queue_ns) > np.median(m.service_ns)
    assert m.target_rate == 1000 and m.backlog > 0


def test_stability_needs_the_last_windows_to_agree() -> None:
    def windows(*rates: float) -> list[Window]:
        return [Window(0, 1_000_000_000, int(r), 1000.0) for r in rates]

    settings = HarnessSettings(stability=0.10)
    assert is_stable(windows(50, 100, 101, 99), settings)
    assert not is_stable(windows(100, 130, 100), settings)
    assert not is_stable(windows(100, 100), settings)


def test_open_loop_bench_reports_service_and_queue_beside_latency() -> None:
    result = run_bench(quick(batch_sizes=(1,), rates=(300.0,))).results[0]
    assert result.open_loop and result.target_rate == 300.0
    assert result.service_ms is not None and result.queue_ms is not None
    assert result.latency_ms.p50 >= result.service_ms.p50
    assert result.latency_ms.min >= result.service_ms.min
    assert result.calls > 0 and result.backlog is not None and result.backlog >= 0
    assert result.key.endswith("/rate=300/constant")


def test_io_binding_times_copies_and_compute_apart_on_cpu() -> None:
    model = load_model(resolve_model(MLP), provider="cpu")
    timings = time_device_copies(model, {"input": np.ones((4, 30), np.float32)}, 3)
    for values in (timings.h2d_ns, timings.compute_ns, timings.d2h_ns):
        assert len(values) == 3 and np.all(values >= 0)
    strings = load_model(resolve_model(COLUMNS_MODEL), provider="cpu")
    with pytest.raises(ModelError, match="string"):
        time_device_copies(strings, GeneratedInputs(strings.signature, {}).feeds(2), 1)


def test_ctrl_c_while_stopping_the_callers_still_waits_for_each_one() -> None:
    import signal
    import threading

    from streamscore.bench.harness import _Callers

    release = threading.Event()  # the calls in progress end only after the Ctrl-C
    callers = _Callers(2, lambda _record, _flag: release.wait(10))
    callers.start()
    main = threading.main_thread().ident
    assert main is not None

    def ctrl_c_then_release() -> None:
        time.sleep(0.1)
        signal.pthread_kill(main, signal.SIGINT)
        time.sleep(0.3)
        release.set()

    interrupter = threading.Thread(target=ctrl_c_then_release)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            callers.stop()  # interrupted while joining
        # A caller left inside ONNX Runtime at interpreter exit aborts the process (SIGABRT).
        assert not any(thread.is_alive() for thread in callers.threads)
    finally:
        release.set()
        interrupter.join()


def test_callers_start_with_stop_signals_blocked_so_only_the_main_thread_takes_them() -> None:
    import signal

    from streamscore.bench.harness import _Callers

    masks: list[set[int]] = []
    callers = _Callers(2, lambda _record, _flag: masks.append(signal.pthread_sigmask(0, [])))
    callers.start()  # a Ctrl-C inside Thread.start left a caller running: SIGABRT at exit
    callers.stop()
    assert all({signal.SIGINT, signal.SIGTERM} <= mask for mask in masks) and len(masks) == 2
    assert signal.SIGINT not in signal.pthread_sigmask(0, [])  # the main thread's is restored


# ---------------------------------------------------------------- report


def test_report_json_round_trips_and_documents_the_environment(report: BenchReport) -> None:
    data = json.loads(json.dumps(report.to_dict()))
    assert BenchReport.from_dict(data) == report
    assert data["schema"] == "streamscore.bench" and data["schema_version"] == SCHEMA_VERSION
    env = data["environment"]
    assert env["cpu_model"] and env["cpu_cores_logical"] >= 1 and env["onnxruntime"]
    assert "cpu" in env["providers_listed"] and env["providers_used"] == ["cpu"]
    assert data["model"]["sha256"] == resolve_model(MLP).sha256
    assert [r["key"] for r in data["results"]] == [
        "cpu/threads=0/batch=1/concurrency=1",
        "cpu/threads=0/batch=8/concurrency=1",
    ]
    first = data["results"][0]
    assert set(first["latency_ms"]) == {"min", "p50", "p90", "p95", "p99", "max", "mean"}
    assert first["rows_per_s"] == pytest.approx(first["calls_per_s"] * 1)
    assert data["best"] in [r["key"] for r in data["results"]]


def test_saved_report_loads_back(report: BenchReport, tmp_path: Path) -> None:
    save_report(report, tmp_path / "r.json")
    assert load_report(tmp_path / "r.json") == report


def test_load_report_refuses_other_json_and_newer_schemas(
    report: BenchReport, tmp_path: Path
) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"rows": 1}')
    with pytest.raises(InputError, match="not a streamscore bench report"):
        load_report(other)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**report.to_dict(), "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(InputError, match="schema_version"):
        load_report(newer)


# ---------------------------------------------------------------- regression gate


def doctored(report: BenchReport, path: Path, speedup: float) -> Path:
    """The report as a baseline ``speedup`` times faster (more rows/s, lower p99)."""
    data = report.to_dict()
    for result in data["results"]:
        result["rows_per_s"] *= speedup
        result["latency_ms"]["p99"] /= speedup
    path.write_text(json.dumps(data))
    return path


def test_equal_results_pass_the_gate(report: BenchReport, tmp_path: Path) -> None:
    comparison = compare_reports(
        report, report, max_regression=0.10, baseline_path=tmp_path / "same.json"
    )
    assert len(comparison.changes) == 2 * len(report.results)
    assert comparison.regressions == [] and regression_error(comparison) is None


def test_an_injected_slowdown_fails_the_gate_naming_the_configuration(
    report: BenchReport, tmp_path: Path
) -> None:
    baseline = load_report(doctored(report, tmp_path / "fast.json", 2.0))
    comparison = compare_reports(report, baseline, max_regression=0.10, baseline_path=tmp_path)
    error = regression_error(comparison)
    assert error is not None and error.exit_code == 8
    assert "cpu/threads=0/batch=1/concurrency=1 rows/s" in error.message


def test_cli_exits_8_against_a_baseline_far_faster(report: BenchReport, tmp_path: Path) -> None:
    # 1000x, not 2x: a busy test machine can swing short runs by more than 2x.
    baseline = doctored(report, tmp_path / "fast.json", 1000.0)
    out = tmp_path / "now.json"
    result = invoke(
        "bench", MLP, "--batch-sizes", "1", *QUICK_CLI, "--baseline", baseline, "--json", out
    )
    assert result.exit_code == 8, result.output
    assert "regressed" in result.output and "cpu/threads=0/batch=1/concurrency=1" in result.output
    assert load_report(out).comparison is not None  # the report is written before exiting


def test_cli_passes_against_a_baseline_it_matches(report: BenchReport, tmp_path: Path) -> None:
    baseline = doctored(report, tmp_path / "slow.json", 0.001)
    result = invoke("bench", MLP, "--batch-sizes", "1,8", *QUICK_CLI, "--baseline", baseline)
    assert result.exit_code == 0, result.output


def test_a_baseline_without_shared_configurations_fails_before_measuring(
    report: BenchReport, tmp_path: Path
) -> None:
    baseline = doctored(report, tmp_path / "base.json", 1.0)
    result = invoke(
        "bench", MLP, "--batch-sizes", "512", "--max-duration", "60", "--baseline", baseline
    )
    assert result.exit_code == 2 and "none of this run's configurations" in result.output


# ---------------------------------------------------------------- providers


def test_an_unavailable_provider_is_reported_not_fatal() -> None:
    if cuda_really_loads():
        pytest.skip("CUDA really loads here")
    result = run_bench(quick(batch_sizes=(1,), providers=("cpu", "cuda")))
    cuda = next(p for p in result.providers if p.requested == "cuda")
    assert not cuda.available and cuda.used is None and cuda.reason
    assert {r.configuration.provider for r in result.results} == {"cpu"}
    assert result.environment.providers_used == ["cpu"]


def test_require_provider_turns_an_unavailable_provider_into_exit_5() -> None:
    if cuda_really_loads():
        pytest.skip("CUDA really loads here")
    shown = invoke("bench", MLP, "--batch-sizes", "1", *QUICK_CLI, "--providers", "cpu,cuda")
    assert shown.exit_code == 0 and "cuda: unavailable" in shown.output
    required = invoke(
        "bench", MLP, "--batch-sizes", "1", *QUICK_CLI, "--providers", "cuda", "--require-provider"
    )
    assert required.exit_code == 5 and "--require-provider: cuda" in required.output


# ---------------------------------------------------------------- pictures


def test_html_plot_is_self_contained(report: BenchReport, tmp_path: Path) -> None:
    page = to_html(report)
    assert page.count("<svg") == 2 and "<script" not in page
    # matplotlib's SVG names its own namespaces; nothing is fetched from anywhere
    assert "src=" not in page and "<link" not in page and "url(http" not in page
    assert "<?xml" not in page  # each SVG is inlined as an element, not a document
    for result in report.results:
        assert result.key in page


def test_html_table_has_the_terminal_tables_latency_columns(report: BenchReport) -> None:
    page = to_html(report)

    header = re.findall(r"<th>([^<]*)</th>", page)
    assert [h for h in header if h.endswith(" ms")] == [
        f"{name} ms" for name in ("min", "p50", "p90", "p95", "p99", "max")
    ]
    assert "★ most rows/s" in page


def test_png_and_svg_come_from_the_same_figure(report: BenchReport, tmp_path: Path) -> None:
    png, svg = tmp_path / "bench.png", tmp_path / "bench.svg"
    write_plot(report, png)
    write_plot(report, svg)
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    text = svg.read_text()
    assert text.startswith("<?xml") and text.count("<svg") == 1
    match = re.search(r'<svg[^>]*width="([0-9.]+)pt" height="([0-9.]+)pt"', text)
    assert match is not None
    # same figure: the same aspect ratio (PNG at 110 dpi, SVG in points at 72 per inch)
    assert width / height == pytest.approx(float(match[1]) / float(match[2]), rel=0.02)


def test_plot_without_matplotlib_is_a_one_line_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    path = tmp_path / "bench.png"
    result = invoke("bench", MLP, "--batch-sizes", "1", *QUICK_CLI, "--plot", path)
    assert result.exit_code == 2 and "streamscore[plot]" in result.output
    assert "Traceback" not in result.output and not path.exists()


def test_png_plot_is_a_png_image(report: BenchReport, tmp_path: Path) -> None:
    path = tmp_path / "bench.png"
    result = invoke("bench", MLP, "--batch-sizes", "1,8", *QUICK_CLI, "--plot", path)
    assert result.exit_code == 0, result.output
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 400 and height > 300


# ---------------------------------------------------------------- pipeline


def test_pipeline_batch_reports_rows_per_second_beside_bare_session_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pq.read_table(DAY).slice(0, 2000), data / "part-0.parquet")
    result = run_bench(quick(batch_sizes=(512,), data=data, pipeline="batch"))
    assert result.results == [] and len(result.pipeline) == 1
    p = result.pipeline[0]
    assert p.rows == 2000 and p.pipeline_rows_per_s > 0 and p.bare_rows_per_s > 0
    assert p.ratio == pytest.approx(p.pipeline_rows_per_s / p.bare_rows_per_s)


def test_pipeline_needs_data() -> None:
    with pytest.raises(UsageError) as raised:
        quick(pipeline="batch")
    assert "--data DIR" in raised.value.one_line()


# ---------------------------------------------------------------- CLI


def test_help_has_an_example() -> None:
    result = invoke("bench", "--help")
    assert result.exit_code == 0 and "Example: streamscore bench" in result.output


def test_json_to_stdout_is_the_report(tmp_path: Path) -> None:
    result = invoke("bench", MLP, "--batch-sizes", "1", *QUICK_CLI, "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema_version"] == SCHEMA_VERSION and len(data["results"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-sizes", "0"], "--batch-sizes"),
        (["--providers", "tpu"], "unknown provider"),
        (["--plot", "bench.pdf"], "--plot"),
        (["--max-regression", "lots"], "--max-regression"),
        (["--pipeline", "batch"], "--data"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = invoke("bench", MLP, *args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_a_missing_model_exits_5() -> None:
    result = invoke("bench", "no/such/model.onnx")
    assert result.exit_code == 5 and "model not found" in result.output


def test_dynamic_dims_of_a_real_model_need_shape(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])],
    )
    path = tmp_path / "dyn.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, path)
    missing = invoke("bench", path, "--batch-sizes", "2", *QUICK_CLI)
    assert missing.exit_code == 2 and "--shape seq=" in missing.output
    given = invoke(
        "bench", path, "--batch-sizes", "2", *QUICK_CLI, "--shape", "seq=7", "--json", "-"
    )
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout)["settings"]["shapes"] == {"seq": [7]}


def test_options_are_frozen_and_validated_once() -> None:
    options = quick()
    with pytest.raises(UsageError):
        replace(options, concurrency=(0,))


def _shown_ticks(axis: Any) -> list[str]:
    """The tick labels drawn inside the axis' view."""
    low, high = sorted(axis.get_view_interval())
    ticks = [
        *zip(axis.get_majorticklocs(), axis.get_ticklabels(), strict=True),
        *zip(axis.get_minorticklocs(), axis.get_ticklabels(minor=True), strict=True),
    ]
    return sorted(label.get_text() for at, label in ticks if low <= at <= high and label.get_text())


def test_a_log_axis_spanning_less_than_a_decade_still_has_labels_near_the_data() -> None:
    figure = plotting.new_figure(6, 3)
    ax = figure.subplots()
    ax.plot([1, 64], [75e3, 288e3])
    ax.set_yscale("log")
    plotting.log_axis(ax.yaxis)
    figure.canvas.draw()

    assert _shown_ticks(ax.yaxis) == ["100k", "200k", "300k", "80k"]


def test_a_log_axis_over_decades_labels_only_1_2_5() -> None:
    figure = plotting.new_figure(6, 3)
    ax = figure.subplots()
    ax.plot([1, 64], [30, 2e5])
    ax.set_yscale("log")
    plotting.log_axis(ax.yaxis)
    figure.canvas.draw()

    assert all(label[0] in "125" for label in _shown_ticks(ax.yaxis))
