"""The ``streamscore`` command line: thin translators over the Python API."""

from __future__ import annotations

from streamscore.cli.app import app, main

__all__ = ["app", "main"]
