"""MLflow as a model source: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
``models:/NAME/latest`` and ``runs:/RUN_ID/PATH`` resolve to a local ONNX file.

The registry is :attr:`RegistryOptions.uri` or MLflow's default (``$MLFLOW_TRACKING_URI``,
else ``sqlite:///mlflow.db``): a SQLite file needs no server, ``http(s)://`` talks to an
``mlflow server``. Only models logged with MLflow's ONNX flavor (``mlflow.onnx.log_model``)
are accepted, or a plain ``.onnx`` file artifact of a run.

Artifacts are downloaded once into a cache::

    CACHE/mlflow/REGISTRY/models/NAME/VERSION/FINGERPRINT/   a registered model version
    CACHE/mlflow/REGISTRY/runs/RUN_ID/PATH-DIGEST/            a run's artifact

REGISTRY is a digest of the registry URI; FINGERPRINT a digest of what the registry says the
version is (its source, run and creation time), so a model deleted and registered again
under the same number is fetched afresh. Each entry records its ONNX file's sha256, checked
on every use (a damaged entry is fetched again). A download goes to a temporary folder
beside the entry and is renamed into place, so two processes fetching at once both end
with one complete entry.

``mlflow`` is imported only here and only when such a URI is used: it is the optional
``streamscore[mlflow]`` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from streamscore.config import RegistryOptions
from streamscore.errors import ModelError, StreamscoreError, UsageError
from streamscore.model.repository import ModelRef
from streamscore.model.repository import _ref_for_file as ref_for_file  # one hashing rule
from streamscore.model.watch import Candidate

EXTRA_HINT = "install it with: pip install 'streamscore[mlflow]'"
URI_FORMS = "models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest or runs:/RUN_ID/PATH"
ENTRY_FILE = "streamscore-entry.json"
TEMP_PREFIX = ".tmp-"  # + host-pid-random: a download in progress beside its entry
ONNX_FLAVOR = "onnx"
# MLflow settings unless the environment sets them: no download progress bars on stderr, and
# HTTP retries that give up after seconds, not minutes (MLflow's defaults are made for
# rate-limited services; a command that cannot reach its registry should say so quickly).
MLFLOW_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@dataclass(frozen=True)
class MlflowURI:
    """A parsed ``models:/`` or ``runs:/`` URI."""

    kind: Literal["version", "alias", "latest", "run"]
    name: str  # registered model name; for a run, the artifact path
    selector: str  # the version, the alias, "latest", or the run id
    text: str

    @classmethod
    def parse(cls, text: str) -> MlflowURI:
        bad = UsageError(f"cannot read model URI {text!r}", hint=f"give {URI_FORMS}")
        if text.startswith("runs:/"):
            run_id, _, path = text.removeprefix("runs:/").partition("/")
            if not run_id or not path.strip("/"):
                raise bad
            return cls("run", path.strip("/"), run_id, text)
        rest = text.removeprefix("models:/").rstrip("/")
        if "@" in rest:
            name, _, alias = rest.rpartition("@")
            if not name or not alias or "/" in alias:
                raise bad
            return cls("alias", name, alias, text)
        name, _, version = rest.rpartition("/")
        if not name:
            raise bad
        if version.isdigit():
            return cls("version", name, version, text)
        if version == "latest":
            return cls("latest", name, version, text)
        raise bad


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, as ``models list`` shows it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    status: str
    run_id: str


def _mlflow() -> Any:
    """The mlflow module, or a one-line ModelError naming the extra."""
    try:
        import mlflow
        import mlflow.artifacts
    except ImportError as exc:
        raise ModelError(
            f"MLflow model URIs need the mlflow package ({exc.msg})", hint=EXTRA_HINT
        ) from None
    return mlflow


def display_uri(uri: str) -> str:
    """The registry URI without credentials (``user:password@``), for lineage and messages."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _without_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it removed (MLflow's errors quote
    the URL they called, credentials included)."""
    return _URL_CREDENTIALS.sub(r"\1", text)


_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@")


def _path_part(text: str) -> str:
    """``text`` as one safe folder name: no separators, never ``.`` or ``..``."""
    quoted = quote(text, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


def _digest(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """MLflow's exceptions become a one-line ModelError about ``what``."""
    try:
        yield
    except StreamscoreError:
        raise
    except Exception as exc:
        raise ModelError(_without_credentials(f"{what}: {_first_reason(exc)}")) from exc


