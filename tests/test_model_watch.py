"""Hot reload: a watched repository model switches to a new highest version that loads and fits
the input, and rejects one that does not while the old version keeps serving."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from streamscore.model.repository import ModelRef, resolve_model
from streamscore.model.session import load_model
from streamscore.model.watch import ModelWatcher, repository_model_dir
from streamscore.scoring import Scorer

SAMPLE_MODELS = Path(__file__).resolve().parent.parent / "sample_data" / "models"
FRAUD_FIELDS = {f"f{i:02d}": pa.float64() for i in range(30)}


def prepare(ref: ModelRef) -> Scorer:
    """What tail does with a new version: load it and plan it against the input fields."""
    model = load_model(ref, provider="cpu")
    return Scorer.for_schema(model, pa.schema(FRAUD_FIELDS))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository holding fraud version 1 only."""
    shutil.copytree(SAMPLE_MODELS / "fraud" / "1", tmp_path / "fraud" / "1")
    return tmp_path / "fraud"


def watcher_for(name_dir: Path, events: list[dict[str, Any]], **kw: Any) -> ModelWatcher[Scorer]:
    ref = resolve_model(name_dir)

    def record(payload: Mapping[str, Any]) -> None:
        events.append(dict(payload))

    return ModelWatcher(name_dir, prepare(ref), ref, prepare, on_event=record, settle_s=0, **kw)


def test_only_a_repository_name_is_watched(repo: Path) -> None:
    assert repository_model_dir(repo) == repo
    assert repository_model_dir(repo / "1") is None
    assert repository_model_dir(repo / "1" / "model.onnx") is None
    assert repository_model_dir(repo.parent / "missing") is None


def test_a_new_highest_version_is_loaded_and_served(repo: Path) -> None:
    events: list[dict[str, Any]] = []
    watcher = watcher_for(repo, events)
    assert watcher.current_ref.version == "1"
    assert watcher.check_now() is False  # nothing new

    shutil.copytree(SAMPLE_MODELS / "fraud" / "2", repo / "2")

    assert watcher.check_now() is True
    assert watcher.current_ref.version == "2"
    assert watcher.current.model.ref.version == "2"
    assert [e["event"] for e in events] == ["model_loaded"]
    assert events[0]["previous_version"] == "1"


def test_a_version_that_fails_to_load_is_rejected_once_and_the_old_one_keeps_serving(
    repo: Path,
) -> None:
    events: list[dict[str, Any]] = []
    watcher = watcher_for(repo, events)
    (repo / "2").mkdir()
    (repo / "2" / "model.onnx").write_bytes(b"not an onnx model")

    assert watcher.check_now() is False
    assert watcher.check_now() is False  # same file: not retried, not logged again
    assert watcher.current_ref.version == "1"
    assert [e["event"] for e in events] == ["model_rejected"]
    assert events[0]["version"] == "2" and events[0]["serving"] == "1"
    assert "cannot load model" in events[0]["reason"]

    # Fixing the file in place makes it a new candidate.
    shutil.copyfile(SAMPLE_MODELS / "fraud" / "2" / "model.onnx", repo / "2" / "model.onnx")
    assert watcher.check_now() is True
    assert watcher.current_ref.version == "2"


def test_a_version_that_does_not_fit_the_input_is_rejected(repo: Path) -> None:
    events: list[dict[str, Any]] = []
    watcher = watcher_for(repo, events)
    # fraud_columns reads merchant_category, which the input does not have.
    shutil.copytree(SAMPLE_MODELS / "fraud_columns" / "1", repo / "2")

    assert watcher.check_now() is False
    assert watcher.current_ref.version == "1"
    assert events[0]["event"] == "model_rejected"
    assert "merchant_category" in events[0]["reason"]


def test_a_file_still_being_written_waits_until_it_settles(repo: Path) -> None:
    events: list[dict[str, Any]] = []
    ref = resolve_model(repo)
    watcher = ModelWatcher(repo, prepare(ref), ref, prepare, on_event=events.append, settle_s=60)
    (repo / "2").mkdir()
    (repo / "2" / "model.onnx").write_bytes(b"half a mod")  # modified just now

    assert watcher.check_now() is False
    assert events == []  # neither loaded nor rejected: looked at again later

    old = time.time() - 120
    shutil.copyfile(SAMPLE_MODELS / "fraud" / "2" / "model.onnx", repo / "2" / "model.onnx")
    os.utime(repo / "2" / "model.onnx", (old, old))
    assert watcher.check_now() is True


def test_the_background_poll_switches_without_being_asked(repo: Path) -> None:
    events: list[dict[str, Any]] = []
    with watcher_for(repo, events, interval_s=0.05) as watcher:
        shutil.copytree(SAMPLE_MODELS / "fraud" / "2", repo / "2")
        deadline = time.monotonic() + 20
        while watcher.current_ref.version != "2" and time.monotonic() < deadline:
            time.sleep(0.02)
    assert watcher.current_ref.version == "2"


def test_a_model_url_without_a_version_is_watched_on_its_server_and_an_outage_is_no_news() -> None:
    import socket

    from streamscore.config import RegistryOptions
    from streamscore.model.watch import reload_source
    from streamscore.remote.breaker import BreakerState, breaker_for
    from streamscore.remote.settings import RemoteSettings
    from streamscore.remote.watch import ServerFeed

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = RemoteSettings(retries=5, timeout_s=30)
    assert reload_source(f"{server}/v2/models/fraud/versions/1", RegistryOptions()) is None
    feed = reload_source(f"{server}/v2/models/fraud", RegistryOptions(), settings)
    assert isinstance(feed, ServerFeed) and feed.name == "fraud"
    began = time.monotonic()
    assert feed.candidate() is None  # the serving version keeps serving
    assert time.monotonic() - began < 5  # no retries with backoff on the watcher's thread
    assert breaker_for(server).state is BreakerState.closed  # scoring's breaker untouched
