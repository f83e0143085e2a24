"""Model names, building potentials from configs, and checkpoint files.

A molfold checkpoint is a ``torch.save`` dict holding only tensors and plain Python values, so it
loads with ``torch.load(weights_only=True)`` (no code runs). Its ``"molfold"`` entry holds:

=================  ===========================================================================
key                value
=================  ===========================================================================
``model``          registry name of the energy model, e.g. ``"allegro"``
``hparams``        keyword arguments of the model class (plain values)
``species``        atomic numbers the model knows, in type-index order
``state_dict``     weights of the :class:`~molfold.models.potential.Potential` (EMA weights
                   when training used EMA), including per-species scales and shifts
``dtype``          ``"float32"`` or ``"float64"``
``version``        molfold version that wrote it
``statistics``     dataset statistics used at build time (for the record)
=================  ===========================================================================

Lightning checkpoints written by ``molfold train`` carry this entry next to Lightning's own
state, so ``load_model`` reads both them and files written by :func:`save_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from molfold.errors import CheckpointError, ConfigError, MissingFileError
from molfold.models.allegro import Allegro
from molfold.models.potential import Potential
from molfold.models.rebind import ReBind

MODELS: dict[str, type[torch.nn.Module]] = {"allegro": Allegro}
CONFORMER_MODELS: dict[str, type[torch.nn.Module]] = {"rebind": ReBind}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_potential(
    model: str,
    species: list[int],
    hparams: dict[str, Any],
    scales: list[float] | float = 1.0,
    shifts: list[float] | float = 0.0,
    dtype: str = "float32",
) -> Potential:
    """A :class:`Potential` around the energy model registered as ``model``."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"model dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[dtype])
    try:
        energy_model = MODELS[model](num_types=len(species), **hparams)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad hyperparameters for model {model!r}: {error}") from error
    finally:
        torch.set_default_dtype(previous)
    potential = Potential(energy_model.to(DTYPES[dtype]), species, scales, shifts)
    potential.config = {"model": model, "hparams": dict(hparams), "dtype": dtype}
    return potential


def build_conformer_model(
    model: str, hparams: dict[str, Any], dtype: str = "float32"
) -> torch.nn.Module:
    """The conformer model registered as ``model`` (2D graph -> coordinates)."""
    if model not in CONFORMER_MODELS:
        raise ConfigError(
            f"unknown conformer model {model!r}; available: {sorted(CONFORMER_MODELS)}"
        )
    if dtype not in DTYPES:
        raise ConfigError(f"model dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        network = CONFORMER_MODELS[model](**hparams).to(DTYPES[dtype])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad hyperparameters for model {model!r}: {error}") from error
    network.config = {"model": model, "hparams": dict(hparams), "dtype": dtype}
    return network


def conformer_payload(network: torch.nn.Module, training: dict | None = None) -> dict[str, Any]:
    """The ``"molfold"`` entry of a checkpoint for a conformer model; ``training`` records the
    training data (``data``: its name, ``elements``: atomic numbers seen in training)."""
    from molfold import __version__

    return {
        **network.config,
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "version": __version__,
        "training": training or {},
    }


def checkpoint_payload(potential: Potential, statistics: dict | None = None) -> dict[str, Any]:
    """The ``"molfold"`` entry of a checkpoint for ``potential`` (see the module docstring)."""
    from molfold import __version__

    return {
        **potential.config,
        "species": list(potential.species),
        "state_dict": {k: v.detach().cpu() for k, v in potential.state_dict().items()},
        "version": __version__,
        "statistics": statistics or {},
    }


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(
    potential: Potential, path: str | os.PathLike, statistics: dict | None = None
) -> None:
    """Write ``potential`` as a standalone molfold checkpoint, atomically."""
    atomic_save({"molfold": checkpoint_payload(potential, statistics)}, path)


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The ``"molfold"`` entry of a checkpoint, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(
            f"cannot read checkpoint {path} (not a molfold checkpoint, or corrupt): {reason}"
        ) from error
    if not isinstance(checkpoint, dict) or "molfold" not in checkpoint:
        raise CheckpointError(f"{path} is not a molfold checkpoint (no 'molfold' entry)")
    return checkpoint["molfold"]


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> Potential | torch.nn.Module:
    """Rebuild the model saved in ``path`` (from ``molfold train`` or :func:`save_model`): a
    :class:`Potential` for energy models, the bare network for conformer models (ReBind).

    No config file is needed: the checkpoint names the model and its hyperparameters. The model
    is returned in eval mode on ``device``.
    """
    payload = read_checkpoint(path, device)
    if payload.get("model") in CONFORMER_MODELS:
        model = build_conformer_model(payload["model"], payload["hparams"], payload["dtype"])
        model.training_data = payload.get("training", {})
    else:
        model = build_potential(
            payload["model"], payload["species"], payload["hparams"], dtype=payload["dtype"]
        )
        model.statistics = payload.get("statistics", {})
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"weights in {path} do not fit the model they name: {error}"
        ) from error
    return model.to(device).eval()
