"""``streamscore models``: look inside model files, repositories and MLflow registries."""

from __future__ import annotations

from typing import Annotated

import typer

from streamscore import console
from streamscore.cli import options as opt
from streamscore.cli.common import Group, translate_errors
from streamscore.cli.option_groups import REGISTRY_DEFAULTS, grouped, registry_options
from streamscore.config import RegistryOptions
from streamscore.model import list_models, resolve_model
from streamscore.remote import is_model_url
from streamscore.remote.settings import RemoteSettings

app = typer.Typer(cls=Group, help="Inspect models and model repositories.", no_args_is_help=True)


@app.command(
    "inspect",
    epilog="Example: streamscore models inspect sample_data/models/fraud",
)
@translate_errors
@grouped(registry=registry_options)
def inspect(
    model: Annotated[str, typer.Argument(help=opt.MODEL_HELP)],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
    registry: RegistryOptions = REGISTRY_DEFAULTS,
    header: opt.Header = None,
    ca_file: opt.CaFile = None,
    timeout: opt.Timeout = 10.0,
) -> None:
    """Show a model's inputs, outputs, opsets, producer, metadata, sha256 and size.

    For a model server URL: the server's metadata, its readiness and the version answering.
    """
    if is_model_url(model):
        settings = RemoteSettings.build(
            header, ca_file=ca_file, timeout_s=timeout, retries=1, concurrency=1
        )
        _inspect_remote(model, settings, json_out)
        return
    from streamscore.model.session import load_model  # onnxruntime: loaded only when run

    loaded = load_model(resolve_model(model, registry), provider="cpu")
    ref, sig = loaded.ref, loaded.signature
    info = {
        "name": ref.name,
        "version": ref.version,
        **ref.lineage,
        "path": str(ref.path),
        "sha256": ref.sha256,
        "size_bytes": ref.size,
        "producer": sig.producer,
        "opsets": sig.opsets,
        "inputs": [{"name": s.name, "type": s.type, "shape": list(s.shape)} for s in sig.inputs],
        "outputs": [{"name": s.name, "type": s.type, "shape": list(s.shape)} for s in sig.outputs],
        "metadata": sig.metadata,
    }
    if json_out:
        console.json_line(info)
        return
    console.print_renderable(
        console.format_table(
            f"{ref.label}  {ref.path}",
            ["", "name", "type", "shape"],
            [("input", s.name, s.type, list(s.shape)) for s in sig.inputs]
            + [("output", s.name, s.type, list(s.shape)) for s in sig.outputs],
        )
    )
    opsets = ", ".join(f"{domain}={v}" for domain, v in sig.opsets.items())
    for key, value in ref.lineage.items():
        console.print_text(f"{key:<8} {value}")
    console.print_text(f"sha256   {ref.sha256}\nsize     {ref.size:,} bytes")
    console.print_text(f"producer {sig.producer}\nopsets   {opsets}")
    for key, value in sig.metadata.items():
        console.print_text(f"metadata {key} = {value}")


def _inspect_remote(model: str, settings: RemoteSettings, json_out: bool) -> None:
    from streamscore.remote.model import inspect_remote_model  # httpx: loaded only when run

    info = inspect_remote_model(model, settings)
    if json_out:
        console.json_line(info)
        return
    label = f"{info['name']}:{info['version']}" if info["version"] else info["name"]
    console.print_renderable(
        console.format_table(
            f"{label}  {info['server']}",
            ["", "name", "type", "shape"],
            [("input", t["name"], t["type"], t["shape"]) for t in info["inputs"]]
            + [("output", t["name"], t["type"], t["shape"]) for t in info["outputs"]],
        )
    )
    ready = "ready" if info["ready"] else "NOT ready"
    server = "ready" if info["server_ready"] else "NOT ready"
    console.print_text(f"model    {ready}\nserver   {server}\nplatform {info['platform']}")
    if not info["signature_published"]:
        console.print_text(
            "the server publishes no signature for this model: give a local copy with "
            "--signature FILE.onnx when scoring, or its tensors as --signature "
            "'INPUT:FP32[-1,N]->OUTPUT:FP32[-1]'"
        )


@app.command(
    "list",
    epilog="Examples: streamscore models list sample_data/models; "
    "streamscore models list sqlite:///mlflow.db",
)
@translate_errors
def list_(
    repo: Annotated[
        str,
        typer.Argument(
            help="A repository laid out REPO/NAME/VERSION/model.onnx, or an MLflow registry: "
            "its URI (sqlite:///mlflow.db, http://host:5000), models:/ (the --registry-uri "
            "one) or models:/NAME (one model)."
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON lines, not a table.")
    ] = False,
    registry_uri: opt.RegistryUri = None,
) -> None:
    """List every model and version in a repository with its sha256 (in a registry: with
    its aliases and run)."""
    from streamscore.model.mlflow_registry import is_registry_listing

    if is_registry_listing(repo):
        _list_registry(repo, RegistryOptions(registry_uri), json_out=json_out)
        return
    refs = list_models(repo)
    if json_out:
        for ref in refs:
            console.json_line(
                {"name": ref.name, "version": ref.version, "sha256": ref.sha256, "size": ref.size}
            )
        return
    console.print_renderable(
        console.format_table(
            f"models in {repo}",
            ["name", "version", "sha256", "size"],
            [(r.name, r.version, r.sha256[:16], f"{r.size:,}") for r in refs],
        )
    )


def _list_registry(spec: str, registry: RegistryOptions, *, json_out: bool) -> None:
    from streamscore.model.mlflow_registry import display_uri, list_registered_versions

    versions = list_registered_versions(spec, registry)
    if json_out:
        for v in versions:
            console.json_line(
                {
                    "name": v.name,
                    "version": v.version,
                    "aliases": list(v.aliases),
                    "status": v.status,
                    "run_id": v.run_id,
                }
            )
        return
    console.print_renderable(
        console.format_table(
            f"models in {display_uri(spec)}",
            ["name", "version", "aliases", "status", "run"],
            [
                (v.name, v.version, ", ".join("@" + a for a in v.aliases), v.status, v.run_id)
                for v in versions
            ],
        )
    )