def _first_reason(exc: Exception) -> str:
    """The first line of an MLflow error, with the first failure it lists when that line
    only announces a list ("The following failures occurred …:" then "##### File …")."""
    text = str(getattr(exc, "message", None) or exc).strip()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        return type(exc).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]


class Registry:
    """An MLflow tracking server or store, as streamscore uses it; created per MODEL URI."""

    def __init__(self, options: RegistryOptions) -> None:
        mlflow = _mlflow()
        self.options = options
        self.uri: str = options.uri or mlflow.get_registry_uri()
        self.tracking_uri: str = options.uri or mlflow.get_tracking_uri()
        self.shown = display_uri(self.uri)
        if self.uri.startswith("sqlite:///"):
            # MLflow would quietly create an empty store at a mistyped path.
            db = Path(self.uri.removeprefix("sqlite:///").split("?")[0])
            if not db.is_file():
                raise ModelError(
                    f"MLflow registry {self.uri} not found ({db} does not exist)",
                    hint="set --registry-uri or MLFLOW_TRACKING_URI to an existing store",
                )
        for key, value in MLFLOW_DEFAULTS.items():  # read by MLflow at each call
            os.environ.setdefault(key, value)
        with _translated(f"cannot open the MLflow registry {self.shown}"):
            self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.uri)
        self.cache = options.cache_root() / "mlflow" / _digest(self.uri, 12)

    # --- looking up -----------------------------------------------------------------------

    def model_version(self, target: MlflowURI) -> Any:
        """The registry's ModelVersion that ``target`` (not a run) names."""
        with _translated(f"cannot resolve {target.text} in {self.shown}"):
            if target.kind == "version":
                found = self.client.get_model_version(target.name, target.selector)
            elif target.kind == "alias":
                found = self.client.get_model_version_by_alias(target.name, target.selector)
            else:
                ready = [
                    v
                    for v in self.client.search_model_versions(
                        "name='{}'".format(target.name.replace("'", "\\'"))
                    )
                    if str(v.status) == "READY"
                ]
                if not ready:
                    raise ModelError(
                        f"cannot resolve {target.text} in {self.shown}: "
                        f"no ready version of model '{target.name}'"
                    )
                found = max(ready, key=lambda v: int(v.version))
        if str(found.status) != "READY":
            raise ModelError(
                f"{target.text}: version {found.version} of '{target.name}' is not ready "
                f"({found.status})"
            )
        return found

    def ref_for_version(self, version: Any, alias: str = "") -> ModelRef:
        """The local ONNX file of a registered model version, downloaded if not cached."""
        name, number = str(version.name), str(version.version)
        with _translated(f"cannot find the files of {name} version {number} in {self.shown}"):
            source = self.client.get_model_version_download_uri(name, number)
        fingerprint = _digest(f"{version.source}|{version.run_id}|{version.creation_timestamp}")
        entry = self.cache / "models" / _path_part(name) / number / fingerprint
        ref = self._cached(entry, str(source), f"models:/{name}/{number}")
        return ModelRef(
            name,
            number,
            ref.path,
            ref.sha256,
            ref.size,
            registry=self.shown,
            alias=alias,
            run_id=str(version.run_id or ""),
        )

    def ref_for_run(self, target: MlflowURI) -> ModelRef:
        """The local ONNX file of a run's artifact (an ONNX-flavor model or an .onnx file)."""
        with _translated(f"cannot resolve {target.text} in {display_uri(self.tracking_uri)}"):
            self.client.get_run(target.selector)
        entry = self.cache / "runs" / _path_part(target.selector) / _digest(target.name, 12)
        ref = self._cached(entry, f"runs:/{target.selector}/{target.name}", target.text)
        name = Path(target.name).name.removesuffix(".onnx")
        return ModelRef(
            name,
            "",
            ref.path,
            ref.sha256,
            ref.size,
            registry=display_uri(self.tracking_uri),
            run_id=target.selector,
        )

    def versions(self, name: str | None) -> list[RegisteredVersion]:
        """Every version of every registered model (or of ``name``), by name then version."""
        query = "" if name is None else "name='{}'".format(name.replace("'", "\\'"))
        with _translated(f"cannot list models in {self.shown}"):
            found = list(self.client.search_model_versions(query))
            aliases: dict[tuple[str, str], list[str]] = {}
            for model_name in sorted({str(v.name) for v in found}):
                registered = self.client.get_registered_model(model_name)
                for alias, number in (registered.aliases or {}).items():
                    aliases.setdefault((model_name, str(number)), []).append(str(alias))
        rows = [
            RegisteredVersion(
                str(v.name),
                str(v.version),
                tuple(sorted(aliases.get((str(v.name), str(v.version)), []))),
                str(v.status),
                str(v.run_id or ""),
            )
            for v in found
        ]
        if not rows:
            what = f"model '{name}'" if name else "registered models"
            raise ModelError(f"no {what} in {self.shown}")
        return sorted(rows, key=lambda r: (r.name, int(r.version)))

    # --- the cache --------------------------------------------------------------------------

    def _cached(self, entry: Path, source: str, label: str) -> ModelRef:
        """The entry's ONNX file, checked against its recorded sha256; a missing or damaged
        entry is downloaded (again)."""
        for _ in range(2):
            path = self._fetch(entry, source, label)
            ref = ref_for_file(path, path.stem, "")
            if ref.sha256 == _entry_record(entry).get("sha256"):
                return ref
            shutil.rmtree(entry, ignore_errors=True)  # changed after download: fetch again
        raise ModelError(f"{label}: the downloaded file does not match its recorded sha256")

    def _fetch(self, entry: Path, source: str, label: str) -> Path:
        """The cache entry's ONNX file, downloading ``source`` into it first if needed."""
        path = _entry_model(entry)
        if path is not None:
            return path
        temp = (
            entry.parent
            / f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            _remove_abandoned_downloads(entry.parent)
            temp.mkdir()
            relative = self._download(source, temp, label)
            data = (temp / relative).read_bytes()
            record = {"onnx": relative, "sha256": hashlib.sha256(data).hexdigest()}
            (temp / ENTRY_FILE).write_text(json.dumps({**record, "source": label}) + "\n")
            try:
                temp.rename(entry)
            except OSError:  # another process put the entry in place first: use theirs
                if _entry_model(entry) is None:  # unless it is damaged (file or record lost)
                    _set_aside(entry)
                    with contextlib.suppress(OSError):  # lost to another process: theirs
                        temp.rename(entry)
        except OSError as exc:
            raise ModelError(
                f"cannot store {label} in the model cache {entry.parent}: {exc.strerror or exc}",
                hint="give --model-cache a writable folder",
            ) from exc
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        path = _entry_model(entry)
        if path is None:
            raise ModelError(f"model cache entry {entry} is incomplete; delete it and rerun")
        return path

    def _download(self, source: str, into: Path, label: str) -> str:
        """Download an ONNX model from ``source`` into ``into``; its path relative to it."""
        import mlflow.artifacts

        def download(uri: str, dst: Path) -> Path:
            with _translated(f"cannot download {label} from {display_uri(self.tracking_uri)}"):
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(dst), tracking_uri=self.tracking_uri
                )
            return Path(local)

        if source.endswith(".onnx"):  # a plain ONNX file logged as a run artifact
            return str(download(source, into / "model").relative_to(into))
        try:
            mlmodel = download(source.rstrip("/") + "/MLmodel", into / "meta")
        except ModelError as exc:
            raise ModelError(
                f"{label} is not an MLflow model (no MLmodel file): {exc.message}",
                hint="give the path of a model logged with mlflow.onnx.log_model, or of an "
                ".onnx file",
            ) from exc
        data = _onnx_data_file(mlmodel, label)
        model_dir = download(source, into / "model")  # the whole folder: external ONNX data too
        shutil.rmtree(into / "meta", ignore_errors=True)
        onnx_file = model_dir / data
        if not onnx_file.is_file():
            raise ModelError(f"{label}: its MLmodel names {data}, which is not in the model")
        return str(onnx_file.relative_to(into))


