"""Remote models over OIP's gRPC API (``grpc://``, ``grpcs://``): the same guarantees as REST.

The server tests run against the gRPC port of the real MLServer of the ``model_server``
fixture; a tiny in-process gRPC server stands in for servers MLServer cannot imitate
(typed contents answers, refused credentials, TLS, a flaky server).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ModelServer
from helpers.data import streamscore_metadata
from helpers.runs import invoke, score
from helpers.tls import self_signed_certificate
from streamscore.batch import REJECTED_DIR
from streamscore.errors import RemoteUnavailable, UsageError
from streamscore.model.base import close_model, open_model
from streamscore.remote import ModelURL
from streamscore.remote import grpc_messages as pb
from streamscore.remote.grpc_client import from_raw_bytes, raw_bytes
from streamscore.remote.settings import RemoteSettings
from streamscore.replay import run_replay
from streamscore.scoring import REASON_COLUMN
from test_remote_batch import FAST, FEATURES, SAMPLE, sample_input

# ---------------------------------------------------------------- pieces, no server


def test_a_grpc_model_url_mirrors_the_rest_path_with_another_scheme() -> None:
    url = ModelURL.parse("grpc://127.0.0.1:8081/v2/models/fraud/versions/3")
    assert (url.server, url.name, url.version, url.is_grpc) == (
        "grpc://127.0.0.1:8081", "fraud", "3", True,
    )  # fmt: skip
    assert url.target == "127.0.0.1:8081"
    secure = ModelURL.parse("grpcs://models.example.com/v2/models/fraud")
    assert (secure.target, secure.version, secure.is_grpc) == ("models.example.com:443", None, True)
    assert not ModelURL.parse("http://127.0.0.1:8080/v2/models/fraud").is_grpc
    for bad in ("grpc://127.0.0.1/v2/models/fraud", "grpc://127.0.0.1:8081/api/v2/models/fraud"):
        with pytest.raises(UsageError):
            ModelURL.parse(bad)


def test_raw_contents_round_trip_little_endian_and_length_prefixed_bytes() -> None:
    floats = np.array([[1.5, -2.0]], dtype=np.float32)
    assert raw_bytes(floats, "FP32") == np.array([1.5, -2.0], dtype="<f4").tobytes()
    assert from_raw_bytes(raw_bytes(floats, "FP32"), "FP32").tolist() == [1.5, -2.0]
    text = np.array([["fuel"], [""], ["café"]], dtype=object)
    packed = raw_bytes(text, "BYTES")
    assert packed[:8] == b"\x04\x00\x00\x00fuel"
    assert from_raw_bytes(packed, "BYTES").tolist() == ["fuel", "", "café"]
    assert from_raw_bytes(raw_bytes(np.array([True, False]), "BOOL"), "BOOL").tolist() == [
        True, False,
    ]  # fmt: skip
    with pytest.raises(ValueError):
        from_raw_bytes(packed[:-1], "BYTES")


def test_headers_and_the_token_go_as_grpc_metadata_without_http_only_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_REMOTE_TOKEN", "t0ken")
    settings = RemoteSettings.build(["X-Api-Key: k3y", "Accept-Encoding: gzip"])
    assert dict(settings.grpc_metadata()) == {
        "authorization": "Bearer t0ken",
        "x-api-key": "k3y",
    }
    assert "k3y" not in repr(settings)


# ---------------------------------------------------------------- a tiny gRPC server


class _TinyGrpc:
    """Model ``m`` (x FP32 [-1, 2] -> p = x0 + x1, version 7) answering typed contents, not
    raw; ``secure`` needs ``authorization: Bearer good-token``; ``failures`` are status codes
    ModelInfer answers first."""

    seen: ClassVar[list[dict[str, str]]] = []
    failures: ClassVar[list[grpc.StatusCode]] = []

    def _check(self, name: str, context: Any) -> None:
        metadata = dict(context.invocation_metadata())
        self.seen.append(metadata)
        if name == "secure" and metadata.get("authorization") != "Bearer good-token":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid token")
        if name not in ("m", "secure"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {name}")

    def metadata(self, body: bytes, context: Any) -> bytes:
        request = pb.ModelMetadataRequest.FromString(body)
        self._check(request.name, context)
        answer = pb.ModelMetadataResponse(name=request.name, versions=["7"], platform="tiny")
        answer.inputs.add(name="x", datatype="FP32", shape=[-1, 2])
        answer.outputs.add(name="p", datatype="FP32", shape=[-1])
        return bytes(answer.SerializeToString())

    def ready(self, body: bytes, context: Any) -> bytes:
        return bytes(pb.ModelReadyResponse(ready=True).SerializeToString())

    def infer(self, body: bytes, context: Any) -> bytes:
        request = pb.ModelInferRequest.FromString(body)
        self._check(request.model_name, context)
        if self.failures:
            context.abort(self.failures.pop(0), "not now")
        x = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(-1, 2)
        answer = pb.ModelInferResponse(model_name=request.model_name, model_version="7")
        out = answer.outputs.add(name="p", datatype="FP32", shape=[len(x)])
        out.contents.fp32_contents.extend(x.sum(1).tolist())
        return bytes(answer.SerializeToString())


def _serve(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    tiny = _TinyGrpc()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(method)
        for name, method in (
            ("ModelMetadata", tiny.metadata),
            ("ModelReady", tiny.ready),
            ("ServerReady", tiny.ready),
            ("ModelInfer", tiny.infer),
        )
    }
    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)]
    )
    address = "127.0.0.1:0"
    port = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    server.start()
    _TinyGrpc.seen.clear()
    _TinyGrpc.failures.clear()
    return server, port


@pytest.fixture
def tiny_grpc() -> Iterator[str]:
    """``grpc://127.0.0.1:PORT`` of a _TinyGrpc server."""
    server, port = _serve()
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_typed_contents_are_read_and_outages_retried_until_the_server_answers(
    tiny_grpc: str,
) -> None:
    settings = RemoteSettings(retries=3, backoff_s=0.01, max_backoff_s=0.02)
    x = np.array([[1, 2], [3, 4]], dtype=np.float32)
    model = open_model(f"{tiny_grpc}/v2/models/m/versions/7", remote=settings)
    try:
        _TinyGrpc.failures[:] = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
        [p] = model.run(["p"], {"x": x})
        assert p.tolist() == [3.0, 7.0] and _TinyGrpc.failures == []
        _TinyGrpc.failures[:] = [grpc.StatusCode.UNAVAILABLE] * 5
        with pytest.raises(RemoteUnavailable) as caught:
            model.run(["p"], {"x": x})
    finally:
        close_model(model)
    assert "after 4 attempt(s)" in caught.value.one_line()
    assert tiny_grpc in caught.value.one_line()


