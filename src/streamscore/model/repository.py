"""Find models: a plain ``.onnx`` file or a TF Serving-style repository ``REPO/NAME/VERSION/``.

Layout of a repository::

    REPO/NAME/VERSION/model.onnx      VERSION is a folder named with ASCII digits only

``REPO/NAME`` means the highest version; ``REPO/NAME/VERSION`` one given version.

MODEL may also be a URI of another model source; :func:`resolve_model` hands those to their
module (``models:/`` and ``runs:/``: :mod:`streamscore.model.mlflow_registry`), which returns
the same :class:`ModelRef` for a local file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from streamscore.config import RegistryOptions
from streamscore.errors import ModelError

MODEL_FILENAME = "model.onnx"
MLFLOW_SCHEMES = ("models:/", "runs:/")
_VERSION = re.compile(r"[0-9]+", re.ASCII)


def is_version(name: str) -> bool:
    """Whether a folder name is a model version: ASCII digits only (``str.isdigit`` also
    takes ``²`` and other scripts' digits)."""
    return _VERSION.fullmatch(name) is not None


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: who it is (name, version) and what it is (sha256).

    A model file has its ``path``; a model on a server (:mod:`streamscore.remote`) has its
    ``server`` base URL instead, and ``sha256`` digests the server, name, version and signature.
    """

    name: str
    version: str
    path: Path
    sha256: str
    size: int
    server: str = ""

    @property
    def full_label(self) -> str:
        """``name:version``, and ``@ server`` for a model on a server; for summaries."""
        return f"{self.label} @ {self.server}" if self.server else self.label

    @property
    def location(self) -> str:
        """Where the model lives: its file, or its URL on a server."""
        if not self.server:
            return str(self.path)
        version = f"/versions/{self.version}" if self.version else ""
        return f"{self.server}/v2/models/{self.name}{version}"

    # Lineage of a model from a registry (empty for files and folders): the registry URI
    # (credentials removed), the alias MODEL named (e.g. "champion") and the training run.
    registry: str = ""
    alias: str = ""
    run_id: str = ""

    @property
    def label(self) -> str:
        """``name:version`` (or just the name when unversioned), for logs and headers."""
        return f"{self.name}:{self.version}" if self.version else self.name

    @property
    def lineage(self) -> dict[str, str]:
        """``registry``, ``alias`` and ``run_id``, those that are set."""
        found = {"registry": self.registry, "alias": self.alias, "run_id": self.run_id}
        return {key: value for key, value in found.items() if value}


def _ref_for_file(path: Path, name: str, version: str) -> ModelRef:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}") from exc
    return ModelRef(name, version, path, hashlib.sha256(data).hexdigest(), len(data))


def numeric_versions(name_dir: Path) -> list[str]:
    """Version folder names under ``REPO/NAME`` that hold a model file, in numeric order.

    Names are kept as written (``09`` stays ``09``), so they always name a real folder.
    """
    if not name_dir.is_dir():
        return []
    return sorted(
        (
            child.name
            for child in name_dir.iterdir()
            if is_version(child.name) and (child / MODEL_FILENAME).is_file()
        ),
        key=lambda name: (int(name), name),
    )


def resolve_model(spec: str | Path, registry: RegistryOptions | None = None) -> ModelRef:
    """Resolve MODEL as given on the command line to one model file.

    ``registry`` says where ``models:/``/``runs:/`` URIs are looked up (default: MLflow's).
    """
    # Model sources other than the file system, by URI scheme; each module is imported only
    # when its scheme is used, so no heavy client loads for plain files.
    text = str(spec)
    if text.startswith(MLFLOW_SCHEMES):
        from streamscore.model.mlflow_registry import resolve_mlflow_model

        return resolve_mlflow_model(text, registry or RegistryOptions())
    try:
        return _resolve(Path(spec))
    except OSError as exc:  # e.g. a path component over 255 characters
        raise ModelError(
            f"model not usable: {exc.strerror or exc}: {str(spec)[:120]}",
            hint="give an .onnx file, REPO/NAME or REPO/NAME/VERSION",
        ) from exc


def _resolve(path: Path) -> ModelRef:
    if path.is_file():
        if path.name == MODEL_FILENAME and is_version(path.parent.name):
            return _ref_for_file(path, path.parent.parent.name, path.parent.name)
        return _ref_for_file(path, path.stem, "")
    if not path.exists():
        raise ModelError(
            f"model not found: {path}",
            hint="give an .onnx file, REPO/NAME or REPO/NAME/VERSION",
        )
    if (path / MODEL_FILENAME).is_file():
        version = path.name if is_version(path.name) else ""
        name = path.parent.name if version else path.name
        return _ref_for_file(path / MODEL_FILENAME, name, version)
    versions = numeric_versions(path)
    if not versions:
        raise ModelError(
            f"no model in {path}",
            hint=f"expected {path}/VERSION/{MODEL_FILENAME} with a numeric VERSION",
        )
    latest = path / versions[-1]
    return _ref_for_file(latest / MODEL_FILENAME, path.name, latest.name)


def list_models(repo: str | Path) -> list[ModelRef]:
    """Every version of every model in a repository, sorted by name then version."""
    root = Path(repo)
    if not root.is_dir():
        raise ModelError(f"model repository not found: {root}")
    refs: list[ModelRef] = []
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for version in numeric_versions(name_dir):
            path = name_dir / version / MODEL_FILENAME
            refs.append(_ref_for_file(path, name_dir.name, version))
    if not refs:
        raise ModelError(
            f"no models in {root}",
            hint="expected REPO/NAME/VERSION/model.onnx with numeric VERSION",
        )
    return refs
