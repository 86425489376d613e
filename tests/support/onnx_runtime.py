"""A small MLServer runtime that runs an ONNX model with onnxruntime (test and demo support).

MLServer loads this class by its import path (``onnx_runtime.OnnxRuntime``) from the folder
that holds the model settings. Options in a model's ``parameters.extra``:

* ``publish_signature`` (default true): publish the ONNX inputs and outputs as the model's
  metadata. False mimics MLServer's usual behaviour of publishing only what settings declare.
* ``reject_below``: ``{"input": NAME, "column": I, "value": V}`` answers 400 when any row of
  input NAME has column I below V, as a server validating data would.
* ``drop_rows``: answer this many rows fewer than were asked for (a misbehaving server).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, ResponseOutput

DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _metadata(args: list[Any]) -> list[MetadataTensor]:
    return [
        MetadataTensor(
            name=arg.name,
            datatype=DATATYPES[arg.type],
            shape=[dim if isinstance(dim, int) else -1 for dim in arg.shape],
        )
        for arg in args
    ]


class OnnxRuntime(MLModel):
    """Runs ``parameters.uri`` (an .onnx file) on the CPU."""

    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        uri = self.settings.parameters.uri
        self.session = ort.InferenceSession(
            uri, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.extra = dict(self.settings.parameters.extra or {})
        self.types = {arg.name: arg.type for arg in self.session.get_inputs()}
        if self.extra.get("publish_signature", True):
            self.inputs = _metadata(self.session.get_inputs())
            self.outputs = _metadata(self.session.get_outputs())
        return True

    def _feeds(self, payload: InferenceRequest) -> dict[str, np.ndarray]:
        feeds = {}
        for item in payload.inputs:
            if item.datatype == "BYTES":
                # One value per element, as text: NumpyCodec would join the values that
                # gRPC's raw contents carry as bytes into one buffer.
                data = getattr(item.data, "root", item.data)
                values = [v.decode() if isinstance(v, bytes) else str(v) for v in data]
                array = np.array(values, dtype=object).reshape(item.shape)
            else:
                array = NumpyCodec.decode_input(item)
                if self.types.get(item.name) == "tensor(float)":
                    array = array.astype(np.float32)
            feeds[item.name] = array
        return feeds

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = self._feeds(payload)
        rule = self.extra.get("reject_below")
        if rule:
            column = feeds[rule["input"]][:, rule["column"]]
            bad = np.flatnonzero(column < rule["value"])
            if len(bad):
                raise MLServerError(
                    f"{rule['input']}[{bad[0]}, {rule['column']}] must be at least {rule['value']}",
                    status_code=400,
                )
        wanted = [o.name for o in payload.outputs] if payload.outputs else None
        names = wanted or [o.name for o in self.session.get_outputs()]
        try:
            values = self.session.run(names, feeds)
        except Exception as exc:
            raise MLServerError(
                f"onnxruntime: {str(exc).splitlines()[0]}", status_code=400
            ) from exc
        drop = int(self.extra.get("drop_rows", 0))
        outputs: list[ResponseOutput] = []
        for name, value in zip(names, values, strict=True):
            array = np.asarray(value)
            if drop:
                array = array[: max(0, len(array) - drop)]
            outputs.append(NumpyCodec.encode_output(name, array))
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
