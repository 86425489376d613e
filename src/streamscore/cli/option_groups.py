"""Groups of options several commands share, declared once and handed over as one object.

A group is a function whose parameters are the options (Typer ``Annotated`` types, with
defaults) and whose result is the config object they make: :func:`remote_options` gives a
:class:`RemoteSettings`, :func:`registry_options` a :class:`RegistryOptions`. A command takes
the object as one parameter and says where it comes from with :func:`grouped`::

    @translate_errors
    @grouped(remote=remote_options, registry=registry_options)
    def batch(..., remote: RemoteSettings, registry: RegistryOptions, ...) -> None:

Typer sees the group's options in the parameter's place (in ``--help`` too); the command
gets the object, built (and validated) from them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from streamscore.cli import options as opt
from streamscore.config import RegistryOptions
from streamscore.remote.settings import RemoteSettings

F = TypeVar("F", bound=Callable[..., Any])

# What a command's group parameter holds when the command is called directly, not by Typer.
REMOTE_DEFAULTS = RemoteSettings()
REGISTRY_DEFAULTS = RegistryOptions()


def remote_options(
    header: opt.Header = None,
    ca_file: opt.CaFile = None,
    timeout: opt.Timeout = 30.0,
    retries: opt.Retries = 5,
    concurrency: opt.Concurrency = 4,
    signature: opt.Signature = None,
) -> RemoteSettings:
    """How to reach a model server (used when MODEL is a URL)."""
    return RemoteSettings.build(
        header,
        ca_file=ca_file,
        timeout_s=timeout,
        retries=retries,
        concurrency=concurrency,
        signature=signature,
    )


def registry_options(
    registry_uri: opt.RegistryUri = None, model_cache: opt.ModelCache = None
) -> RegistryOptions:
    """Where ``models:/`` and ``runs:/`` MODELs come from."""
    return RegistryOptions(registry_uri, model_cache)


def grouped(**groups: Callable[..., Any]) -> Callable[[F], F]:
    """Replace each named parameter of the command by its group's options (see the module
    docstring); the command is called with the group's object in their place."""

    def decorate(command: F) -> F:
        own = inspect.signature(command, eval_str=True)
        members: dict[str, list[str]] = {}
        params: list[inspect.Parameter] = []
        for param in own.parameters.values():
            group = groups.get(param.name)
            if group is None:
                params.append(param)
                continue
            options = list(inspect.signature(group, eval_str=True).parameters.values())
            members[param.name] = [option.name for option in options]
            params += options
        missing = set(groups) - set(members)
        if missing:
            raise TypeError(f"{command.__name__} has no parameter {', '.join(sorted(missing))}")
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise TypeError(f"{command.__name__}: an option of a group repeats another")

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for name, options in members.items():
                kwargs[name] = groups[name](**{option: kwargs.pop(option) for option in options})
            return command(**kwargs)

        # All keyword-only (Typer passes keywords): options without a default may then
        # follow a group's options, which all have one.
        wrapper.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        )
        return wrapper  # type: ignore[return-value]

    return decorate