def _onnx_data_file(mlmodel: Path, label: str) -> str:
    """The ONNX file an MLmodel file's onnx flavor names, or ModelError naming the flavor."""
    import yaml  # a dependency of mlflow

    try:
        described = yaml.safe_load(mlmodel.read_text()) or {}
        flavors = dict(described.get("flavors") or {})
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
        raise ModelError(f"{label}: cannot read its MLmodel file: {exc}") from exc
    if ONNX_FLAVOR not in flavors:
        found = sorted(f for f in flavors if f != "python_function") or sorted(flavors)
        raise ModelError(
            f"{label} is an MLflow model of flavor {', '.join(found) or 'none'}, not onnx",
            hint="streamscore runs models logged with mlflow.onnx.log_model (flavor onnx)",
        )
    return str((flavors[ONNX_FLAVOR] or {}).get("data") or "model.onnx")


def _entry_model(entry: Path) -> Path | None:
    """The ONNX file of a complete cache entry, or None."""
    relative = _entry_record(entry).get("onnx")
    path = entry / str(relative) if relative else None
    return path if path is not None and path.is_file() else None


def _remove_abandoned_downloads(folder: Path) -> None:
    """Remove temporary download folders of processes on this host that no longer run (a
    download killed midway); other hosts' folders are left alone."""
    mine = f"{TEMP_PREFIX}{socket.gethostname()}-"
    for child in folder.iterdir():
        pid = child.name.removeprefix(mine).split("-")[0]
        if not child.name.startswith(mine) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(child, ignore_errors=True)
        except OSError:  # alive, another user's
            continue


