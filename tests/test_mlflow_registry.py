"""MLflow Model Registry as a model source, against real MLflow stores.

The session's SQLite store (``mlflow_registry`` in conftest) holds fraud 1 (@champion) and
2 (@challenger) logged with ``mlflow.onnx``, a scikit-learn-flavor model and a run with a
plain ``.onnx`` artifact; one test runs a real ``mlflow server`` for the REST path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import Result

from helpers.data import read_output, streamscore_metadata
from helpers.mlflow_store import (
    SAMPLE_MODELS,
    MlflowServer,
    MlflowStore,
    RegistryFixture,
    free_port,
)
from helpers.runs import invoke
from streamscore.config import RegistryOptions, ReplayOptions, ScoringOptions
from streamscore.errors import UsageError
from streamscore.kafka.headers import HeaderStamp, header_dict
from streamscore.kafka.settings import KafkaSettings
from streamscore.model import ModelRef, resolve_model
from streamscore.model.mlflow_registry import MlflowURI, display_uri
from streamscore.model.watch import ModelWatcher, reload_source
from streamscore.replay import run_replay
from streamscore.routing import resolve_version

REPO = Path(__file__).resolve().parent.parent
FRAUD_1 = SAMPLE_MODELS / "fraud" / "1" / "model.onnx"
FRAUD_2 = SAMPLE_MODELS / "fraud" / "2" / "model.onnx"
SAMPLE_DAY = REPO / "sample_data" / "transactions" / "date=2026-11-04" / "part-0.parquet"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 5, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


# --- URIs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "name", "selector"),
    [
        ("models:/fraud/3", "version", "fraud", "3"),
        ("models:/fraud@champion", "alias", "fraud", "champion"),
        ("models:/fraud/latest", "latest", "fraud", "latest"),
        ("runs:/0a1b/model", "run", "model", "0a1b"),
        ("runs:/0a1b/models/fraud.onnx", "run", "models/fraud.onnx", "0a1b"),
    ],
)
def test_model_uris_are_read(text: str, kind: str, name: str, selector: str) -> None:
    parsed = MlflowURI.parse(text)
    assert (parsed.kind, parsed.name, parsed.selector) == (kind, name, selector)


@pytest.mark.parametrize(
    "text", ["models:/fraud", "models:/fraud/Production", "models:/@champion", "runs:/0a1b"]
)
def test_malformed_model_uris_say_which_forms_work(text: str) -> None:
    with pytest.raises(UsageError) as raised:
        MlflowURI.parse(text)
    assert "models:/NAME@ALIAS" in raised.value.one_line()


# --- resolving and the cache -----------------------------------------------------------------


def test_versions_aliases_latest_and_runs_resolve_to_the_logged_onnx_file(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    options = RegistryOptions(mlflow_registry.uri, tmp_path / "cache")
    expected = {
        "models:/fraud/1": (FRAUD_1, "1", ""),
        "models:/fraud@champion": (FRAUD_1, "1", "champion"),
        "models:/fraud@challenger": (FRAUD_2, "2", "challenger"),
        "models:/fraud/latest": (FRAUD_2, "2", ""),
    }
    for uri, (onnx_file, version, alias) in expected.items():
        ref = resolve_model(uri, options)
        assert (ref.name, ref.version, ref.alias) == ("fraud", version, alias), uri
        assert ref.sha256 == sha256(onnx_file) and ref.size == onnx_file.stat().st_size
        assert ref.registry == mlflow_registry.uri and ref.run_id
        assert ref.path.is_relative_to(tmp_path / "cache")
    assert resolve_model("models:/fraud/1", options).run_id == mlflow_registry.fraud_1_run

    run = resolve_model(f"runs:/{mlflow_registry.fraud_1_run}/model", options)
    assert run.sha256 == sha256(FRAUD_1) and run.run_id == mlflow_registry.fraud_1_run
    plain = resolve_model(f"runs:/{mlflow_registry.onnx_file_run}/model.onnx", options)
    assert (plain.name, plain.sha256) == ("model", sha256(FRAUD_2))


def test_the_registry_comes_from_mlflow_tracking_uri_by_default(
    mlflow_registry: RegistryFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_registry.uri)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ref = resolve_model("models:/fraud@champion")
    assert ref.registry == mlflow_registry.uri and ref.sha256 == sha256(FRAUD_1)
    assert ref.path.is_relative_to(tmp_path / "xdg" / "streamscore")


def test_a_model_is_downloaded_once_and_a_damaged_cache_entry_is_fetched_again(
    mlflow_registry: RegistryFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.artifacts

    downloads: list[str] = []
    real = mlflow.artifacts.download_artifacts

    def counted(**kwargs: Any) -> Any:
        downloads.append(kwargs["artifact_uri"])
        return real(**kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counted)
    options = RegistryOptions(mlflow_registry.uri, tmp_path)
    first = resolve_model("models:/fraud@champion", options)
    assert downloads
    downloads.clear()
    for uri in ("models:/fraud@champion", "models:/fraud/1"):  # same version: same entry
        assert resolve_model(uri, options).path == first.path
    assert downloads == []

    first.path.write_bytes(b"damaged on disk")
    repaired = resolve_model("models:/fraud/1", options)
    assert repaired.sha256 == sha256(FRAUD_1) and downloads


@pytest.mark.parametrize("lost", ["model.onnx", "streamscore-entry.json"])
def test_a_cache_entry_that_lost_a_file_is_fetched_again(
    mlflow_registry: RegistryFixture, tmp_path: Path, lost: str
) -> None:
    options = RegistryOptions(mlflow_registry.uri, tmp_path)
    entry = resolve_model("models:/fraud/2", options).path
    while entry.parent.name != "2":  # .../models/fraud/2/FINGERPRINT/...
        entry = entry.parent
    next(entry.rglob(lost)).unlink()  # e.g. a cache cleaner that deletes old files

    assert resolve_model("models:/fraud/2", options).sha256 == sha256(FRAUD_2)
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # nothing set aside left


def test_a_download_killed_midway_leaves_nothing_behind_on_the_next_fetch(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    options = RegistryOptions(mlflow_registry.uri, tmp_path)
    entry = resolve_model("models:/fraud/2", options).path
    while entry.parent.name != "2":  # .../models/fraud/2/FINGERPRINT/...
        entry = entry.parent
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    abandoned = entry.parent / f".tmp-{socket.gethostname()}-{dead}-0badc0de"
    (abandoned / "model").mkdir(parents=True)
    other_host = entry.parent / ".tmp-elsewhere-1-0badc0de"
    other_host.mkdir()
    shutil.rmtree(entry)

    assert resolve_model("models:/fraud/2", options).sha256 == sha256(FRAUD_2)
    assert not abandoned.exists() and other_host.exists()


def test_a_cache_that_cannot_be_written_is_a_one_line_error(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache should be")
    result = invoke(
        "models", "inspect", "models:/fraud/1", "--registry-uri", mlflow_registry.uri,
        "--model-cache", not_a_folder,
    )  # fmt: skip
    assert_one_line_error(result, "model cache", "--model-cache")


def test_a_full_cache_disk_names_the_reason(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {mounted.stderr.strip()}")
    try:  # the model (110 KB) does not fit
        result = invoke("models", "inspect", "models:/fraud/1",
                        "--registry-uri", mlflow_registry.uri, "--model-cache", disk)  # fmt: skip
        assert_one_line_error(result, "No space left on device")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


CONCURRENT = """
import json, sys, time
from pathlib import Path
import mlflow.artifacts  # slow: imported before the start signal
from streamscore.config import RegistryOptions, ReplayOptions, ScoringOptions
from streamscore.model import ModelRef, resolve_model
go = Path(sys.argv[3])
Path(sys.argv[4]).touch()
while not go.exists():
    time.sleep(0.005)
