"""What every command shares: error translation, exit codes, option parsing helpers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer

from streamscore import console
from streamscore.config import KeepColumns, RegistryOptions, ScoringOptions
from streamscore.errors import EXIT_INTERRUPTED, StreamscoreError, UsageError

P = ParamSpec("P")
R = TypeVar("R")


def translate_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command; print our errors as one line and exit with their code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except StreamscoreError as exc:
            console.print_error(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print_error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def split_list(value: str | None) -> list[str] | None:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; None or blank -> None."""
    if value is None or not value.strip():
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def scoring_options(
    *,
    model: str,
    features: str | None,
    outputs: str | None,
    keep: str | None,
    provider: str,
    threads: int | None,
    batch_size: int,
    reject_nan: bool,
    registry_uri: str | None = None,
    model_cache: Path | None = None,
) -> ScoringOptions:
    """ScoringOptions from the options every scoring command shares (comma lists parsed)."""
    return ScoringOptions(
        model=model,
        features=tuple(split_list(features) or ()) or None,
        outputs=tuple(split_list(outputs) or ()) or None,
        keep=KeepColumns.parse(keep),
        provider=provider,
        threads=threads,
        batch_size=batch_size,
        reject_nan=reject_nan,
        registry=RegistryOptions(registry_uri, model_cache),
    )


def parse_int_list(value: str, option: str) -> list[int]:
    try:
        items = [int(item) for item in split_list(value) or []]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated integers, got {value!r}") from None
    if not items or any(item <= 0 for item in items):
        raise UsageError(f"{option} takes positive integers, got {value!r}")
    return items
