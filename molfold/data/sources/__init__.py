"""Dataset sources: one module per published format, registered by its ``data.format`` name.

A source module defines the format's own config keys as a dataclass and a loader, and registers
them where they are defined::

    @dataclass(frozen=True)
    class AseOptions:
        energy_key: str = "energy"
        ...

    @register_source("ase", AseOptions, provides=("pos", "z", "energy", "forces"))
    def load(path, options, max_structures) -> list[Data]: ...

The loader returns every structure of the file (at most ``max_structures``, in file order) as a
graph in molfold units (:mod:`molfold.data.graph`), without the edges a model needs (the radius
graph is a transform, :mod:`molfold.data.transforms`): a list, or, for data too large to hold in
memory (OC20), a lazy sequence (``len`` and ``seq[i] -> Data``, a new graph on each call, picklable,
opening its files anew in each process). ``provides`` names the graph fields every structure
carries, so that a task can refuse data it cannot train on before anything is read; when they depend
on the format's options (an OC20 task, a QM9 target), ``provides`` is a function of the parsed
options. ``layout(path, options)``, when given, names the file layout found at ``path`` (``molfold
data inspect`` prints it). A source whose structures carry graph targets (``target`` [1, T], what
property models train on) names them and their units with ``targets(options) -> [(name, unit),
...]``. Every module of this package is imported on the first lookup, so a new format needs no other
edit. The keys every format shares (path, split sizes, batch sizes) are
:class:`molfold.data.datamodule.DataConfig`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from molfold.errors import ConfigError

Loader = Callable[[Any, Any, "int | None"], list]


@dataclass(frozen=True)
class Source:
    """A registered format: its ``name``, its ``options`` dataclass, its ``load`` function and
    the fields its structures carry (``provides``)."""

    name: str
    options: type
    load: Loader
    provides: tuple[str, ...] | Callable[[Any], tuple[str, ...]]
    identity: Callable[[Any, Any, int | None], str] | None = None
    """For a source read without a path (qm9pack): what identifies its files, for caches."""
    layout: Callable[[Any, Any], str] | None = None
    """``layout(path, options)``: the name of the file layout found at ``path``."""
    targets: Callable[[Any], list[tuple[str, str]]] | None = None
    """``targets(options)``: name and unit of each column of the ``target`` field."""

    def target_units(self, options: Any = None) -> list[tuple[str, str]]:
        """Name and unit of each column of ``target`` when read with ``options`` ([] if none)."""
        if self.targets is None:
            return []
        return list(self.targets(self.options() if options is None else options))

    def fields(self, options: Any = None) -> tuple[str, ...]:
        """The graph fields every structure carries when read with ``options`` (the parsed
        options dataclass; None: its defaults)."""
        if callable(self.provides):
            return tuple(self.provides(self.options() if options is None else options))
        return self.provides


_SOURCES: dict[str, Source] = {}


def register_source(
    name: str,
    options: type,
    provides: tuple[str, ...] | Callable[[Any], tuple[str, ...]],
    identity: Callable | None = None,
    layout: Callable | None = None,
    targets: Callable | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator that registers ``load`` as the loader of format ``name``."""

    def decorate(load: Loader) -> Loader:
        fields = provides if callable(provides) else tuple(provides)
        _SOURCES[name] = Source(name, options, load, fields, identity, layout, targets)
        return load

    return decorate


def registered_sources() -> dict[str, Source]:
    """Every registered format by name."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(_SOURCES)


def source(name: str | None) -> Source:
    """The source registered as ``name``, or a ConfigError listing the formats there are."""
    sources = registered_sources()
    if name not in sources:
        raise ConfigError(f"unknown data.format {name!r}; available: {', '.join(sorted(sources))}")
    return sources[name]
