"""Options shared by several commands, declared once as Annotated types."""

from __future__ import annotations

from typing import Annotated

import typer

from streamscore.model.session import PROVIDER_CHOICES

Model = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="An .onnx file, REPO/NAME (highest version) or REPO/NAME/VERSION."
    ),
]
Features = Annotated[
    str | None,
    typer.Option(
        help="Columns feeding a 2-D model input, in order (default: model metadata feature_names).",
    ),
]
Outputs = Annotated[
    str | None,
    typer.Option(help="Model outputs (or single columns like probabilities_1) to keep."),
]
Keep = Annotated[
    str | None,
    typer.Option(
        help="Passthrough columns: a,b,c | all | none. Default: every column that is not a "
        "model input."
    ),
]
BatchSize = Annotated[int, typer.Option(help="Rows per model call.")]
Threads = Annotated[
    int | None, typer.Option(help="ONNX Runtime intra-op threads (default: ONNX Runtime decides).")
]
Provider = Annotated[
    str,
    typer.Option(
        help=f"Execution provider: {'|'.join(PROVIDER_CHOICES)}; auto = CUDA if it really "
        "loads, else CPU."
    ),
]
RejectNan = Annotated[
    bool,
    typer.Option(
        help="Reject rows with NaN in any model input (default: let the model decide; rows "
        "whose scores come out NaN are rejected anyway)."
    ),
]
LogFormat = Annotated[
    str,
    typer.Option(help="auto (progress bars on a terminal, JSON lines otherwise), json or text."),
]
