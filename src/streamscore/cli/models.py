"""``streamscore models``: look inside model files and repositories."""

from __future__ import annotations

from typing import Annotated

import typer

from streamscore import console
from streamscore.cli.common import translate_errors
from streamscore.model import list_models, resolve_model

app = typer.Typer(help="Inspect models and model repositories.", no_args_is_help=True)


@app.command(
    "inspect",
    epilog="Example: streamscore models inspect sample_data/models/fraud",
)
@translate_errors
def inspect(
    model: Annotated[str, typer.Argument(help="An .onnx file, REPO/NAME or REPO/NAME/VERSION.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Show a model's inputs, outputs, opsets, producer, metadata, sha256 and size."""
    from streamscore.model.session import load_model  # onnxruntime: loaded only when run

    loaded = load_model(resolve_model(model), provider="cpu")
    ref, sig = loaded.ref, loaded.signature
    info = {
        "name": ref.name,
        "version": ref.version,
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
    console.print_text(f"sha256   {ref.sha256}\nsize     {ref.size:,} bytes")
    console.print_text(f"producer {sig.producer}\nopsets   {opsets}")
    for key, value in sig.metadata.items():
        console.print_text(f"metadata {key} = {value}")


@app.command("list", epilog="Example: streamscore models list sample_data/models")
@translate_errors
def list_(
    repo: Annotated[
        str, typer.Argument(help="A repository laid out REPO/NAME/VERSION/model.onnx.")
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON lines, not a table.")
    ] = False,
) -> None:
    """List every model and version in a repository with its sha256."""
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