def _set_aside(entry: Path) -> None:
    """Remove a damaged cache entry: renamed first (atomic, so no process sees it half
    removed), then deleted; a folder left by a crash here is cleaned like a killed download."""
    aside = entry.parent / (
        f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )
    try:
        entry.rename(aside)
    except FileNotFoundError:  # another process set it aside first
        return
    shutil.rmtree(aside, ignore_errors=True)


def _entry_record(entry: Path) -> dict[str, Any]:
    try:
        record = json.loads((entry / ENTRY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def resolve_mlflow_model(spec: str, options: RegistryOptions) -> ModelRef:
    """Resolve a ``models:/`` or ``runs:/`` URI to a local, cached ONNX file."""
    target = MlflowURI.parse(spec)
    registry = Registry(options)
    if target.kind == "run":
        return registry.ref_for_run(target)
    version = registry.model_version(target)
    return registry.ref_for_version(version, target.selector if target.kind == "alias" else "")


def is_registry_listing(spec: str) -> bool:
    """True when ``models list`` was given a registry (``models:/``, ``models:/NAME`` or a
    registry URI such as ``sqlite:///mlflow.db``), not a folder."""
    return spec.startswith("models:/") or "://" in spec


def list_registered_versions(spec: str, options: RegistryOptions) -> list[RegisteredVersion]:
    """The versions ``models list SPEC`` shows: ``models:/`` (all), ``models:/NAME`` or a
    registry URI (all models in it, overriding ``options.uri``)."""
    name: str | None = None
    if spec.startswith("models:/"):
        name = spec.removeprefix("models:/").strip("/") or None
    else:
        options = RegistryOptions(uri=spec, cache_dir=options.cache_dir)
    return Registry(options).versions(name)


class RegistryFeed:
    """What ``tail`` watches for a ``models:/NAME@ALIAS`` or ``models:/NAME/latest`` MODEL:
    the version the alias points to (or the highest ready version) right now."""

    def __init__(self, target: MlflowURI, options: RegistryOptions) -> None:
        self.target = target
        self.options = options
        self._registry: Registry | None = None

    @property
    def name(self) -> str:
        return self.target.name

    def candidate(self) -> Candidate | None:
        if self._registry is None:
            self._registry = Registry(self.options)
        registry = self._registry
        version = registry.model_version(self.target)
        alias = self.target.selector if self.target.kind == "alias" else ""
        number = str(version.version)
        return Candidate(number, number, lambda: registry.ref_for_version(version, alias))

    def stamp_of(self, ref: ModelRef) -> Hashable | None:
        return ref.version


def registry_feed(spec: str, options: RegistryOptions) -> RegistryFeed | None:
    """A feed to follow when MODEL names a moving target (an alias or ``latest``), else None."""
    target = MlflowURI.parse(spec)
    return RegistryFeed(target, options) if target.kind in ("alias", "latest") else None
