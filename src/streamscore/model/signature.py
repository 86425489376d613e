"""What a model takes and returns: names, element types and shapes of its tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# ONNX Runtime type strings -> numpy dtypes (strings are numpy object arrays of str).
_ELEMENT_DTYPES: dict[str, np.dtype[np.generic]] = {
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "string": np.dtype(object),
}

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: ``type`` is ONNX Runtime's string, e.g. ``tensor(float)``."""

    name: str
    type: str
    shape: tuple[Dim, ...] = ()

    @property
    def is_tensor(self) -> bool:
        """True for plain tensors; False for sequences and maps (e.g. skl2onnx's ZipMap)."""
        return self.type.startswith("tensor(")

    @property
    def element_type(self) -> str:
        """The element type name: ``float``, ``int64``, ``string``…, or the full type."""
        return self.type[len("tensor(") : -1] if self.is_tensor else self.type

    @property
    def dtype(self) -> np.dtype[np.generic] | None:
        """The numpy dtype that feeds this tensor, or None if unsupported."""
        return _ELEMENT_DTYPES.get(self.element_type) if self.is_tensor else None

    @property
    def is_numeric(self) -> bool:
        dtype = self.dtype
        return dtype is not None and dtype.kind in "fiub"

    @property
    def width(self) -> int | None:
        """The fixed size of the second dimension of a 2-D tensor, if known."""
        if len(self.shape) == 2 and isinstance(self.shape[1], int):
            return self.shape[1]
        return None

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.type} [{dims}]"


@dataclass(frozen=True)
class ModelSignature:
    """Inputs, outputs and descriptive metadata of one ONNX model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)

    def input(self, name: str) -> TensorSpec:
        return next(spec for spec in self.inputs if spec.name == name)

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]
