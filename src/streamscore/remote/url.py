"""MODEL as a URL: ``http(s)://HOST:PORT/v2/models/NAME[/versions/VERSION]`` (REST) or
``grpc(s)://HOST:PORT/v2/models/NAME[/versions/VERSION]`` (gRPC: the same path, another
scheme; the path only names the model, gRPC has no URL prefix)."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from streamscore.errors import UsageError

_PATH = re.compile(r"(?P<prefix>.*?)/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/?")
FORM = (
    "http(s)://HOST:PORT/v2/models/NAME or .../v2/models/NAME/versions/VERSION "
    "(grpc(s):// for gRPC)"
)
SCHEMES = ("http://", "https://", "grpc://", "grpcs://")
GRPC_SCHEMES = ("grpc", "grpcs")


def is_model_url(spec: object) -> bool:
    """True when MODEL names a model on a server rather than a file or repository."""
    return isinstance(spec, str) and spec.startswith(SCHEMES)


@dataclass(frozen=True)
class ModelURL:
    """A model on an OIP server: ``server`` is the base URL (scheme, host, port, prefix)."""

    server: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelURL:
        """Parse MODEL; credentials in the URL are refused so they never reach a log."""
        parts = urllib.parse.urlsplit(spec)
        if parts.username or parts.password:
            raise UsageError(
                "MODEL URL must not hold credentials",
                hint="pass them with --header 'Authorization: …' or STREAMSCORE_REMOTE_TOKEN",
            )
        if parts.query or parts.fragment:
            raise UsageError(f"MODEL URL must not have a query or fragment; use {FORM}")
        match = _PATH.fullmatch(parts.path)
        if parts.scheme not in ("http", "https", *GRPC_SCHEMES) or not parts.hostname:
            raise UsageError(f"cannot read MODEL URL {spec!r}", hint=f"use {FORM}")
        if match is None or (parts.scheme in GRPC_SCHEMES and match["prefix"]):
            raise UsageError(f"cannot read MODEL URL {spec!r}", hint=f"use {FORM}")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"MODEL URL {spec!r} has a port that is not a number") from None
        if parts.scheme == "grpc" and port is None:
            raise UsageError(
                f"MODEL URL {spec!r} needs a port", hint="e.g. grpc://127.0.0.1:8081/v2/models/NAME"
            )
        server = urllib.parse.urlunsplit((parts.scheme, parts.netloc, match["prefix"], "", ""))
        name = urllib.parse.unquote(match["name"])
        version = urllib.parse.unquote(match["version"]) if match["version"] else None
        return cls(server, name, version)

    @property
    def is_grpc(self) -> bool:
        """Does the server speak OIP over gRPC (``grpc://``, ``grpcs://``)?"""
        return self.server.startswith(("grpc://", "grpcs://"))

    @property
    def target(self) -> str:
        """``HOST:PORT`` for a gRPC channel (grpcs defaults to port 443)."""
        parts = urllib.parse.urlsplit(self.server)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        return f"{host}:{parts.port or 443}"

    def model_path(self, version: str | None = None) -> str:
        """``/v2/models/NAME[/versions/V]`` for ``version`` (default: the one in the URL)."""
        version = version if version is not None else self.version
        path = f"/v2/models/{urllib.parse.quote(self.name, safe='')}"
        if version:
            path += f"/versions/{urllib.parse.quote(version, safe='')}"
        return path

    def __str__(self) -> str:
        return self.server + self.model_path()
