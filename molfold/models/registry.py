"""The model registry: every model registers itself once, with its name and kind.

A model kind says what the model maps to what, and so which task trains it
(:mod:`molfold.tasks`) and which interfaces use it:

=============  =============================================  ===================================
kind           the model                                       built by :func:`build_model` as
=============  =============================================  ===================================
``potential``  per-atom energies of a 3D structure             :class:`~molfold.models.potential
               (``model(data, atom_types) -> [N]``)            .Potential` around it: energy,
                                                               forces and stress, per-species
                                                               scale and shift
``property``   graph targets (standardised) and per-atom       :class:`~molfold.models.property
               vectors of a 3D structure                       .PropertyModel` around it:
               (``model(data, atom_types) -> dict``)           species, target means and stds
``conformer``  coordinates from a 2D molecular graph           the model itself
=============  =============================================  ===================================

Register a model class where it is defined::

    @register("allegro", kind="potential")
    class Allegro(nn.Module): ...

Its constructor's keyword arguments are its hyperparameters: the keys of its ``configs/model/``
file. A potential's or property model's constructor also takes ``num_types`` (the number of
species), and a property model's ``num_targets``, which the builder supplies from the dataset
statistics. One name may be registered once per kind (Equiformer is both). Every module of
:mod:`molfold.models` is imported on the first lookup, so a new model file needs no other edit.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from molfold.errors import ConfigError

KINDS = ("potential", "property", "conformer")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``name`` (its config name), ``kind`` (see the module docstring) and
    the class."""

    name: str
    kind: str
    cls: type[nn.Module]

    def transforms(self, hparams: dict[str, Any]) -> list:
        """What the model needs attached to each structure besides what its task attaches: its
        class's ``data_transforms(hparams)``, if any (:mod:`molfold.data.transforms`)."""
        make = getattr(self.cls, "data_transforms", None)
        return list(make(hparams)) if make is not None else []

    def hyperparameters(self) -> list[str]:
        """The keyword arguments a config may set."""
        parameters = inspect.signature(self.cls.__init__).parameters
        return sorted(p for p in parameters if p not in ("self", "num_types", "num_targets"))


_REGISTRY: dict[tuple[str, str], ModelEntry] = {}


def register(name: str, kind: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that registers a model under ``name`` as a model of ``kind``.

    One name may be registered once per kind (Equiformer is a potential and a property model):
    the task, chosen from the data, then picks the entry (:func:`model_entry`).
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        key = (name, kind)
        if key in _REGISTRY and _REGISTRY[key].cls is not cls:
            raise ValueError(f"model name {name!r} is registered twice as a {kind} model")
        _REGISTRY[key] = ModelEntry(name, kind, cls)
        return cls

    return decorate


def _import_models() -> None:
    import molfold.models as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def registered_models() -> list[ModelEntry]:
    """Every registered model entry (one per name and kind), sorted by name and kind."""
    _import_models()
    return [_REGISTRY[key] for key in sorted(_REGISTRY)]


def model_kinds(name: str) -> tuple[str, ...]:
    """The kinds ``name`` is registered as, in the order of :data:`KINDS`; a ConfigError
    listing the models there are when there is no model ``name``."""
    models = registered_models()
    kinds = tuple(k for k in KINDS if (name, k) in _REGISTRY)
    if not kinds:
        names = sorted({entry.name for entry in models})
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(names)}")
    return kinds


def model_entry(name: str, kind: str | None = None) -> ModelEntry:
    """The registry entry of ``name`` as a ``kind`` model (None: its only kind), or a
    ConfigError naming what there is."""
    kinds = model_kinds(name)
    if kind is None:
        if len(kinds) > 1:
            raise ConfigError(f"model {name!r} is a {' and a '.join(kinds)} model: name the kind")
        kind = kinds[0]
    if kind not in kinds:
        raise ConfigError(f"model={name} is a {' and a '.join(kinds)} model, not a {kind} model")
    return _REGISTRY[(name, kind)]


def build_model(
    name: str,
    hparams: dict[str, Any],
    statistics: dict[str, Any] | None = None,
    dtype: str = "float32",
    kind: str | None = None,
) -> nn.Module:
    """The ``kind`` model (None: its only kind) registered as ``name`` with hyperparameters
    ``hparams``, in ``dtype``.

    Potentials are wrapped in :class:`~molfold.models.potential.Potential` with the ``species``,
    ``energy_scale`` and ``energy_shifts`` of ``statistics``; property models in
    :class:`~molfold.models.property.PropertyModel` with the ``species`` and the ``targets``
    (names, means and standard deviations) of ``statistics``. The returned module carries
    ``model_info``: its name, kind, hyperparameters, dtype and the statistics, everything
    :func:`molfold.models.checkpoint.save_model` needs to rebuild it.
    """
    entry = model_entry(name, kind)
    if dtype not in DTYPES:
        raise ConfigError(f"model dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    unknown = sorted(set(hparams) - set(entry.hyperparameters()))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'model.{k}' for k in unknown)} for model {name!r}; "
            f"valid keys: {', '.join(entry.hyperparameters())}"
        )
    statistics = dict(statistics or {})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[dtype])  # e3nn builds its constants in the default dtype
    try:
        if entry.kind == "potential":
            from molfold.models.potential import Potential

            species = statistics.get("species")
            if not species:
                raise ConfigError(f"building potential {name!r} needs the species it models")
            model = Potential(
                entry.cls(num_types=len(species), **hparams).to(DTYPES[dtype]),
                species,
                statistics.get("energy_scale", 1.0),
                statistics.get("energy_shifts", 0.0),
            )
        elif entry.kind == "property":
            from molfold.models.property import PropertyModel

            species = statistics.get("species")
            targets = statistics.get("targets")
            if not species or not targets:
                raise ConfigError(
                    f"building property model {name!r} needs the species and targets it models"
                )
            network = entry.cls(
                num_types=len(species), num_targets=len(targets["names"]), **hparams
            )
            model = PropertyModel(network.to(DTYPES[dtype]), species, **targets)
        else:
            model = entry.cls(**hparams).to(DTYPES[dtype])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad hyperparameters for model {name!r}: {error}") from error
    finally:
        torch.set_default_dtype(previous)
    model.model_info = {
        "name": name,
        "kind": entry.kind,
        "hparams": dict(hparams),
        "dtype": dtype,
        "statistics": statistics,
    }
    return model
