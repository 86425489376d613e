"""Real MLflow stores for tests: a SQLite file or a real ``mlflow server`` on 127.0.0.1.

Models are logged the way users log them (``mlflow.onnx.log_model`` with
``registered_model_name``), from the sample ONNX files. mlflow is imported lazily: it is slow
to import, and only the registry tests need it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
SAMPLE_MODELS = REPO / "sample_data" / "models"
SERVER_START_S = 120  # a loaded 2-core machine can take half a minute


@dataclass(frozen=True)
class MlflowStore:
    """An MLflow tracking store/registry at ``uri`` with one experiment for test runs."""

    uri: str
    experiment_id: str

    @classmethod
    def create(cls, uri: str, artifact_location: str | None = None) -> MlflowStore:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment("streamscore-tests", artifact_location)
        return cls(uri, experiment)

    @contextlib.contextmanager
    def _start_run(self) -> Iterator[Any]:
        """An MLflow run in this store, MLflow's own warnings silenced (pytest makes every
        warning an error; these are about MLflow's internals, not about streamscore)."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mlflow.start_run(experiment_id=self.experiment_id) as run:
                yield run

    def register_onnx(self, name: str, onnx_file: Path) -> tuple[str, str]:
        """Log ``onnx_file`` with the ONNX flavor as a new version of ``name``:
        ``(version, run_id)``."""
        import mlflow.onnx
        import onnx

        with self._start_run() as run:
            info = mlflow.onnx.log_model(
                onnx.load(str(onnx_file)),
                name="model",
                registered_model_name=name,
                pip_requirements=["onnx"],  # no environment inference: fast
            )
        return str(info.registered_model_version), str(run.info.run_id)

    def register_sklearn(self, name: str) -> str:
        """A scikit-learn-flavor version of ``name`` (not ONNX): its version."""
        import mlflow.sklearn
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        estimator = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
        with self._start_run():
            info = mlflow.sklearn.log_model(
                estimator,
                name="model",
                registered_model_name=name,
                pip_requirements=["scikit-learn"],  # no environment inference: fast
            )
        return str(info.registered_model_version)

    def log_onnx_file(self, onnx_file: Path) -> str:
        """A run with ``onnx_file`` as a plain artifact (no MLflow model): its run id."""
        import mlflow

        with self._start_run() as run:
            mlflow.log_artifact(str(onnx_file))
        return str(run.info.run_id)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        client.delete_registered_model_alias(name, alias)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MlflowServer:
    """A real ``mlflow server`` process on 127.0.0.1 with a SQLite backend under ``root``."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow-server.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'server.db'}",
                "--artifacts-destination",
                str(root / "server-artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],  # fmt: skip
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its uvicorn workers are stopped with it
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server not ready in {SERVER_START_S}s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):  # workers left in its session
            os.killpg(self.process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class RegistryFixture:
    """The session's SQLite store (see the ``mlflow_registry`` fixture in conftest)."""

    store: MlflowStore
    db: Path
    fraud_1_run: str  # the run that logged fraud version 1
    onnx_file_run: str  # a run holding fraud 2's model.onnx as a plain artifact

    @property
    def uri(self) -> str:
        return self.store.uri
