"""Remote models over the Open Inference Protocol: the client's pieces, batch and inspect.

The server tests run against a real MLServer (the ``model_server`` fixture) serving the sample
models with the ONNX runtime in tests/support; see tests/support/model_server.py for the
misbehaving variants (fraud_strict, fraud_short, fraud_unsigned).
"""

from __future__ import annotations

import http.server
import json
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ModelServer
from helpers.data import streamscore_metadata
from helpers.runs import batch_options, invoke, score
from helpers.tls import self_signed_certificate
from streamscore.batch import REJECTED_DIR, BatchRun
from streamscore.config import OnError
from streamscore.errors import RemoteError, RemoteUnavailable, UsageError
from streamscore.model.base import SubmittingModel, close_model, open_model
from streamscore.model.signature import ModelSignature, TensorSpec
from streamscore.remote import ModelURL
from streamscore.remote.breaker import BreakerState, CircuitBreaker
from streamscore.remote.protocol import decode_response, parse_signature
from streamscore.remote.settings import RemoteSettings
from streamscore.reporting import RecordingReporter
from streamscore.scoring import REASON_COLUMN

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
FEATURES = tuple(f"f{i:02d}" for i in range(30))
SCORES = ["label", "probabilities_0", "probabilities_1"]
FAST = RemoteSettings(timeout_s=2.0, retries=1, backoff_s=0.05, max_backoff_s=0.1)


def sample_input(folder: Path, rows: int = 1500, files: int = 1) -> Path:
    """``files`` Parquet files of the holdout day's first rows, under ``folder``."""
    table = pq.read_table(SAMPLE / "transactions" / "date=2026-11-04" / "part-0.parquet")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        pq.write_table(table.slice(i * rows, rows), folder / f"part-{i}.parquet")
    return folder


# ---------------------------------------------------------------- pieces, no server


def test_a_model_url_names_server_model_and_optional_version() -> None:
    latest = ModelURL.parse("http://127.0.0.1:8080/v2/models/fraud")
    pinned = ModelURL.parse("https://models.example:443/prefix/v2/models/fraud/versions/3/")
    assert (latest.server, latest.name, latest.version) == ("http://127.0.0.1:8080", "fraud", None)
    assert (pinned.server, pinned.name, pinned.version) == (
        "https://models.example:443/prefix",
        "fraud",
        "3",
    )
    assert pinned.model_path() == "/v2/models/fraud/versions/3"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@127.0.0.1:8080/v2/models/fraud",
        "http://127.0.0.1:8080/v2/models/fraud?token=secret",
        "http://127.0.0.1:8080/models/fraud",
    ],
)
def test_a_model_url_with_credentials_a_query_or_another_path_is_refused(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        ModelURL.parse(url)
    assert "secret" not in caught.value.one_line()


def test_header_values_never_show_in_the_settings_repr() -> None:
    settings = RemoteSettings.build(["Authorization: Bearer s3cret", "X-Team: fraud"])
    assert "s3cret" not in repr(settings) and "fraud" not in repr(settings)
    assert settings.request_headers()["Authorization"] == "Bearer s3cret"
    with pytest.raises(UsageError) as caught:
        RemoteSettings.build(["Bearer s3cret-without-a-name"])
    assert "s3cret" not in caught.value.one_line()


def test_answers_are_asked_for_uncompressed_unless_the_user_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MLServer gzips every answer over 1 KB at level 9: half its throughput on a local link.
    monkeypatch.setenv("STREAMSCORE_REMOTE_TOKEN", "t0ken")
    sent = RemoteSettings().request_headers()
    assert sent["accept-encoding"] == "identity" and sent["authorization"] == "Bearer t0ken"
    sent = RemoteSettings.build(
        ["Accept-Encoding: gzip", "authorization: Basic x"]
    ).request_headers()
    assert {k.lower(): v for k, v in sent.items()} == {
        "content-type": "application/json",
        "accept-encoding": "gzip",
        "authorization": "Basic x",
    }
    assert len(sent) == 3  # the user's headers replace ours, whatever their case


def test_a_signature_given_as_text_reads_oip_datatypes_and_shapes() -> None:
    signature = parse_signature("input:fp32[-1,30]->label:INT64[-1], proba:FP64[-1,2]")
    assert [s.describe() for s in signature.inputs] == ["input: tensor(float) [?,30]"]
    assert [s.describe() for s in signature.outputs] == [
        "label: tensor(int64) [?]",
        "proba: tensor(double) [?,2]",
    ]
    for bad, says in (
        ("input:FP32[-1,30]", "is not"),
        ("input:FP99[-1]->y:FP32[-1]", "FP99"),
        ("input:FP32[-1,n]->y:FP32[-1]", "shape [-1,n]"),
        ("x:FP32[-1]->x:FP32[-1]", "twice"),
    ):
        with pytest.raises(UsageError, match=re.escape(says)):
            RemoteSettings.build(signature=bad if "->" in bad else bad + "->")
    assert RemoteSettings.build(signature="model.onnx").signature == Path("model.onnx")


def test_the_breaker_opens_after_failures_then_lets_one_probe_through() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=0.05)
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.open and not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.half_open and not breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.closed and breaker.allow()


