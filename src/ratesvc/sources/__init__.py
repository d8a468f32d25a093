"""Source adapters: the registry and the one place that builds enabled sources from settings.

A new exchange is one new module in this package defining ``@register("slug")`` on a Source
subclass with an ``Options`` model (env prefix ``SLUG_``); nothing else needs to change.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from pydantic_settings import BaseSettings

from ratesvc.settings import DEFAULT_ENV_FILE, SettingsError, load
from ratesvc.sources.base import Source

__all__ = ["Source", "load_sources", "option_models", "register", "registry"]

_REGISTRY: dict[str, type[Source]] = {}


def register(name: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator: make a Source subclass available under `name` and set its `name`."""

    def decorate(cls: type[Source]) -> type[Source]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"source {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _import_all() -> None:
    """Import every module of this package so their @register decorators run."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def registry() -> dict[str, type[Source]]:
    """Every registered Source class by name."""
    _import_all()
    return dict(_REGISTRY)


def option_models() -> dict[str, type[BaseSettings]]:
    """The Options model of every registered source, so the CLI can validate them all at start."""
    return {name: cls.Options for name, cls in sorted(registry().items())}


def load_sources(names: list[str], *, env_file: Path | None = DEFAULT_ENV_FILE) -> list[Source]:
    """Validate each named source's options (env + `env_file`) and build the sources, in order.

    Raises:
        SettingsError: an unknown name, or one line naming the first invalid variable.
    """
    known = registry()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SettingsError(
            f"invalid setting SOURCES: unknown source(s) {unknown}; allowed: {', '.join(known)}"
        )
    return [known[name](load(known[name].Options, env_file)) for name in names]
