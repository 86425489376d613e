"""The Typer application: registers one module per command."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperCommand

from streamscore import __version__
from streamscore.cli import batch, bench, compare, models, replay, tail
from streamscore.cli.common import Command, Group
from streamscore.shutdown import interrupt_on_signals

app = typer.Typer(
    name="streamscore",
    cls=Group,
    help="Run ONNX models over Parquet files and Kafka topics: batch, replay, tail, bench, "
    "compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"streamscore {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run ONNX models over Parquet files and Kafka topics: batch, replay, tail, bench, compare."""


app.add_typer(models.app, name="models")
batch.register(app)
replay.register(app)
tail.register(app)
bench.register(app)
compare.register(app)


def _plain_help(commands: typer.Typer) -> None:
    """Every command (sub-apps' included) renders its help with :class:`Command`."""
    for info in commands.registered_commands:
        if info.cls in (None, TyperCommand):  # not one that chose its own class
            info.cls = Command
    for group in commands.registered_groups:
        if group.typer_instance is not None:
            _plain_help(group.typer_instance)


_plain_help(app)  # after every command is registered


def main() -> None:
    # SIGTERM (cron, systemd, docker stop) stops every command as Ctrl-C does: one line and
    # exit 143, not a silent kill; batch and tail put their own graceful handlers over this.
    with interrupt_on_signals():
        app()
