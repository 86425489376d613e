"""Read an ONNX file's header fields (opsets, producer, metadata) without the onnx package.

ONNX files are protobuf ``ModelProto`` messages. The few top-level fields ``models inspect``
shows can be read with a small wire-format walker, which keeps the heavy ``onnx`` package
out of streamscore's runtime dependencies. Field numbers come from onnx.proto.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_PRODUCER_NAME = 2
_PRODUCER_VERSION = 3
_OPSET_IMPORT = 8
_METADATA_PROPS = 14


@dataclass
class OnnxHeader:
    """The descriptive top-level fields of a ModelProto."""

    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of one message; nested messages stay bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(buf, pos)
            out.append((number, buf[pos : pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def read_onnx_header(data: bytes) -> OnnxHeader:
    """Parse producer, opset imports and metadata_props from serialized ONNX bytes."""
    header = OnnxHeader()
    producer_version = ""
    for number, value in _fields(data):
        if number == _PRODUCER_NAME and isinstance(value, bytes):
            header.producer = value.decode()
        elif number == _PRODUCER_VERSION and isinstance(value, bytes):
            producer_version = value.decode()
        elif number == _OPSET_IMPORT and isinstance(value, bytes):
            parts = dict(_fields(value))
            domain = parts.get(1, b"")
            version = parts.get(2, 0)
            if isinstance(domain, bytes) and isinstance(version, int):
                header.opsets[domain.decode() or "ai.onnx"] = version
        elif number == _METADATA_PROPS and isinstance(value, bytes):
            parts = dict(_fields(value))
            key, val = parts.get(1, b""), parts.get(2, b"")
            if isinstance(key, bytes) and isinstance(val, bytes):
                header.metadata[key.decode()] = val.decode()
    if producer_version:
        header.producer = f"{header.producer} {producer_version}".strip()
    return header