SIGNATURE = ModelSignature(
    inputs=(TensorSpec("input", "tensor(float)", (None, 2)),),
    outputs=(
        TensorSpec("label", "tensor(int64)", (None,)),
        TensorSpec("p", "tensor(float)", (None, 2)),
    ),
)


def answer(**outputs: tuple[list[int], str, list[float]]) -> bytes:
    tensors = [
        {"name": name, "shape": shape, "datatype": datatype, "data": data}
        for name, (shape, datatype, data) in outputs.items()
    ]
    return orjson.dumps({"model_name": "m", "model_version": "1", "outputs": tensors})


def test_a_well_formed_answer_decodes_with_n_by_1_outputs_flattened() -> None:
    body = answer(label=([2, 1], "INT64", [0, 1]), p=([2, 2], "FP32", [0.9, 0.1, 0.2, 0.8]))
    values, version = decode_response(body, SIGNATURE, ["label", "p"], 2, "server S")
    assert version == "1" and values[0].tolist() == [0, 1] and values[1].shape == (2, 2)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (answer(label=([1], "INT64", [0]), p=([1, 2], "FP32", [0.5, 0.5])), "1 row(s)"),
        (answer(label=([2], "INT64", [0, 1])), "left out output(s) p"),
        (answer(label=([2], "FP64", [0, 1]), p=([2, 2], "FP32", [0] * 4)), "as FP64"),
        (b"<html>oops</html>", "not an OIP response"),
    ],
)
def test_an_answer_that_does_not_match_the_request_is_an_error_naming_the_server(
    body: bytes, fragment: str
) -> None:
    with pytest.raises(RemoteError) as caught:
        decode_response(body, SIGNATURE, ["label", "p"], 2, "model server http://S")
    assert "http://S" in caught.value.one_line() and fragment in caught.value.one_line()


# ---------------------------------------------------------------- a real MLServer


