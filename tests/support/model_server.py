"""Start and stop a real MLServer that serves the sample ONNX models (tests and the demo).

Every port (REST, gRPC) binds 127.0.0.1 and is chosen free at the first start; the metrics
server is off. State lives in HOME: ``settings.json``, one folder per model, ``server.pid``,
``server.log``; :func:`url` is the REST base URL and :func:`grpc_url` the gRPC one. A
restart reuses HOME's ports, so a URL stays valid across ``stop`` and ``start``.

Models served (all from ``sample_data/models``): ``fraud`` versions 1 and 2, ``fraud_columns``,
``fraud_mlp``, and three variants of fraud v1 for failure tests: ``fraud_unsigned`` (publishes
no signature), ``fraud_strict`` (answers 400 for rows whose ``f00`` is negative) and
``fraud_short`` (answers one row fewer than asked).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SAMPLE_MODELS = REPO / "sample_data" / "models"
SUPPORT = Path(__file__).resolve().parent
START_TIMEOUT_S = 120.0

# name, version, source model, extra runtime options
MODELS: list[tuple[str, str, str, dict[str, object]]] = [
    ("fraud", "1", "fraud/1", {}),
    ("fraud", "2", "fraud/2", {}),
    ("fraud_columns", "1", "fraud_columns/1", {}),
    ("fraud_mlp", "1", "fraud_mlp/1", {}),
    ("fraud_unsigned", "1", "fraud/1", {"publish_signature": False}),
    ("fraud_strict", "1", "fraud/1", {"reject_below": {"input": "input", "column": 0, "value": 0}}),
    ("fraud_short", "1", "fraud/1", {"drop_rows": 1}),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_model_settings(
    home: Path, name: str, version: str, onnx: Path, extra: dict[str, object]
) -> Path:
    folder = home / "models" / f"{name}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    model = {
        "name": name,
        "implementation": "onnx_runtime.OnnxRuntime",
        "parameters": {"uri": str(onnx), "version": version, "extra": extra},
    }
    (folder / "model-settings.json").write_text(json.dumps(model, indent=2))
    return folder


def _write_settings(home: Path) -> None:
    settings = home / "settings.json"
    if settings.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    for name, version, source, extra in MODELS:
        _write_model_settings(home, name, version, SAMPLE_MODELS / source / "model.onnx", extra)
    server = {
        "host": "127.0.0.1",
        "http_port": _free_port(),
        "grpc_port": _free_port(),
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "debug": False,
    }
    settings.write_text(json.dumps(server, indent=2))


def url(home: Path) -> str:
    """The REST base URL, e.g. ``http://127.0.0.1:40123``."""
    port = json.loads((home / "settings.json").read_text())["http_port"]
    return f"http://127.0.0.1:{port}"


def grpc_url(home: Path) -> str:
    """The gRPC base URL, e.g. ``grpc://127.0.0.1:40124``."""
    port = json.loads((home / "settings.json").read_text())["grpc_port"]
    return f"grpc://127.0.0.1:{port}"


def _pid(home: Path) -> int | None:
    try:
        pid = int((home / "server.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/v2/health/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start(home: Path) -> str:
    """Start the server (or find it running) and wait until every model is ready."""
    _write_settings(home)
    base = url(home)
    if _pid(home) is not None and _ready(base):
        return base
    mlserver = Path(sys.executable).with_name("mlserver")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }
    with open(home / "server.log", "ab") as log:
        process = subprocess.Popen(
            [str(mlserver), "start", str(home)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    (home / "server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (home / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"MLServer exited with code {process.returncode}:\n{tail}")
        if _ready(base):
            return base
        time.sleep(0.2)
    stop(home)
    raise RuntimeError(
        f"MLServer did not become ready in {START_TIMEOUT_S:.0f} s (see {home}/server.log)"
    )


def add_version(
    home: Path, name: str, version: str, onnx: Path, extra: dict[str, object] | None = None
) -> Path:
    """Put version ``version`` of model ``name`` (the file ``onnx``) in the running server's
    repository and load it through MLServer's repository API (``POST
    /v2/repository/models/NAME/load`` loads every version of NAME found in the repository);
    the folder written is returned, for :func:`remove_model`."""
    folder = _write_model_settings(home, name, version, onnx, extra or {})
    _post(url(home) + f"/v2/repository/models/{name}/load")
    return folder


def remove_model(home: Path, name: str) -> None:
    """Unload every version of ``name`` and delete their folders (undoes :func:`add_version`)."""
    for folder in (home / "models").glob(f"{name}-*"):
        (folder / "model-settings.json").unlink(missing_ok=True)
        folder.rmdir()
    if _pid(home) is not None:
        with contextlib.suppress(OSError):  # not loaded
            _post(url(home) + f"/v2/repository/models/{name}/unload")


def _post(address: str) -> None:
    request = urllib.request.Request(address, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def stop(home: Path, *, hard: bool = False) -> None:
    """Stop the server: SIGTERM (SIGKILL with ``hard``), then wait until it is gone."""
    pid = _pid(home)
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL if hard else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll the pid instead
            waited = 0 if _pid(home) is not None else pid
        if waited == pid:
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    (home / "server.pid").unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/model-server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["start", "stop", "url", "grpc-url", "status"])
    parser.add_argument(
        "--home", default=os.environ.get("MODEL_SERVER_HOME", str(REPO / ".model-server"))
    )
    args = parser.parse_args()
    home = Path(args.home)
    if args.command == "start":
        print(start(home))
    elif args.command == "stop":
        stop(home)
    elif args.command == "url":
        print(url(home))
    elif args.command == "grpc-url":
        print(grpc_url(home))
    else:
        running = _pid(home) is not None and _ready(url(home))
        print("running" if running else "stopped")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
