"""Models: resolving MODEL in a repository, and ``streamscore models inspect`` / ``list``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest

from helpers.models import TrainedModel, build_dense_model, build_repository
from helpers.runs import invoke
from streamscore.errors import ModelError
from streamscore.model import list_models, resolve_model
from streamscore.model.onnx_header import read_onnx_header

SAMPLE_MODELS = Path(__file__).resolve().parent.parent / "sample_data" / "models"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fraud`` versions 2 and 10 (10 is highest numerically, not as text) and ``other/1``."""
    root = tmp_path_factory.mktemp("repo")
    build_repository(root, "fraud", [2, 10])
    build_repository(root, "other", [1])
    (root / "fraud" / "11").mkdir()  # a version folder without a model file is not a version
    (root / "fraud" / "latest").mkdir()
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- resolving MODEL


def test_repo_name_resolves_to_the_highest_numeric_version(repo: Path) -> None:
    ref = resolve_model(repo / "fraud")

    assert (ref.name, ref.version) == ("fraud", "10")
    assert ref.path == repo / "fraud" / "10" / "model.onnx"
    assert ref.sha256 == sha256(ref.path)
    assert ref.size == ref.path.stat().st_size


def test_repo_name_version_resolves_to_that_version(repo: Path) -> None:
    ref = resolve_model(repo / "fraud" / "2")

    assert (ref.name, ref.version, ref.label) == ("fraud", "2", "fraud:2")
    assert ref.sha256 == sha256(repo / "fraud" / "2" / "model.onnx")


def test_a_plain_onnx_file_is_named_after_its_stem(dense_model: TrainedModel) -> None:
    ref = resolve_model(dense_model.path)

    assert (ref.name, ref.version, ref.label) == ("dense", "", "dense")


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("missing", "model not found"),
        ("fraud/99", "model not found"),
        ("fraud/11", "no model in"),
    ],
)
def test_bad_model_paths_are_model_errors(repo: Path, relative: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_model(repo / relative)


def test_list_models_sorts_names_then_numeric_versions(repo: Path) -> None:
    refs = list_models(repo)

    assert [(r.name, r.version) for r in refs] == [("fraud", "2"), ("fraud", "10"), ("other", "1")]
    assert all(r.sha256 == sha256(r.path) for r in refs)


def test_onnx_header_matches_the_onnx_package(dense_model: TrainedModel) -> None:
    proto = onnx.load(str(dense_model.path))

    header = read_onnx_header(dense_model.path.read_bytes())

    assert header.producer == f"{proto.producer_name} {proto.producer_version}"
    assert header.opsets == {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    assert header.metadata == {p.key: p.value for p in proto.metadata_props}


# ---------------------------------------------------------------- models inspect / list


def test_inspect_json_describes_the_model(repo: Path) -> None:
    result = invoke("models", "inspect", repo / "fraud", "--json")

    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    path = repo / "fraud" / "10" / "model.onnx"
    assert (info["name"], info["version"], info["path"]) == ("fraud", "10", str(path))
    assert info["sha256"] == sha256(path)
    assert info["size_bytes"] == path.stat().st_size
    assert info["producer"].startswith("skl2onnx")
    proto = onnx.load(str(path))
    assert info["opsets"] == {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    assert info["opsets"]["ai.onnx"] == 17
    assert info["inputs"] == [{"name": "input", "type": "tensor(float)", "shape": [None, 4]}]
    assert [(o["name"], o["type"]) for o in info["outputs"]] == [
        ("label", "tensor(int64)"),
        ("probabilities", "tensor(float)"),
    ]
    assert info["metadata"] == {"feature_names": "f0,f1,f2,f3", "model_version": "10"}


def test_inspect_shows_a_table_with_the_same_facts(repo: Path) -> None:
    result = invoke("models", "inspect", repo / "fraud" / "2")

    assert result.exit_code == 0, result.output
    path = repo / "fraud" / "2" / "model.onnx"
    for fact in (
        "fraud:2",
        "input",
        "tensor(float)",
        "probabilities",
        sha256(path),
        f"{path.stat().st_size:,} bytes",
        "ai.onnx=17",
        "skl2onnx",
        "feature_names = f0,f1,f2,f3",
    ):
        assert fact in result.stdout, fact


def test_inspect_a_per_column_sample_model_lists_every_input() -> None:
    result = invoke("models", "inspect", SAMPLE_MODELS / "fraud_columns", "--json")

    assert result.exit_code == 0, result.output
    inputs = {i["name"]: i["type"] for i in json.loads(result.stdout)["inputs"]}
    assert inputs["merchant_category"] == "tensor(string)"
    assert inputs["f00"] == "tensor(float)" and len(inputs) == 11


def test_list_shows_every_version_with_its_hash(repo: Path) -> None:
    table = invoke("models", "list", repo)
    lines = invoke("models", "list", repo, "--json")

    assert table.exit_code == 0 and lines.exit_code == 0
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [(r["name"], r["version"]) for r in rows] == [
        ("fraud", "2"),
        ("fraud", "10"),
        ("other", "1"),
    ]
    for row in rows:
        assert row["sha256"] == sha256(repo / row["name"] / row["version"] / "model.onnx")
        assert row["sha256"][:16] in table.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("models", "inspect", "{repo}/missing"),
        ("models", "inspect", "{repo}/fraud/99"),
        ("models", "inspect", "{repo}/fraud/11"),
        ("models", "inspect", "{garbage}"),
        ("models", "list", "{repo}/missing"),
    ],
    ids=["no-such-path", "no-such-version", "empty-version", "not-onnx", "no-such-repo"],
)
def test_bad_models_exit_5_with_one_line(repo: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 definitely not a model")

    result = invoke(*[a.format(repo=repo, garbage=garbage) for a in args])

    assert result.exit_code == 5
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_a_model_with_the_same_name_in_two_places_is_told_apart_by_sha(tmp_path: Path) -> None:
    one = build_dense_model(tmp_path / "a" / "m.onnx", seed=1)
    two = build_dense_model(tmp_path / "b" / "m.onnx", seed=2)

    assert resolve_model(one.path).sha256 != resolve_model(two.path).sha256
