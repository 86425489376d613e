"""Shared pytest fixtures. Each area keeps its fixtures in its own commented section."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent

# --- Kafka: a real single-node broker from scripts/kafka-local --------------------------------
#
# kafka_bootstrap  "host:port" of a broker: $STREAMSCORE_TEST_BOOTSTRAP if set, else a fresh
#                  broker started for this session in .kafka-local/test-<pid>/ and stopped after.
# kafka_admin      an AdminClient on that broker.
# unique_topic     factory: unique_topic(partitions=1) -> name of a new, ready topic.

KAFKA_LOCAL = REPO / "scripts" / "kafka-local"
KAFKA_START_TIMEOUT_S = 600  # the first run downloads the broker jars with Maven


def _kafka_local(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_LOCAL_HOME": str(home), "PYTHON": sys.executable}
    return subprocess.run(
        [str(KAFKA_LOCAL), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=KAFKA_START_TIMEOUT_S,
        check=False,
    )


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_brokers_of_dead_sessions() -> None:
    """A test run killed hard leaves its broker running; stop it and drop its state."""
    for home in (REPO / ".kafka-local").glob("test-*"):
        pid = home.name.removeprefix("test-")
        if pid.isdigit() and _is_alive(int(pid)):
            continue
        _kafka_local("stop", home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real Kafka broker that lives for the whole test session."""
    external = os.environ.get("STREAMSCORE_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    _stop_brokers_of_dead_sessions()
    home = REPO / ".kafka-local" / f"test-{os.getpid()}"
    started = _kafka_local("start", home)
    if started.returncode != 0:
        _kafka_local("stop", home)
        pytest.fail(
            "scripts/kafka-local could not start a Kafka broker for the tests "
            "(needs Java 17+ and, for the first run, Maven; or set STREAMSCORE_TEST_BOOTSTRAP):\n"
            + started.stderr[-4000:],
            pytrace=False,
        )
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        _kafka_local("stop", home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """An AdminClient connected to the test broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def unique_topic(kafka_admin: AdminClient) -> Iterator[Callable[..., str]]:
    """A factory that creates a uniquely named topic and returns once clients can use it."""
    created: list[str] = []

    def create(partitions: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        futures = kafka_admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)
        futures[name].result(timeout=15)
        created.append(name)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            topic = kafka_admin.list_topics(name, timeout=5).topics.get(name)
            leaders = [] if topic is None else [p.leader for p in topic.partitions.values()]
            if len(leaders) == partitions and all(leader >= 0 for leader in leaders):
                return name
            time.sleep(0.05)
        raise TimeoutError(f"topic {name} has no leader for all {partitions} partitions after 15s")

    yield create
    if created:
        for future in kafka_admin.delete_topics(created, operation_timeout=10).values():
            future.exception(timeout=15)  # best effort: a leftover topic harms no other test


# --- end of Kafka section ----------------------------------------------------------------------


# --- Models and data for batch/scoring tests (tests/helpers/) ---------------------------------
#
# Small scikit-learn models exported with skl2onnx once per session into a temporary folder.
# Each fixture is a helpers.models.TrainedModel (path, estimator, features, predict_proba).
#
# dense_model      LogisticRegression, input [N, 4] fed from metadata feature_names f0..f3
# hgb_model        HistGradientBoosting, same input (takes NaN natively)
# unnamed_model    LogisticRegression, input [N, 4] without feature_names metadata
# zipmap_model     LogisticRegression exported WITH skl2onnx's default ZipMap output
# column_model     DataFrame pipeline: amount, score float; count int64; category string


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def dense_model(model_dir: Path) -> Any:
    from helpers.models import build_dense_model

    return build_dense_model(model_dir / "dense.onnx")


@pytest.fixture(scope="session")
def hgb_model(model_dir: Path) -> Any:
    from helpers.models import build_dense_model

    return build_dense_model(model_dir / "hgb.onnx", kind="hgb")


@pytest.fixture(scope="session")
def unnamed_model(model_dir: Path) -> Any:
    from helpers.models import build_dense_model

    return build_dense_model(model_dir / "unnamed.onnx", with_feature_names=False)


@pytest.fixture(scope="session")
def zipmap_model(model_dir: Path) -> Any:
    from helpers.models import build_dense_model

    return build_dense_model(model_dir / "zipmap.onnx", zipmap=True)


@pytest.fixture(scope="session")
def column_model(model_dir: Path) -> Any:
    from helpers.models import build_column_model

    return build_column_model(model_dir / "columns.onnx")


# --- end of models and data section -------------------------------------------------------------


# --- MLflow registry (tests/helpers/mlflow_store.py) ------------------------------------------
#
# mlflow_registry  one real SQLite MLflow store for the session (mlflow is slow to import and
#                  to log to, so tests share it and never move its aliases):
#                  fraud 1 (@champion) and 2 (@challenger), from sample_data/models/fraud;
#                  fraud_sklearn 1, a scikit-learn-flavor model; a run with a plain .onnx file.


@pytest.fixture(scope="session")
def mlflow_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from helpers.mlflow_store import SAMPLE_MODELS, MlflowStore, RegistryFixture

    root = tmp_path_factory.mktemp("mlflow")
    store = MlflowStore.create(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri())
    v1, run_1 = store.register_onnx("fraud", SAMPLE_MODELS / "fraud" / "1" / "model.onnx")
    v2, _ = store.register_onnx("fraud", SAMPLE_MODELS / "fraud" / "2" / "model.onnx")
    store.set_alias("fraud", "champion", v1)
    store.set_alias("fraud", "challenger", v2)
    store.register_sklearn("fraud_sklearn")
    file_run = store.log_onnx_file(SAMPLE_MODELS / "fraud" / "2" / "model.onnx")
    return RegistryFixture(store, root / "mlflow.db", run_1, file_run)


# --- end of MLflow registry section -------------------------------------------------------------


# --- Ray: a real local cluster for `batch --ray` -------------------------------------------------
#
# ray_cluster  a helpers.ray_cluster.RayCluster: a Ray head node (2 CPUs, 1 GPU in name only) on
#              127.0.0.1 started
#              once per session with `ray start` in its own temp dir; .address for --ray,
#              .workers() lists its BatchWorker processes. Only this cluster's processes are
#              stopped after (never `ray stop`, which stops every Ray cluster on the machine).

# Ray binds a cluster of one machine to 127.0.0.1 only with this; set before ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# No token auth on these loopback clusters: otherwise `ray start` turns it on as soon as a
# ~/.ray/auth_token exists (left by any earlier `ray.init()`), and drivers given an explicit
# address do not send the token unless told to.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
RAY_START_TIMEOUT_S = 120


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ray_cluster() -> Iterator[Any]:
    """A real single-node Ray cluster on 127.0.0.1 for one test: one that kills Ray processes
    cannot leave the next with a broken cluster."""
    from helpers.ray_cluster import RayCluster, processes_of, stop_processes

    for stale in Path("/tmp").glob("ssray-*-*"):  # clusters of test runs killed hard
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not _is_alive(int(pid)):
            stop_processes(processes_of(str(stale)))
            shutil.rmtree(stale, ignore_errors=True)
    # Ray's socket paths must stay short: a temp dir under /tmp, not pytest's deep one.
    temp_dir = Path(tempfile.mkdtemp(prefix=f"ssray-{os.getpid()}-", dir="/tmp"))
    port = _free_port()
    ports = {
        "--ray-client-server-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(),
        "--dashboard-agent-grpc-port": _free_port(),
        "--metrics-export-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
    }
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--num-gpus=1",  # declared only: Ray places GPU workers, ONNX Runtime finds no CUDA
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *(f"{option}={value}" for option, value in ports.items()),
    ]
    started = subprocess.run(
        command, capture_output=True, text=True, timeout=RAY_START_TIMEOUT_S, check=False
    )
    cluster = RayCluster(f"127.0.0.1:{port}", temp_dir)
    try:
        if started.returncode != 0:
            pytest.fail(f"ray start failed:\n{started.stderr[-4000:]}", pytrace=False)
        yield cluster
    finally:
        stop_processes(cluster.processes())
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- end of Ray section -------------------------------------------------------------------------


# --- Model server: a real MLServer serving the sample models (tests/support/model_server.py) ---
#
# model_server   a ModelServer for the whole session in .model-server/test-<pid>/ (REST and
#                gRPC on free 127.0.0.1 ports, no metrics port); .url is its REST base URL,
#                .grpc_url its gRPC one (model(..., grpc=True) names a model there). A test
#                may stop() it and start() it again (same ports); the next test finds it
#                running again.


class ModelServer:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.url = ""
        self.grpc_url = ""

    def start(self) -> str:
        from support import model_server

        self.url = model_server.start(self.home)
        self.grpc_url = model_server.grpc_url(self.home)
        return self.url

    def stop(self, *, hard: bool = False) -> None:
        from support import model_server

        model_server.stop(self.home, hard=hard)

    def model(self, name: str, version: str | None = None, *, grpc: bool = False) -> str:
        base = self.grpc_url if grpc else self.url
        return f"{base}/v2/models/{name}" + (f"/versions/{version}" if version else "")


@pytest.fixture(scope="session")
def _model_server_session() -> Iterator[ModelServer]:
    from support import model_server

    for home in (REPO / ".model-server").glob("test-*"):  # left by a session killed hard
        pid = home.name.removeprefix("test-")
        if pid.isdigit() and not _is_alive(int(pid)):
            model_server.stop(home, hard=True)
            shutil.rmtree(home, ignore_errors=True)
    server = ModelServer(REPO / ".model-server" / f"test-{os.getpid()}")
    try:
        server.start()
    except RuntimeError as exc:
        server.stop(hard=True)
        pytest.fail(f"could not start MLServer for the tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop(hard=True)
        shutil.rmtree(server.home, ignore_errors=True)


@pytest.fixture
def model_server(_model_server_session: ModelServer) -> ModelServer:
    """The session's MLServer, running (started again if a previous test stopped it)."""
    _model_server_session.start()
    return _model_server_session


# --- end of model server section ---------------------------------------------------------------
