"""ONNX Runtime sessions: the only module that imports onnxruntime.

onnxruntime-gpu lists CUDA (and TensorRT) as available even on machines without a GPU, then
silently falls back to CPU while printing errors on stderr. So the provider that runs is read
from ``session.get_providers()`` after the session exists, and the native library's stderr is
captured while sessions are created, so its noise never reaches the user's terminal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from streamscore.config import PROVIDER_CHOICES, PROVIDER_NAMES
from streamscore.errors import ModelError, UsageError
from streamscore.model.onnx_header import read_onnx_header
from streamscore.model.repository import ModelRef
from streamscore.model.signature import ModelSignature, TensorSpec

ort.set_default_logger_severity(3)

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_SHORT = {long: short for short, long in PROVIDERS.items()}
assert tuple(PROVIDERS) == PROVIDER_NAMES  # config.py names them for light-weight importers


def ort_version() -> str:
    return str(ort.__version__)


def listed_providers() -> list[str]:
    """Providers the installed ONNX Runtime build lists; a listed GPU provider may not load."""
    return [_SHORT.get(p, p) for p in ort.get_available_providers()]


@contextlib.contextmanager
def _captured_native_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where ONNX Runtime's C++ logs go) into a buffer."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def _provider_chain(provider: str) -> list[str]:
    if provider not in PROVIDER_CHOICES:
        raise UsageError(
            f"unknown provider {provider!r}", hint=f"use one of {', '.join(PROVIDER_CHOICES)}"
        )
    listed = set(ort.get_available_providers())
    if provider == "auto":
        chain = ["cuda", "cpu"] if PROVIDERS["cuda"] in listed else ["cpu"]
    elif provider == "tensorrt":
        chain = ["tensorrt", "cuda", "cpu"]
    else:
        chain = [provider] if provider == "cpu" else [provider, "cpu"]
    return [PROVIDERS[name] for name in chain]


def runs_on_cpu(provider: str) -> bool:
    """Whether ``provider`` (``auto`` included) can only mean CPU on this installation."""
    return _provider_chain(provider) == [PROVIDERS["cpu"]]


def _signature(session: Any, data: bytes) -> ModelSignature:
    header = read_onnx_header(data)

    def spec(arg: Any) -> TensorSpec:
        return TensorSpec(arg.name, arg.type, tuple(arg.shape or ()))

    meta = session.get_modelmeta()
    metadata = dict(header.metadata) or dict(meta.custom_metadata_map)
    return ModelSignature(
        inputs=tuple(spec(arg) for arg in session.get_inputs()),
        outputs=tuple(spec(arg) for arg in session.get_outputs()),
        metadata=metadata,
        producer=header.producer or str(meta.producer_name),
        opsets=header.opsets,
    )


@dataclass
class LoadedModel:
    """A model ready to run: its reference, signature and the provider that really runs it."""

    ref: ModelRef
    signature: ModelSignature
    provider: str
    session: Any

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[Any]:
        """Run the session; ONNX Runtime failures become ModelError."""
        try:
            return list(self.session.run(list(output_names), feeds))
        except Exception as exc:  # onnxruntime raises plain RuntimeError subclasses
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model {self.ref.label} failed to run: {first}") from exc


def load_model(
    ref: ModelRef,
    *,
    provider: str = "auto",
    threads: int | None = None,
    spin: bool = True,
) -> LoadedModel:
    """Create an inference session for ``ref`` on ``provider`` (auto, cpu, cuda, tensorrt).

    ``auto`` picks CUDA when it really loads and CPU otherwise. Asking for ``cuda`` or
    ``tensorrt`` explicitly fails with ModelError when that provider does not load.
    ``spin=False`` stops idle intra-op threads from busy-waiting between calls: slightly
    higher latency per call, but the cores stay free for reader and writer threads.
    """
    try:
        data = ref.path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {ref.path}: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != ref.sha256:  # replaced on disk since it was resolved: describe what we load
        ref = dataclasses.replace(ref, sha256=digest, size=len(data))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chain = _provider_chain(provider)
    # The Python wrapper prints its TensorRT fallback banner on stdout: keep it out of
    # output that may be JSON (the native reason is captured from stderr).
    with _captured_native_stderr() as noise, contextlib.redirect_stdout(io.StringIO()):
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=chain)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise ModelError(
                f"cannot load model {ref.path}: {message}",
                hint="check that the file is a valid ONNX model",
            ) from exc
    used = _SHORT.get(session.get_providers()[0], session.get_providers()[0])
    if provider not in ("auto", "cpu") and used == "cpu":
        reason = next((line for line in noise if line.strip()), "no usable GPU found")
        raise ModelError(
            f"provider {provider} requested but ONNX Runtime fell back to CPU: {reason[-200:]}",
            hint="use --provider auto or cpu, or install the CUDA runtime (pip install "
            "'streamscore[cuda]')",
        )
    return LoadedModel(ref=ref, signature=_signature(session, data), provider=used, session=session)


@dataclass(frozen=True)
class CopyTimings:
    """Per-call times (ns) of host->device copies, compute, and device->host copies."""

    h2d_ns: np.ndarray
    compute_ns: np.ndarray
    d2h_ns: np.ndarray


def time_device_copies(model: LoadedModel, feeds: dict[str, np.ndarray], calls: int) -> CopyTimings:
    """Run ``calls`` times with I/O binding, timing input copies, compute and output copies apart.

    session.run hides the copies to and from a GPU inside its time; binding inputs as
    OrtValues placed on the device first, and keeping outputs there until copied back,
    separates them. On CPU the same code runs and the copies are close to zero.
    """
    device = "cuda" if model.provider in ("cuda", "tensorrt") else "cpu"
    strings = [name for name, values in feeds.items() if values.dtype == object]
    if strings:
        raise ModelError(f"I/O binding cannot place string input(s) {', '.join(strings)}")
    session = model.session
    clock = time.perf_counter_ns
    h2d, compute, d2h = (np.zeros(calls, dtype=np.int64) for _ in range(3))
    try:
        for i in range(calls):
            binding = session.io_binding()
            t0 = clock()
            placed = {
                name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(values), device, 0)
                for name, values in feeds.items()
            }
            t1 = clock()
            for name, value in placed.items():
                binding.bind_ortvalue_input(name, value)
            for output in model.signature.outputs:
                binding.bind_output(output.name, device)
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            t2 = clock()
            binding.copy_outputs_to_cpu()
            t3 = clock()
            h2d[i], compute[i], d2h[i] = t1 - t0, t2 - t1, t3 - t2
    except Exception as exc:  # onnxruntime raises plain RuntimeError subclasses
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"I/O binding run of {model.ref.label} failed: {first}") from exc
    return CopyTimings(h2d, compute, d2h)
