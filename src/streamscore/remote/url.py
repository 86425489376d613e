"""MODEL as a URL: ``http(s)://HOST:PORT/v2/models/NAME[/versions/VERSION]``."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from streamscore.errors import UsageError

_PATH = re.compile(r"(?P<prefix>.*?)/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/?")
FORM = "http(s)://HOST:PORT/v2/models/NAME or .../v2/models/NAME/versions/VERSION"


def is_model_url(spec: object) -> bool:
    """True when MODEL names a model on a server rather than a file or repository."""
    return isinstance(spec, str) and spec.startswith(("http://", "https://"))


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
        if parts.scheme not in ("http", "https") or not parts.hostname or match is None:
            raise UsageError(f"cannot read MODEL URL {spec!r}", hint=f"use {FORM}")
        server = urllib.parse.urlunsplit((parts.scheme, parts.netloc, match["prefix"], "", ""))
        name = urllib.parse.unquote(match["name"])
        version = urllib.parse.unquote(match["version"]) if match["version"] else None
        return cls(server, name, version)

    def model_path(self, version: str | None = None) -> str:
        """``/v2/models/NAME[/versions/V]`` for ``version`` (default: the one in the URL)."""
        version = version if version is not None else self.version
        path = f"/v2/models/{urllib.parse.quote(self.name, safe='')}"
        if version:
            path += f"/versions/{urllib.parse.quote(version, safe='')}"
        return path

    def __str__(self) -> str:
        return self.server + self.model_path()
