"""The Open Inference Protocol's JSON: datatypes, metadata -> signature, requests, responses.

Pure functions, no network. A response is checked against what was asked and what the
metadata promised (row count, every output present, datatype, shape); any difference is a
:class:`RemoteError` naming the server, never scores shifted onto the wrong rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from streamscore.errors import ModelError, RemoteError, UsageError
from streamscore.model.signature import Dim, ModelSignature, TensorSpec

# OIP datatype <-> ONNX element type (TensorSpec.type is ONNX Runtime's "tensor(float)").
_ELEMENTS = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float",
    "FP64": "double",
    "BYTES": "string",
}
_DATATYPES = {element: datatype for datatype, element in _ELEMENTS.items()}


def datatype_of(spec: TensorSpec) -> str:
    """The OIP datatype of a tensor spec (``FP32`` for ``tensor(float)``)."""
    datatype = _DATATYPES.get(spec.element_type)
    if datatype is None:
        raise ModelError(f"model tensor '{spec.name}' has type {spec.type}, which OIP cannot carry")
    return datatype


def _spec(tensor: Mapping[str, Any], where: str) -> TensorSpec:
    try:
        name, datatype, shape = str(tensor["name"]), str(tensor["datatype"]), tensor["shape"]
        dims: tuple[Dim, ...] = tuple(None if int(d) < 0 else int(d) for d in shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(f"{where}: metadata tensor {tensor!r:.80} is malformed") from exc
    element = _ELEMENTS.get(datatype)
    if element is None:
        raise ModelError(f"{where}: tensor '{name}' has datatype {datatype}, unknown to OIP")
    return TensorSpec(name, f"tensor({element})", dims)


def signature_from_metadata(metadata: Mapping[str, Any], where: str) -> ModelSignature:
    """A :class:`ModelSignature` from ``GET /v2/models/NAME``; empty lists stay empty."""
    inputs = tuple(_spec(t, where) for t in metadata.get("inputs") or ())
    outputs = tuple(_spec(t, where) for t in metadata.get("outputs") or ())
    platform = str(metadata.get("platform") or "")
    # Servers that publish model parameters (Triton does) may carry feature_names there.
    parameters = metadata.get("parameters")
    described = (
        {str(k): v for k, v in parameters.items() if isinstance(v, str)}
        if isinstance(parameters, dict)
        else {}
    )
    return ModelSignature(inputs=inputs, outputs=outputs, metadata=described, producer=platform)


# --signature as text: INPUTS->OUTPUTS, each a comma-separated list of NAME:DATATYPE[DIMS].
_TENSOR = r"\s*([^\s:,\[\]]+)\s*:\s*([A-Za-z0-9]+)\s*\[([^\]]*)\]\s*"
_TENSORS = re.compile(f"{_TENSOR}(?:,{_TENSOR})*")
SIGNATURE_FORM = "'NAME:DATATYPE[DIMS],...->NAME:DATATYPE[DIMS],...'"
SIGNATURE_EXAMPLE = "'input:FP32[-1,30]->label:INT64[-1],probabilities:FP32[-1,2]'"


def is_signature_text(text: str) -> bool:
    """Does ``--signature`` give the tensors as text (rather than naming an ONNX file)?"""
    return "->" in text


def parse_signature(text: str) -> ModelSignature:
    """A signature from ``--signature`` text, in OIP datatypes: ``INPUTS->OUTPUTS``, each a
    comma-separated list of ``NAME:DATATYPE[DIMS]`` with -1 for a dimension of any size, e.g.
    ``input:FP32[-1,30]->label:INT64[-1],probabilities:FP32[-1,2]`` (raises UsageError)."""
    inputs, arrow, outputs = text.partition("->")
    sides = [_parse_tensors(side, text) for side in (inputs, outputs)]
    if not arrow or not all(sides):
        raise UsageError(
            f"--signature {text!r} is not {SIGNATURE_FORM}", hint=f"e.g. {SIGNATURE_EXAMPLE}"
        )
    names = [spec.name for side in sides for spec in side]
    if len(set(names)) != len(names):
        raise UsageError(f"--signature {text!r} names a tensor twice")
    return ModelSignature(inputs=sides[0], outputs=sides[1], producer="--signature")


def _parse_tensors(side: str, text: str) -> tuple[TensorSpec, ...]:
    if _TENSORS.fullmatch(side) is None:
        return ()
    specs = []
    for name, datatype, dims in re.findall(_TENSOR, side):
        element = _ELEMENTS.get(datatype.upper())
        if element is None:
            raise UsageError(
                f"--signature: tensor '{name}' has datatype {datatype}, not one of OIP's",
                hint=f"use one of {', '.join(_ELEMENTS)}",
            )
        try:
            shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            raise UsageError(
                f"--signature: tensor '{name}' has shape [{dims}]; give integers, -1 for any size"
            ) from None
        if any(d < -1 for d in shape):
            raise UsageError(f"--signature: tensor '{name}' has a dimension below -1")
        specs.append(
            TensorSpec(name, f"tensor({element})", tuple(None if d < 0 else d for d in shape))
        )
    return tuple(specs)


def encode_request(
    signature: ModelSignature, arrays: Mapping[str, np.ndarray], outputs: Sequence[str]
) -> bytes:
    """``POST …/infer`` body for ``arrays`` (model feeds), asking for ``outputs``."""
    inputs = []
    for name, array in arrays.items():
        spec = signature.input(name)
        data: Any = array.ravel() if array.dtype != object else array.ravel().tolist()
        inputs.append(
            {"name": name, "shape": list(array.shape), "datatype": datatype_of(spec), "data": data}
        )
    body = {"inputs": inputs, "outputs": [{"name": name} for name in outputs]}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True)
class AnsweredTensor:
    """One output tensor of an answer as it came (JSON or gRPC): ``values(datatype)`` gives its
    flat values (raising KeyError, TypeError or ValueError when they do not fit)."""

    name: str
    datatype: str
    shape: Sequence[Any]
    values: Callable[[str], np.ndarray]


def decode_response(
    body: bytes,
    signature: ModelSignature,
    outputs: Sequence[str],
    rows: int,
    where: str,
) -> tuple[list[np.ndarray], str]:
    """The requested outputs, in order, as arrays of ``rows`` rows; and the model_version.

    Raises RemoteError when the answer does not match the request or the metadata.
    """
    try:
        answer = orjson.loads(body)
        tensors = {
            str(t["name"]): AnsweredTensor(
                str(t["name"]), str(t.get("datatype")), t.get("shape"), _json_values(t)
            )
            for t in answer["outputs"]
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise RemoteError(f"{where} answered something that is not an OIP response") from exc
    values = checked_outputs(tensors, signature, outputs, rows, where)
    return values, str(answer.get("model_version") or "")


def _json_values(tensor: Mapping[str, Any]) -> Callable[[str], np.ndarray]:
    def values(datatype: str) -> np.ndarray:
        if datatype == "BYTES":
            return np.array(tensor["data"], dtype=object)
        return np.asarray(tensor["data"], dtype=numpy_dtype(datatype))

    return values


def checked_outputs(
    tensors: Mapping[str, AnsweredTensor],
    signature: ModelSignature,
    outputs: Sequence[str],
    rows: int,
    where: str,
) -> list[np.ndarray]:
    """The requested ``outputs`` of an answer, checked against the request (every output,
    ``rows`` rows) and the metadata (datatype, dimensions); RemoteError naming ``where``."""
    missing = [name for name in outputs if name not in tensors]
    if missing:
        raise RemoteError(f"{where} left out output(s) {', '.join(missing)} from its answer")
    return [_decode_tensor(tensors[name], signature, rows, where) for name in outputs]


def _decode_tensor(
    tensor: AnsweredTensor, signature: ModelSignature, rows: int, where: str
) -> np.ndarray:
    name = tensor.name
    spec = next((s for s in signature.outputs if s.name == name), None)
    expected = datatype_of(spec) if spec is not None else None
    datatype = tensor.datatype
    if expected is not None and datatype != expected:
        raise RemoteError(
            f"{where} answered output '{name}' as {datatype}; metadata says {expected}"
        )
    try:
        shape = [int(d) for d in tensor.shape]
        array: np.ndarray = tensor.values(datatype).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(f"{where} answered output '{name}' with data that fits no shape") from exc
    if not shape or shape[0] != rows:
        got = shape[0] if shape else 0
        raise RemoteError(f"{where} answered {got} row(s) of output '{name}' for {rows} sent")
    if spec is not None and len(spec.shape) == 1 and len(shape) == 2 and shape[1] == 1:
        array = array.reshape(shape[0])  # MLServer answers [N] outputs as [N, 1]
    if spec is not None and spec.shape and array.ndim != len(spec.shape):
        raise RemoteError(
            f"{where} answered output '{name}' with {array.ndim} dimensions; "
            f"metadata says {len(spec.shape)}"
        )
    return array


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype of an OIP datatype (object for BYTES; ValueError if unknown)."""
    dtype = TensorSpec("x", f"tensor({_ELEMENTS.get(datatype, '?')})").dtype
    if dtype is None:
        raise ValueError(datatype)
    return dtype


def error_message(body: bytes) -> str:
    """The server's own message from an error answer (``{"error": …}``), one line, short."""
    try:
        answer = orjson.loads(body)
        text = answer.get("error") or answer.get("detail") or answer
    except (orjson.JSONDecodeError, AttributeError):
        text = body.decode(errors="replace")
    line = str(text).strip().splitlines()[0] if str(text).strip() else "no message"
    return line[:300]
