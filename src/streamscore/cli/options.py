"""Options shared by several commands, declared once as Annotated types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamscore.config import PROVIDER_CHOICES

MODEL_HELP = (
    "An .onnx file, REPO/NAME (highest version), REPO/NAME/VERSION, an MLflow URI "
    "(models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest, runs:/RUN_ID/PATH), or a "
    "model on an Open Inference Protocol server: http(s)://HOST:PORT/v2/models/NAME (or "
    ".../NAME/versions/V; grpc(s):// for its gRPC port)."
)
Model = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
# Where models:/ and runs:/ MODELs come from (turned into config.RegistryOptions).
RegistryUri = Annotated[
    str | None,
    typer.Option(
        "--registry-uri",
        help="MLflow tracking/registry URI for models:/ and runs:/ MODELs, e.g. "
        "sqlite:///mlflow.db or http://host:5000 (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db).",
    ),
]
ModelCache = Annotated[
    Path | None,
    typer.Option(
        "--model-cache",
        help="Folder for models downloaded from a registry (default: "
        "$XDG_CACHE_HOME/streamscore, else ~/.cache/streamscore).",
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
    int | None,
    typer.Option(
        help="ONNX Runtime intra-op threads per model call (default 1, as batch's calls; "
        "0: ONNX Runtime decides)."
    ),
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

# Kafka connection options (replay, tail): turned into KafkaSettings.resolve(...).
BootstrapServers = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        "-b",
        help="Kafka brokers HOST:PORT[,HOST:PORT] (default: $STREAMSCORE_BOOTSTRAP_SERVERS).",
    ),
]
KafkaProperties = Annotated[
    list[str] | None,
    typer.Option(
        "-X",
        help="A librdkafka property KEY=VALUE, repeatable, as kcat takes them (e.g. -X "
        "security.protocol=SASL_SSL). Secrets are never printed.",
    ),
]
KafkaConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Java .properties file of client settings (SASL/SSL); -X values win over it.",
    ),
]
ConnectTimeout = Annotated[
    float,
    typer.Option(help="Seconds to wait for the Kafka cluster to answer before giving up."),
]

# Remote model options (MODEL is an http(s):// or grpc(s):// URL): turned into RemoteSettings.
Header = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        help="HTTP header 'Name: value' for the model server (gRPC metadata for grpc://), "
        "repeatable (e.g. 'Authorization: Bearer TOKEN'; or set $STREAMSCORE_REMOTE_TOKEN). "
        "Values are never printed.",
    ),
]
CaFile = Annotated[
    Path | None,
    typer.Option(help="PEM file of CA certificates to trust for an https or grpcs model server."),
]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds a model server may take per request.")
]
Retries = Annotated[
    int,
    typer.Option(
        help="Retries of a request through a model server outage (down, timeout, 429, 5xx), "
        "with exponential backoff and jitter; then the run stops with exit 12."
    ),
]
Concurrency = Annotated[
    int, typer.Option("--concurrency", help="Requests in flight to a model server.")
]
Signature = Annotated[
    str | None,
    typer.Option(
        help="For a served model whose server publishes no signature: a local .onnx copy "
        "(inputs and outputs are read from it), or the tensors as text in OIP datatypes, "
        "INPUTS->OUTPUTS, e.g. 'input:FP32[-1,30]->label:INT64[-1],probabilities:FP32[-1,2]' "
        "(-1: any size)."
    ),
]