ref = resolve_model("models:/fraud/2", RegistryOptions(sys.argv[1], Path(sys.argv[2])))
print(json.dumps({"path": str(ref.path), "sha256": ref.sha256}))
"""


def test_processes_downloading_the_same_model_at_once_share_one_complete_entry(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    cache, go = tmp_path / "cache", tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, mlflow_registry.uri, cache, go, tmp_path / f"r{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"r{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline, "the resolving processes did not start"
        time.sleep(0.01)
    go.touch()
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        answers.append(json.loads(out.strip().splitlines()[-1]))

    assert all(a == answers[0] for a in answers)
    assert answers[0]["sha256"] == sha256(FRAUD_2)
    entry = Path(answers[0]["path"])
    while entry.parent.name != "2":  # .../models/fraud/2/FINGERPRINT/...
        entry = entry.parent
    assert list(entry.parent.iterdir()) == [entry]  # one entry, no temporary folder left


def test_a_canary_or_shadow_version_number_is_a_version_of_the_registered_model(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    options = RegistryOptions(mlflow_registry.uri, tmp_path)
    ref = resolve_version("models:/fraud@champion", "2", options)
    assert (ref.name, ref.version, ref.sha256) == ("fraud", "2", sha256(FRAUD_2))
    other = resolve_version("models:/fraud/2", "models:/fraud@champion", options)
    assert (other.version, other.alias) == ("1", "champion")


def test_bench_measures_a_registry_model(mlflow_registry: RegistryFixture, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = invoke(
        "bench", "models:/fraud@champion", "--registry-uri", mlflow_registry.uri,
        "--model-cache", tmp_path / "cache", "--batch-sizes", "8", "--warmup", "0.02",
        "--window", "0.05", "--max-duration", "0.15", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = json.loads(out.read_text())["model"]
    assert (model["name"], model["version"], model["sha256"]) == ("fraud", "1", sha256(FRAUD_1))
    assert model["lineage"]["alias"] == "champion"
    assert model["lineage"]["registry"] == mlflow_registry.uri
    assert model["lineage"]["run_id"] == mlflow_registry.fraud_1_run


def test_credentials_in_a_registry_uri_never_reach_lineage() -> None:
    shown = display_uri("https://alice:s3cret@mlflow.example.com:5000/prefix?x=1")
    assert shown == "https://mlflow.example.com:5000/prefix?x=1"
    assert display_uri("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"


def test_credentials_in_a_registry_uri_never_reach_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    inspect = ["models", "inspect", "models:/fraud/1", "--model-cache", str(tmp_path)]
    for args in (inspect, ["models", "list", "models:/"]):
        result = invoke(*args, "--registry-uri", uri)
        assert_one_line_error(result, "127.0.0.1")
        assert "s3cret" not in result.output and "alice" not in result.output


def test_a_registry_uri_mlflow_cannot_open_is_a_one_line_error(tmp_path: Path) -> None:
    uri = (tmp_path / "mlruns").as_uri()  # MLflow 3 refuses its old file store
    result = invoke("models", "list", "models:/", "--registry-uri", uri)
    assert_one_line_error(result, uri)


def test_only_an_alias_or_latest_is_followed_and_a_vanished_alias_is_a_warning(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    options = RegistryOptions(mlflow_registry.uri, tmp_path)
    assert reload_source("models:/fraud/1", options) is None  # a pinned version
    assert reload_source(f"runs:/{mlflow_registry.fraud_1_run}/model", options) is None
    assert reload_source("models:/fraud/latest", options) is not None

    store, name = mlflow_registry.store, f"watch-{uuid.uuid4().hex[:8]}"  # its own alias
    version, _ = store.register_onnx(name, FRAUD_1)
    store.set_alias(name, "champion", version)
    spec = f"models:/{name}@champion"
    feed = reload_source(spec, options)
    assert feed is not None
    events: list[Mapping[str, Any]] = []

    def prepare(ref: ModelRef) -> str:
        raise AssertionError(f"nothing new should load, got {ref}")

    watcher = ModelWatcher(
        feed, "v1 serving", resolve_model(spec, options), prepare, interval_s=0.05,
        on_event=events.append,
    )  # fmt: skip
    assert watcher.check_now() is False  # the alias still points to the serving version
    with watcher:
        store.delete_alias(name, "champion")
        deadline = time.monotonic() + 30
        while not any(e["event"] == "warning" for e in events):
            assert time.monotonic() < deadline, events
            time.sleep(0.05)
    assert watcher.current == "v1 serving"
    assert "champion" in next(e for e in events if e["event"] == "warning")["message"]
    assert not any(e["event"] == "model_rejected" for e in events)


def test_following_latest_loads_each_newly_registered_version(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    store, name = mlflow_registry.store, f"latest-{uuid.uuid4().hex[:8]}"
    store.register_onnx(name, FRAUD_1)
    options = RegistryOptions(mlflow_registry.uri, tmp_path)
    spec = f"models:/{name}/latest"
    feed = reload_source(spec, options)
    assert feed is not None
    first = resolve_model(spec, options)
    watcher = ModelWatcher(feed, first.sha256, first, lambda ref: ref.sha256)
    assert watcher.check_now() is False

    newer, _ = store.register_onnx(name, FRAUD_2)
    assert watcher.check_now() is True
    assert watcher.current_ref.version == newer and watcher.current == sha256(FRAUD_2)


# --- errors ----------------------------------------------------------------------------------


def test_a_model_of_another_flavor_is_a_one_line_error_naming_it(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    result = invoke(
        "models", "inspect", "models:/fraud_sklearn/1",
        "--registry-uri", mlflow_registry.uri, "--model-cache", tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, "flavor sklearn", "mlflow.onnx.log_model")


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("models:/fraud/9", "fraud, version=9"),
        ("models:/fraud@nope", "alias nope"),
        ("models:/unknown/latest", "unknown"),
        ("runs:/0123456789abcdef/model", "0123456789abcdef"),
    ],
)
def test_what_the_registry_does_not_have_exits_5_with_one_line(
    mlflow_registry: RegistryFixture, tmp_path: Path, model: str, fragment: str
) -> None:
    result = invoke(
        "models", "inspect", model, "--registry-uri", mlflow_registry.uri,
        "--model-cache", tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, fragment)


def test_a_missing_sqlite_store_is_an_error_not_a_new_empty_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mistyped.db'}"
    result = invoke("models", "inspect", "models:/fraud/1", "--registry-uri", uri)
    assert_one_line_error(result, "mistyped.db")
    assert not (tmp_path / "mistyped.db").exists()


def test_a_registry_server_that_cannot_be_reached_is_a_one_line_error(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [sys.executable, "-m", "streamscore", "models", "inspect", "models:/fraud/1",
         "--registry-uri", uri, "--model-cache", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith(f"error: cannot resolve models:/fraud/1 in {uri}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_without_the_mlflow_extra_a_registry_uri_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails
    result = invoke("models", "inspect", "models:/fraud/1", "--model-cache", tmp_path)
    assert_one_line_error(result, "pip install 'streamscore[mlflow]'")


def test_models_from_files_and_folders_never_import_mlflow() -> None:
    code = (
        "import sys; from streamscore.model import resolve_model; "
        "from streamscore.model.watch import reload_source; "
        "from streamscore.config import RegistryOptions; "
        f"resolve_model({str(SAMPLE_MODELS / 'fraud')!r}); "
        f"reload_source({str(SAMPLE_MODELS / 'fraud')!r}, RegistryOptions()); "
        "print('mlflow' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr


# --- lineage ---------------------------------------------------------------------------------


def test_batch_records_registry_lineage_in_parquet_metadata_and_the_summary(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    data = tmp_path / "in" / "part-0.parquet"
    data.parent.mkdir()
    pl.read_parquet(SAMPLE_DAY).head(50).write_parquet(data)

    result = invoke(
        "batch", data.parent, "--out", tmp_path / "out", "--model", "models:/fraud@champion",
        "--registry-uri", mlflow_registry.uri, "--model-cache", tmp_path / "cache",
        "--provider", "cpu",
    )  # fmt: skip
    folder = invoke(
        "batch", data.parent, "--out", tmp_path / "folder", "--model", FRAUD_1,
        "--provider", "cpu",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert folder.exit_code == 0, folder.output
    lineage = {
        "registry": mlflow_registry.uri,
        "alias": "champion",
        "run_id": mlflow_registry.fraud_1_run,
    }
    metadata = streamscore_metadata(tmp_path / "out" / "part-0.parquet")
    assert metadata["model_name"] == "fraud" and metadata["model_version"] == "1"
    assert {key: metadata["model_" + key] for key in lineage} == lineage
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model_lineage"] == lineage
    written = json.loads((tmp_path / "out" / "_streamscore_run.json").read_text())
    assert written["model_lineage"] == lineage
    assert read_output(tmp_path / "out" / "part-0.parquet").equals(
        read_output(tmp_path / "folder" / "part-0.parquet")
    )
    assert "model_registry" not in streamscore_metadata(tmp_path / "folder" / "part-0.parquet")


def test_compare_scores_two_registry_versions(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    data = tmp_path / "in" / "part-0.parquet"
    data.parent.mkdir()
    pl.read_parquet(SAMPLE_DAY).head(50).write_parquet(data)
    report = tmp_path / "compare.json"
    result = invoke(
        "compare", data.parent, "-m", "models:/fraud@champion", "-m", "models:/fraud@challenger",
        "--registry-uri", mlflow_registry.uri, "--model-cache", tmp_path / "cache",
        "--json", report, "--provider", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = json.loads(report.read_text())
    assert (found["a"]["version"], found["b"]["version"]) == ("1", "2")
    assert (found["a"]["sha256"], found["b"]["sha256"]) == (sha256(FRAUD_1), sha256(FRAUD_2))


def test_kafka_headers_carry_the_registry_lineage(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    options = RegistryOptions(mlflow_registry.uri, tmp_path)
    ref = resolve_model("models:/fraud@champion", options)
    headers = header_dict(HeaderStamp(ref, "in").output(0, 7))
    assert headers["streamscore.model"] == "fraud"
    assert headers["streamscore.model.version"] == "1"
    assert headers["streamscore.model.registry"] == mlflow_registry.uri
    assert headers["streamscore.model.alias"] == "champion"
    assert headers["streamscore.model.run_id"] == mlflow_registry.fraud_1_run
    plain = header_dict(HeaderStamp(resolve_model(FRAUD_1), "in").output(0, 7))
    assert not any(name.startswith("streamscore.model.r") for name in plain)


def test_models_list_shows_names_versions_and_aliases_of_a_registry(
    mlflow_registry: RegistryFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = invoke("models", "list", mlflow_registry.uri, "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    rows = [r for r in rows if r["name"].startswith("fraud")]  # other tests add their own
    assert [(r["name"], r["version"], r["aliases"]) for r in rows] == [
        ("fraud", "1", ["champion"]),
        ("fraud", "2", ["challenger"]),
        ("fraud_sklearn", "1", []),
    ]
    assert rows[0]["run_id"] == mlflow_registry.fraud_1_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_registry.uri)
    one = invoke("models", "list", "models:/fraud_sklearn", "--json")
    assert one.exit_code == 0, one.output
    assert [json.loads(line)["name"] for line in one.stdout.splitlines()] == ["fraud_sklearn"]


def test_models_inspect_names_the_registry_alias_and_run(
    mlflow_registry: RegistryFixture, tmp_path: Path
) -> None:
    result = invoke(
        "models", "inspect", "models:/fraud@challenger", "--json",
        "--registry-uri", mlflow_registry.uri, "--model-cache", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["name"], info["version"], info["alias"]) == ("fraud", "2", "challenger")
    assert info["registry"] == mlflow_registry.uri and info["sha256"] == sha256(FRAUD_2)


# --- a real MLflow server (REST) -------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_registry_behind_an_mlflow_server_is_used_over_rest(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    store = MlflowStore.create(mlflow_server.uri)  # artifacts go through the server's proxy
    version, run_id = store.register_onnx("fraud_rest", FRAUD_2)
    store.set_alias("fraud_rest", "champion", version)

    ref = resolve_model("models:/fraud_rest@champion", RegistryOptions(mlflow_server.uri, tmp_path))
    assert (ref.name, ref.version, ref.alias, ref.run_id) == (
        "fraud_rest",
        version,
        "champion",
        run_id,
    )
    assert ref.registry == mlflow_server.uri and ref.sha256 == sha256(FRAUD_2)

    listed = invoke("models", "list", mlflow_server.uri, "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["name"], r["version"], r["aliases"]) for r in rows] == [
        ("fraud_rest", version, ["champion"])
    ]


@pytest.mark.kafka
def test_replay_stamps_the_registry_lineage_on_outputs_and_in_its_summary(
    mlflow_registry: RegistryFixture,
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    source = unique_topic(partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for line in pl.read_parquet(SAMPLE_DAY).head(20).write_ndjson().encode().splitlines():
        producer.produce(source, line)
    assert producer.flush(30) == 0

    summary = run_replay(
        ReplayOptions(
            kafka=KafkaSettings(kafka_bootstrap),
            input_topic=source,
            output_topic=f"{source}.out",
            scoring=ScoringOptions(
                model="models:/fraud@challenger",
                provider="cpu",
                registry=RegistryOptions(mlflow_registry.uri, tmp_path),
            ),
        )
    )

    assert summary.records_scored == 20 and summary.model_version == "2"
    assert summary.model_lineage["alias"] == "challenger"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{source}-reader"})
    consumer.assign([TopicPartition(f"{source}.out", 0, 0)])
    outputs = consumer.consume(20, 30)
    consumer.close()
    assert len(outputs) == 20
    for message in outputs:
        headers = header_dict(message.headers())
        assert headers["streamscore.model.version"] == "2"
        assert headers["streamscore.model.alias"] == "challenger"
        assert headers["streamscore.model.registry"] == mlflow_registry.uri
        assert headers["streamscore.model.run_id"] == summary.model_lineage["run_id"]