def test_refused_credentials_exit_12_with_a_hint_and_headers_go_as_metadata_unseen(
    tiny_grpc: str,
) -> None:
    model = f"{tiny_grpc}/v2/models/secure/versions/7"
    refused = invoke("models", "inspect", model)
    assert refused.exit_code == 12 and "refused access" in refused.output
    assert "UNAUTHENTICATED" in refused.output and "STREAMSCORE_REMOTE_TOKEN" in refused.output
    allowed = invoke(
        "models", "inspect", model, "--json", "--header", "Authorization: Bearer good-token"
    )
    assert allowed.exit_code == 0, allowed.output
    info = json.loads(allowed.output)
    assert (info["name"], info["version"], info["ready"]) == ("secure", "7", True)
    assert "good-token" not in allowed.output
    missing = invoke("models", "inspect", f"{tiny_grpc}/v2/models/nope")
    assert missing.exit_code == 5 and "nope" in missing.output


def test_grpcs_verifies_tls_and_ca_file_trusts_a_server(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server, port = _serve(credentials)
    try:
        model = f"grpcs://127.0.0.1:{port}/v2/models/m"
        untrusted = invoke("models", "inspect", model)
        assert untrusted.exit_code == 12 and "not trusted" in untrusted.output
        assert "--ca-file" in untrusted.output
        trusted = invoke("models", "inspect", model, "--json", "--ca-file", cert)
        assert trusted.exit_code == 0, trusted.output
        assert json.loads(trusted.output)["version"] == "7"
    finally:
        server.stop(None)


# ---------------------------------------------------------------- a real MLServer


def test_batch_over_grpc_scores_equal_embedded_scores_and_names_the_server(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in", rows=1000)
    local, _ = score(source, tmp_path / "local", SAMPLE / "models" / "fraud_columns")
    remote, _ = score(
        source,
        tmp_path / "grpc",
        model_server.model("fraud_columns", grpc=True),  # FP32 and BYTES inputs
        remote=RemoteSettings(concurrency=3),
        batch_size=128,
    )
    assert remote.rows_scored == local.rows_scored == 1000
    assert (remote.model_version, remote.model_server) == ("1", model_server.grpc_url)
    local_rows = pq.read_table(tmp_path / "local" / "part-0.parquet")
    remote_rows = pq.read_table(tmp_path / "grpc" / "part-0.parquet")
    assert remote_rows.column("transaction_id").equals(local_rows.column("transaction_id"))
    assert remote_rows.column("label").equals(local_rows.column("label"))
    np.testing.assert_allclose(
        remote_rows.column("probabilities_1").to_numpy(),
        local_rows.column("probabilities_1").to_numpy(),
        atol=1e-6,
    )
    meta = streamscore_metadata(tmp_path / "grpc" / "part-0.parquet")
    assert meta["model_server"] == model_server.grpc_url and meta["model_version"] == "1"


def test_rows_the_server_rejects_over_grpc_are_isolated_and_quarantined(
    tmp_path: Path, model_server: ModelServer
) -> None:
    table = pq.read_table(SAMPLE / "transactions" / "date=2026-11-04" / "part-0.parquet")
    table = table.slice(0, 600)
    amounts = table.column("f00").to_numpy().copy()
    amounts[[5, 400]] = -1.0
    table = table.set_column(table.schema.get_field_index("f00"), "f00", pa.array(amounts))
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "part-0.parquet")
    summary, _ = score(
        tmp_path / "in",
        tmp_path / "out",
        model_server.model("fraud_strict", grpc=True),
        features=FEATURES,
        batch_size=300,
    )
    assert (summary.rows_scored, summary.rows_rejected) == (598, 2)
    rejected = pq.read_table(tmp_path / "out" / REJECTED_DIR / "part-0.parquet")
    assert rejected.column("transaction_id").to_pylist() == [
        table.column("transaction_id")[i].as_py() for i in (5, 400)
    ]
    reason = rejected.column(REASON_COLUMN)[0].as_py()
    assert reason.startswith(f"remote_rejected: model server {model_server.grpc_url}")
    assert "must be at least 0" in reason


def test_a_grpc_server_that_is_down_exits_12_writes_nothing_and_a_rerun_scores(
    tmp_path: Path, model_server: ModelServer
) -> None:
    source = sample_input(tmp_path / "in", rows=200)
    url = model_server.model("fraud", grpc=True)
    model_server.stop()
    args = ["batch", source, "--out", tmp_path / "out", "--model", url, "--features",
            ",".join(FEATURES), "--retries", "1", "--timeout", "1",
            "--header", "X-Api-Key: hdr-s3cret"]  # fmt: skip
    down = invoke(*args)
    assert down.exit_code == 12, down.output
    lines = down.output.strip().splitlines()
    assert len(lines) == 1 and "unavailable" in lines[0] and model_server.grpc_url in lines[0]
    assert "nothing was dead-lettered" in lines[0] and "s3cret" not in down.output
    assert not list((tmp_path / "out").rglob("*.parquet"))
    model_server.start()
    rerun = invoke(*args)
    assert rerun.exit_code == 0, rerun.output
    assert pq.read_table(tmp_path / "out" / "part-0.parquet").num_rows == 200


def test_a_grpc_server_lost_mid_run_fails_the_files_unquarantined_and_a_rerun_resumes(
    tmp_path: Path, model_server: ModelServer
) -> None:
    from helpers.runs import batch_options
    from streamscore.batch import BatchRun
    from streamscore.reporting import RecordingReporter

    source = sample_input(tmp_path / "in", rows=300, files=2)
    url = model_server.model("fraud", grpc=True)
    options = batch_options(source, tmp_path / "out", url, features=FEATURES, remote=FAST)
    model = open_model(url, remote=FAST)
    model_server.stop()
    try:
        summary = BatchRun(options, model, RecordingReporter()).execute()
    finally:
        close_model(model)
    assert summary.files_failed == 2 and "nothing was dead-lettered" in summary.failures[0]
    assert not list((tmp_path / "out").rglob("*.parquet"))
    model_server.start()
    rerun, _ = score(source, tmp_path / "out", url, features=FEATURES, remote=FAST)
    assert (rerun.files_ok, rerun.files_failed, rerun.rows_scored) == (2, 0, 600)


def test_models_inspect_over_grpc_shows_the_servers_metadata(model_server: ModelServer) -> None:
    result = invoke("models", "inspect", model_server.model("fraud_columns", grpc=True), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["server"], info["version"]) == (model_server.grpc_url, "1")
    assert info["ready"] is True and info["server_ready"] is True
    assert info["inputs"][-1] == {
        "name": "merchant_category", "type": "tensor(string)", "shape": [None, 1],
    }  # fmt: skip
    unsigned = invoke("models", "inspect", model_server.model("fraud_unsigned", grpc=True))
    assert unsigned.exit_code == 0 and "publishes no signature" in unsigned.output


@pytest.mark.kafka
def test_replay_over_grpc_scores_as_embedded_and_dead_letters_only_rejected_rows(
    kafka_bootstrap: str, unique_topic: Callable[..., str], model_server: ModelServer
) -> None:
    from streamscore.kafka import headers as h
    from test_remote_replay import remote_options, scores_by_source
    from test_replay import MODEL, headers_of, produce_rows, read_topic, sample_rows, source_of

    source = unique_topic(partitions=2, prefix="grpc-in")
    rows = sample_rows(400)
    produce_rows(kafka_bootstrap, source, rows)
    served = run_replay(
        remote_options(
            kafka_bootstrap, source, source + ".grpc", model_server.model("fraud", grpc=True)
        )
    )
    local = run_replay(remote_options(kafka_bootstrap, source, source + ".local", str(MODEL / "2")))
    assert served.records_scored == local.records_scored == 400
    assert (served.model_version, served.model_server) == ("2", model_server.grpc_url)
    by_grpc = scores_by_source(kafka_bootstrap, source + ".grpc")
    embedded = scores_by_source(kafka_bootstrap, source + ".local")
    assert by_grpc.keys() == embedded.keys()
    for key, row in by_grpc.items():
        assert row["label"] == embedded[key]["label"]
        assert np.isclose(row["probabilities_1"], embedded[key]["probabilities_1"], atol=1e-6)
    first = headers_of(read_topic(kafka_bootstrap, source + ".grpc")[0])
    assert first[h.MODEL_SERVER] == model_server.grpc_url

    strict = unique_topic(partitions=1, prefix="grpc-strict")
    for i in (3, 250):
        rows[i]["f00"] = -5.0
    produce_rows(kafka_bootstrap, strict, rows[:300])
    summary = run_replay(
        remote_options(
            kafka_bootstrap, strict, strict + ".out", model_server.model("fraud_strict", grpc=True)
        )
    )
    assert (summary.records_scored, summary.records_dead_lettered) == (298, 2)
    dead = read_topic(kafka_bootstrap, strict + ".out.dlq")
    assert sorted(source_of(m)[1] for m in dead) == [3, 250]
    assert all(headers_of(m)[h.ERROR_TYPE] == "remote_rejected" for m in dead)
    assert all("must be at least 0" in headers_of(m)[h.ERROR_MESSAGE] for m in dead)


def test_hot_reload_watches_the_version_a_grpc_server_answers(model_server: ModelServer) -> None:
    from streamscore.config import RegistryOptions
    from streamscore.model.watch import reload_source
    from streamscore.remote.watch import ServerFeed

    feed = reload_source(model_server.model("fraud", grpc=True), RegistryOptions(), FAST)
    assert isinstance(feed, ServerFeed) and feed.name == "fraud"
    candidate = feed.candidate()
    assert candidate is not None and candidate.version == "2"
    assert candidate.resolve().server == model_server.grpc_url