def test_batch_scores_through_the_server_equal_embedded_scores_with_lineage(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in")
    for model, features in (("fraud", FEATURES), ("fraud_columns", None)):
        local = SAMPLE / "models" / model
        embedded, _ = score(source, tmp_path / f"{model}-local", local, features=features)
        remote, _ = score(
            source,
            tmp_path / f"{model}-remote",
            model_server.model(model),
            features=features,
            remote=RemoteSettings(concurrency=3),
            batch_size=256,
        )
        assert remote.rows_scored == embedded.rows_scored == 1500
        assert (remote.model_version, remote.provider, remote.model_server) == (
            "2" if model == "fraud" else "1",
            "remote",
            model_server.url,
        )
        local_rows = pq.read_table(tmp_path / f"{model}-local" / "part-0.parquet")
        remote_rows = pq.read_table(tmp_path / f"{model}-remote" / "part-0.parquet")
        assert remote_rows.column("transaction_id").equals(local_rows.column("transaction_id"))
        assert remote_rows.column("label").equals(local_rows.column("label"))
        for column in ("probabilities_0", "probabilities_1"):
            np.testing.assert_allclose(
                remote_rows.column(column).to_numpy(),
                local_rows.column(column).to_numpy(),
                atol=1e-6,
            )
        meta = streamscore_metadata(tmp_path / f"{model}-remote" / "part-0.parquet")
        assert meta["model_server"] == model_server.url and meta["provider"] == "remote"
        assert meta["model_name"] == model and meta["model_version"] == remote.model_version


def test_a_pinned_version_is_the_one_that_answers(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in", rows=300)
    v1, _ = score(source, tmp_path / "v1", model_server.model("fraud", "1"), features=FEATURES)
    local, _ = score(
        source, tmp_path / "local", SAMPLE / "models" / "fraud" / "1", features=FEATURES
    )
    assert v1.model_version == "1"
    remote_p = pq.read_table(tmp_path / "v1" / "part-0.parquet").column("probabilities_1")
    local_p = pq.read_table(tmp_path / "local" / "part-0.parquet").column("probabilities_1")
    np.testing.assert_allclose(remote_p.to_numpy(), local_p.to_numpy(), atol=1e-6)


def test_rows_the_server_rejects_are_isolated_and_quarantined_with_its_message(
    tmp_path: Path, model_server: ModelServer
) -> None:
    table = pq.read_table(SAMPLE / "transactions" / "date=2026-11-04" / "part-0.parquet").slice(
        0, 1000
    )
    bad = [3, 517, 998]
    amounts = table.column("f00").to_numpy().copy()
    amounts[bad] = -1.0
    table = table.set_column(table.schema.get_field_index("f00"), "f00", pa.array(amounts))
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "part-0.parquet")
    summary, _ = score(
        tmp_path / "in",
        tmp_path / "out",
        model_server.model("fraud_strict"),
        features=FEATURES,
        batch_size=400,
    )
    assert (summary.rows_scored, summary.rows_rejected) == (997, 3)
    rejected = pq.read_table(tmp_path / "out" / REJECTED_DIR / "part-0.parquet")
    assert rejected.column("transaction_id").to_pylist() == [
        table.column("transaction_id")[i].as_py() for i in bad
    ]
    reasons = rejected.column(REASON_COLUMN).to_pylist()
    assert all(r.startswith("remote_rejected: model server") for r in reasons)
    assert all("must be at least 0" in r for r in reasons)
    assert list(summary.rejected_reasons.values()) == [3]


def test_a_server_answering_too_few_rows_fails_the_file_and_writes_nothing(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in", rows=500)
    summary, _ = score(
        source, tmp_path / "out", model_server.model("fraud_short", "1"), features=FEATURES
    )
    assert summary.files_failed == 1 and summary.rows_scored == 0
    assert model_server.url in summary.failures[0] and "row(s)" in summary.failures[0]
    assert not list((tmp_path / "out").rglob("*.parquet"))


def test_a_server_outage_fails_the_files_unquarantined_and_a_rerun_resumes(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in", rows=400, files=2)
    options = batch_options(
        source, tmp_path / "out", model_server.model("fraud"), features=FEATURES, remote=FAST
    )
    model = open_model(options.scoring.model, remote=FAST)
    model_server.stop()
    try:
        summary = BatchRun(options, model, RecordingReporter()).execute()
    finally:
        close_model(model)
    assert summary.files_failed == 2 and summary.partial  # the CLI exits 3
    assert (
        "unavailable" in summary.failures[0] and "nothing was dead-lettered" in summary.failures[0]
    )
    assert not list((tmp_path / "out").rglob("*.parquet"))  # no output, nothing quarantined
    model_server.start()
    rerun, _ = score(
        source, tmp_path / "out", model_server.model("fraud"), features=FEATURES, remote=FAST
    )
    assert (rerun.files_ok, rerun.files_failed, rerun.rows_scored) == (2, 0, 800)


def test_a_server_that_is_down_exits_12_with_one_line_and_no_secret(
    tmp_path: Path, model_server: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = model_server.model("fraud")
    model_server.stop()
    monkeypatch.setenv("STREAMSCORE_REMOTE_TOKEN", "env-s3cret")
    result = invoke(
        "batch", sample_input(tmp_path / "in", rows=10), "--out", tmp_path / "out",
        "--model", url, "--header", "X-Api-Key: hdr-s3cret", "--retries", "1", "--timeout", "1",
    )  # fmt: skip
    assert result.exit_code == 12
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unavailable" in lines[0] and model_server.url in lines[0]
    assert "s3cret" not in result.output


def test_a_server_without_a_signature_says_so_and_takes_one_from_a_local_copy(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in", rows=100)
    url = model_server.model("fraud_unsigned")
    result = invoke("batch", source, "--out", tmp_path / "out", "--model", url)
    assert result.exit_code == 5
    assert "publishes no signature" in result.output and "--signature" in result.output
    local = SAMPLE / "models" / "fraud" / "1" / "model.onnx"
    result = invoke(
        "batch", source, "--out", tmp_path / "out", "--model", url, "--signature", local
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "out" / "part-0.parquet").num_rows == 100


def test_a_server_without_a_signature_takes_its_tensors_as_text(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in", rows=300)
    url, features = model_server.model("fraud_unsigned"), ",".join(FEATURES)
    declared = "input:FP32[-1,30]->label:INT64[-1],probabilities:FP32[-1,2]"
    result = invoke(
        "batch", source, "--out", tmp_path / "out", "--model", url, "--features", features,
        "--signature", declared,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    embedded, _ = score(source, tmp_path / "local", SAMPLE / "models" / "fraud" / "1")
    assert embedded.rows_scored == 300
    served = pq.read_table(tmp_path / "out" / "part-0.parquet")
    local = pq.read_table(tmp_path / "local" / "part-0.parquet")
    assert served.column("label").equals(local.column("label"))
    np.testing.assert_allclose(
        served.column("probabilities_1").to_numpy(),
        local.column("probabilities_1").to_numpy(),
        atol=1e-6,
    )
    # A datatype other than the server's answer is an error naming the server, not a cast.
    wrong = declared.replace("probabilities:FP32", "probabilities:FP64")
    result = invoke(
        "batch", source, "--out", tmp_path / "wrong", "--model", url, "--features", features,
        "--signature", wrong, "--on-error", "fail",
    )  # fmt: skip
    assert result.exit_code == 12
    assert model_server.url in result.output and "FP64" in result.output
    malformed = invoke(
        "batch", source, "--out", tmp_path / "bad", "--model", url, "--signature", "input->label"
    )
    assert malformed.exit_code == 2 and "NAME:DATATYPE[DIMS]" in malformed.output


def test_models_inspect_shows_the_servers_metadata_and_readiness(model_server: ModelServer) -> None:
    result = invoke("models", "inspect", model_server.model("fraud_columns"), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["server"] == model_server.url and info["ready"] is True
    assert info["version"] == "1"
    assert [i["name"] for i in info["inputs"]][-1] == "merchant_category"
    assert info["inputs"][-1]["type"] == "tensor(string)"
    text = invoke("models", "inspect", model_server.model("fraud_unsigned"))
    assert text.exit_code == 0, text.output
    assert "model    ready" in text.output and "publishes no signature" in text.output
    missing = invoke("models", "inspect", model_server.model("nope"))
    assert missing.exit_code == 5 and "nope" in missing.output


def test_a_mismatch_in_on_error_fail_mode_stops_the_run_with_exit_12(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in", rows=50)
    with pytest.raises(RemoteError) as caught:
        score(
            source,
            tmp_path / "out",
            model_server.model("fraud_short", "1"),
            features=FEATURES,
            on_error=OnError.fail,
        )
    assert not isinstance(caught.value, RemoteUnavailable) and caught.value.exit_code == 12


# ---------------------------------------------------------------- bench


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_bench_measures_a_served_model_with_the_same_table(
    model_server: ModelServer, grpc: bool
) -> None:
    result = invoke(
        "bench", model_server.model("fraud_columns", grpc=grpc), "--batch-sizes", "8",
        "--concurrency", "1,2", "--warmup", "0", "--window", "0.1", "--max-duration", "0.3",
        "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["key"] for r in report["results"]] == [
        "remote/threads=0/batch=8/concurrency=1",
        "remote/threads=0/batch=8/concurrency=2",
    ]
    assert all(r["rows_per_s"] > 0 and r["provider_used"] == "remote" for r in report["results"])
    assert report["model"]["path"] == model_server.model("fraud_columns", "1", grpc=grpc)


def test_bench_model_and_url_compares_embedded_and_served_on_the_same_inputs(
    model_server: ModelServer,
) -> None:
    local = SAMPLE / "models" / "fraud_columns" / "1"
    result = invoke(
        "bench", local, model_server.model("fraud_columns"), "--batch-sizes", "4,32",
        "--warmup", "0", "--window", "0.1", "--max-duration", "0.3", "--json", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    providers = [r["configuration"]["provider"] for r in report["results"]]
    assert providers == ["cpu", "cpu", "remote", "remote"]
    compared = report["remote_comparison"]
    assert [c["embedded_key"] for c in compared] == [r["key"] for r in report["results"][:2]]
    for c, local_r, served_r in zip(
        compared, report["results"][:2], report["results"][2:], strict=True
    ):
        assert c["remote_key"] == served_r["key"]
        assert c["ratio"] == pytest.approx(served_r["rows_per_s"] / local_r["rows_per_s"])
        assert 0 <= c["remote_overhead"] <= 1 and c["serialization_ms"] > 0
        assert c["serialization_share"] + c["network_share"] <= 1 + 1e-9
    assert report["served"] == model_server.model("fraud_columns", "1")
    mismatch = invoke("bench", local, model_server.model("fraud"), "--batch-sizes", "4")
    assert mismatch.exit_code == 2 and "other inputs" in mismatch.output


# ---------------------------------------------------------------- TLS and credentials


class _TinyOip(http.server.BaseHTTPRequestHandler):
    """A minimal OIP model ``m``: p = x0 + x1, version 7; remembers request headers."""

    seen: ClassVar[list[dict[str, str]]] = []
    metadata = {
        "name": "m",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1]}],
    }

    def _send(self, code: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        if self.path.startswith("/v2/models/secure") and (
            self.headers.get("Authorization") != "Bearer good-token"
        ):
            self._send(401, {"error": "unauthorized"})
        elif self.path in ("/v2/models/secure", "/v2/models/secure/versions/7"):
            self._send(200, {**self.metadata, "name": "secure"})
        elif self.path in ("/v2/models/m", "/v2/models/m/versions/7"):
            self._send(200, self.metadata)
        elif self.path.endswith("/ready"):
            self._send(200, {})
        else:
            self._send(404, {"error": "no such model"})

    def do_POST(self) -> None:
        self.seen.append(dict(self.headers))
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        x = np.asarray(request["inputs"][0]["data"], dtype=np.float32).reshape(-1, 2)
        p = {"name": "p", "datatype": "FP32", "shape": [len(x)], "data": x.sum(1).tolist()}
        self._send(200, {"model_name": "m", "model_version": "7", "outputs": [p]})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A tiny OIP server on https://127.0.0.1 with a self-signed certificate; (url, cert)."""
    cert, key = self_signed_certificate(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TinyOip)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _TinyOip.seen.clear()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_tls_is_verified_and_ca_file_trusts_a_server_and_secrets_stay_hidden(
    https_server: tuple[str, Path],
) -> None:
    url, cert = https_server
    model = f"{url}/v2/models/m"
    untrusted = invoke("models", "inspect", model)
    assert untrusted.exit_code == 12 and "not trusted" in untrusted.output
    assert "--ca-file" in untrusted.output
    trusted = invoke(
        "models", "inspect", model, "--json", "--ca-file", cert,
        "--header", "Authorization: Bearer tls-s3cret",
    )  # fmt: skip
    assert trusted.exit_code == 0, trusted.output
    info = json.loads(trusted.output)
    assert (info["version"], info["ready"], info["inputs"][0]["name"]) == ("7", True, "x")
    assert "tls-s3cret" not in trusted.output
    assert _TinyOip.seen[-1].get("Authorization") == "Bearer tls-s3cret"


@pytest.mark.parametrize("grpc", [False, True], ids=["rest", "grpc"])
def test_closing_a_remote_model_gives_up_on_a_request_waiting_to_retry(
    model_server: ModelServer, grpc: bool
) -> None:
    patient = RemoteSettings(retries=50, backoff_s=1.0, max_backoff_s=5.0)
    model = open_model(model_server.model("fraud_columns", "1", grpc=grpc), remote=patient)
    assert isinstance(model, SubmittingModel)
    feeds = {s.name: np.zeros((2, 1), dtype=s.dtype) for s in model.signature.inputs}
    feeds["merchant_category"] = np.array([["grocery"], ["fuel"]], dtype=object)
    model_server.stop()
    call = model.submit(model.signature.output_names(), feeds)
    time.sleep(0.5)  # the request failed and waits to retry
    closing = time.monotonic()
    close_model(model)  # what an interrupted run does on its way out
    with pytest.raises(RemoteUnavailable):
        call.result()
    assert time.monotonic() - closing < 5


class _FlakyOip(_TinyOip):
    """Answers 503, then 429 (Retry-After: 0), then like _TinyOip."""

    failures: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        if self.failures:
            code = self.failures.pop(0)
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(code)
            self.send_header("retry-after", "0")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        super().do_POST()


def test_an_overloaded_or_failing_server_is_retried_until_it_answers() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyOip)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FlakyOip.failures[:] = [503, 429, 502]
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/m/versions/7"
        settings = RemoteSettings(retries=3, backoff_s=0.01, max_backoff_s=0.02)
        model = open_model(url, remote=settings)
        try:
            x = np.array([[1, 2], [3, 4]], dtype=np.float32)
            [p] = model.run(["p"], {"x": x})
        finally:
            close_model(model)
        assert p.tolist() == [3.0, 7.0] and _FlakyOip.failures == []
        _FlakyOip.failures[:] = [500] * 5
        model = open_model(url, remote=settings)
        try:
            with pytest.raises(RemoteUnavailable) as caught:
                model.run(["p"], {"x": x})
        finally:
            close_model(model)
        assert "after 4 attempt(s)" in caught.value.one_line()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("module", "url", "message"),
    [
        (
            "httpx",
            "http://127.0.0.1:9/v2/models/m",
            "error: a model URL needs the remote extra (pip install 'streamscore[remote]')",
        ),
        (
            "grpc",
            "grpc://127.0.0.1:9/v2/models/m",
            "error: a grpc:// model URL needs the grpc extra (pip install 'streamscore[grpc]')",
        ),
    ],
)
def test_without_its_extra_a_model_url_fails_in_one_line_naming_it(
    module: str, url: str, message: str
) -> None:
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['streamscore', *sys.argv[1:]]; "
        "from streamscore.cli.app import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "models", "inspect", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 5
    assert done.stderr.strip().splitlines() == [message]


def test_the_tail_status_panel_shows_each_model_servers_breaker() -> None:
    from io import StringIO

    from rich.console import Console

    from streamscore.console import format_tail_status

    shown = StringIO()
    Console(file=shown, width=120).print(
        format_tail_status({"model_servers": {"http://127.0.0.1:8080": "open"}})
    )
    assert "model server" in shown.getvalue() and "http://127.0.0.1:8080 open" in shown.getvalue()


def test_refused_credentials_exit_12_and_a_token_from_the_environment_is_sent_unseen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TinyOip)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        model = f"http://127.0.0.1:{server.server_address[1]}/v2/models/secure/versions/7"
        refused = invoke("models", "inspect", model)
        assert refused.exit_code == 12 and "refused access" in refused.output
        assert "STREAMSCORE_REMOTE_TOKEN" in refused.output
        monkeypatch.setenv("STREAMSCORE_REMOTE_TOKEN", "good-token")
        allowed = invoke("models", "inspect", model, "--json")
        assert allowed.exit_code == 0, allowed.output
        assert json.loads(allowed.output)["name"] == "secure"
        assert "good-token" not in allowed.output
    finally:
        server.shutdown()
        server.server_close()


class _SlowOip(_TinyOip):
    """_TinyOip answering each request after 0.5 s; counts the requests it serves at once
    and those it answered."""

    lock = threading.Lock()
    serving = 0
    most = 0
    answered = 0

    def do_POST(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.serving += 1
            cls.most = max(cls.most, cls.serving)
        time.sleep(0.5)
        with cls.lock:
            cls.serving -= 1
            cls.answered += 1  # counted before the answer leaves
        super().do_POST()


def test_the_next_request_waits_encoded_behind_the_one_in_flight() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowOip)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/m/versions/7"
        model = open_model(url, remote=RemoteSettings(concurrency=1))
        assert isinstance(model, SubmittingModel)
        try:
            feeds = [{"x": np.full((2, 2), i, dtype=np.float32)} for i in range(3)]
            first = model.submit(["p"], feeds[0])
            second = model.submit(["p"], feeds[1])  # queued: does not wait for the first
            assert _SlowOip.answered == 0
            third = model.submit(["p"], feeds[2])  # beyond in_flight: waits for the first
            assert _SlowOip.answered >= 1
            answers = [call.result().values[0].tolist() for call in (first, second, third)]
        finally:
            close_model(model)
        assert answers == [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]]
        assert _SlowOip.most == 1  # still one request on the wire at a time
    finally:
        server.shutdown()
        server.server_close()


def test_each_request_carries_at_most_batch_size_rows_and_scores_stay_on_their_rows() -> None:
    from streamscore.scoring import Scorer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TinyOip)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _TinyOip.seen.clear()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/m/versions/7"
        model = open_model(url, remote=RemoteSettings(concurrency=2))
        try:
            rows = pa.record_batch({"a": np.arange(5, dtype=np.float32), "b": np.ones(5)})
            scorer = Scorer.for_schema(model, rows.schema, features=["a", "b"], batch_size=2)
            before = len(_TinyOip.seen)
            scored = scorer.score(rows)
        finally:
            close_model(model)
        assert len(_TinyOip.seen) - before == 3  # 2 + 2 + 1 rows
        assert scored.scores.column("p").to_pylist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    finally:
        server.shutdown()
        server.server_close()
