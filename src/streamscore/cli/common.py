"""What every command shares: error translation, exit codes, option parsing helpers."""

from __future__ import annotations

import functools
import inspect
import signal
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from streamscore import console
from streamscore.config import KeepColumns, RegistryOptions, ScoringOptions
from streamscore.errors import StreamscoreError, UsageError
from streamscore.remote.settings import RemoteSettings
from streamscore.shutdown import signal_of

P = ParamSpec("P")
R = TypeVar("R")


def _without_bool_type(params: list[Any]) -> list[Any]:
    """On/off flags take no value: no ``<bool>`` type beside them in help."""
    for param in params:  # typer's vendored click: only the attributes are public
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _unwrapped(text: str | None) -> str | None:
    """Help paragraphs as flowing text: typer keeps a docstring's line breaks after the first
    paragraph, which leaves ragged lines in a terminal of another width."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else p.replace("\n", " ") for p in paragraphs)


class Command(TyperCommand):
    """Help as Unix tools write it: ``INPUT`` (not ``{input}``) in the usage line, no
    ``<bool>`` type beside on/off flags, which take no value, and paragraphs that flow."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _unwrapped(self.help)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = (param.metavar or param.name or "").upper()
                name += "..." if param.nargs != 1 else ""
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_bool_type(super().get_params(ctx))


class Group(TyperGroup):
    """A command group (``streamscore``, ``streamscore models``) whose help, like
    :class:`Command`'s, shows no ``<bool>`` beside ``--help`` or ``--version``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_bool_type(super().get_params(ctx))


def translate_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command; print our errors as one line and exit with their code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except StreamscoreError as exc:
            console.print_error(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM under interrupt_on_signals
            signum = signal_of(exc)
            console.print_error("terminated" if signum == signal.SIGTERM else "interrupted")
            raise typer.Exit(128 + signum) from None

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
    remote: RemoteSettings | None = None,
    registry: RegistryOptions | None = None,
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
        remote=remote,
        registry=registry or RegistryOptions(),
    )


def parse_int_list(value: str, option: str) -> list[int]:
    try:
        items = [int(item) for item in split_list(value) or []]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated integers, got {value!r}") from None
    if not items or any(item <= 0 for item in items):
        raise UsageError(f"{option} takes positive integers, got {value!r}")
    return items
