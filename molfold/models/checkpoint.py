"""Model checkpoints: one format for every model kind, versioned, loaded without running code.

A molfold checkpoint is a ``torch.save`` dict holding only tensors and plain Python values, so it
loads with ``torch.load(weights_only=True)``. Its ``"molfold"`` entry holds:

==================  ==========================================================================
key                 value
==================  ==========================================================================
``format_version``  :data:`FORMAT_VERSION` of the writer; :func:`load_model` refuses newer ones
``molfold_version`` the molfold version that wrote it
``name``            registry name of the model (:mod:`molfold.models.registry`), ``"allegro"``
``kind``            ``potential``, ``property`` or ``conformer``
``hparams``         keyword arguments of the model class (plain values)
``dtype``           ``"float32"`` or ``"float64"``
``statistics``      training-set statistics the model was built with (potentials: ``species``
                    in type-index order, ``energy_scale``, ``energy_shifts``, ...; conformer
                    models: ``elements`` seen in training)
``state_dict``      the weights (EMA weights when training used EMA), with a potential's
                    per-species scales and shifts
==================  ==========================================================================

Lightning checkpoints written by ``molfold train`` carry this entry next to Lightning's own
state, so :func:`load_model` reads both them and files written by :func:`save_model`.

Format 1 (molfold 0.1.0 before the one-stack rewrite) had ``model`` for the name, ``version`` for
the molfold version, ``species`` at the top level (potentials) and ``training`` for a conformer
model's statistics; :func:`read_checkpoint` converts it on reading, and a model class whose
hyperparameters changed since converts them in its ``upgrade_hparams(hparams, format_version)``.
Format 3 changed the layout of some weights (Allegro's channel weights became irrep-major); a
network whose weights changed converts an older state dict in its
``upgrade_state_dict(state_dict, prefix, format_version)``, called by :func:`load_model`.
Format 4 stored Allegro's tensor-product path weights path-major ([paths, channels]).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from molfold._version import __version__
from molfold.errors import CheckpointError, ConfigError, MissingFileError
from molfold.io import atomic_write
from molfold.models.registry import build_model, model_entry

FORMAT_VERSION = 4
REQUIRED_KEYS = ("name", "kind", "hparams", "dtype", "state_dict")


def checkpoint_payload(model: nn.Module, state_dict: dict | None = None) -> dict[str, Any]:
    """The ``"molfold"`` entry for ``model`` (built by :func:`~molfold.models.registry
    .build_model`); ``state_dict`` replaces its weights (e.g. the EMA average)."""
    state = model.state_dict() if state_dict is None else state_dict
    return {
        "format_version": FORMAT_VERSION,
        "molfold_version": __version__,
        **model.model_info,
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` as a standalone molfold checkpoint, atomically."""
    payload = checkpoint_payload(model)
    atomic_write(path, lambda file: torch.save({"molfold": payload}, file))


def _from_format_1(payload: dict[str, Any]) -> dict[str, Any]:
    upgraded = {k: v for k, v in payload.items() if k not in ("model", "version", "training")}
    upgraded["name"] = payload.get("model")
    upgraded["molfold_version"] = payload.get("version", "unknown")
    if "species" in payload:
        statistics = dict(payload.get("statistics") or {})
        statistics["species"] = list(upgraded.pop("species"))
        upgraded["statistics"] = statistics
    else:
        upgraded["statistics"] = dict(payload.get("training") or {})
    if upgraded["name"] is not None:
        with contextlib.suppress(ConfigError):  # an unknown model is reported by load_model
            cls = model_entry(upgraded["name"]).cls
            upgraded["kind"] = model_entry(upgraded["name"]).kind
            if hasattr(cls, "upgrade_hparams"):  # a model's own changes of its keys
                upgraded["hparams"] = cls.upgrade_hparams(dict(upgraded.get("hparams", {})), 1)
    return upgraded


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The ``"molfold"`` entry of a checkpoint (in the current format), loaded with
    ``weights_only=True``; :class:`CheckpointError` for anything that is not one."""
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
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("molfold"), dict):
        raise CheckpointError(f"{path} is not a molfold checkpoint (no 'molfold' entry)")
    payload = checkpoint["molfold"]
    version = payload.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by molfold {payload.get('molfold_version', '?')} in checkpoint "
            f"format {version}; this molfold ({__version__}) reads formats up to "
            f"{FORMAT_VERSION}: upgrade molfold to load it"
        )
    if version == 1:
        payload = _from_format_1(payload)
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path} is not a complete molfold checkpoint: no {missing} entry")
    return payload


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in ``path`` (by ``molfold train`` or :func:`save_model`), in eval
    mode on ``device``, as :func:`~molfold.models.registry.build_model` builds it for its kind
    (a :class:`~molfold.models.potential.Potential` for potentials). No config file is needed."""
    payload = read_checkpoint(path, "cpu")
    try:
        model = build_model(
            payload["name"],
            payload["hparams"],
            payload["statistics"],
            payload["dtype"],
            payload.get("kind"),
        )
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None
    state_dict = payload["state_dict"]
    network = getattr(model, "model", model)
    version = payload.get("format_version", 1)
    if version < FORMAT_VERSION and hasattr(network, "upgrade_state_dict"):
        prefix = "" if network is model else "model."
        state_dict = network.upgrade_state_dict(state_dict, prefix, version)
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as error:
        reason = str(error).splitlines()[0]
        raise CheckpointError(
            f"weights in {path} do not fit the model they name: {reason}"
        ) from None
    model.checkpoint_info = {"path": str(path), "molfold_version": payload["molfold_version"]}
    return model.to(torch_device(device)).eval()


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`; ConfigError for a name torch does not know
    (``"gpu"``) or a device this machine lacks (``"cuda"`` without CUDA)."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(
            f"unknown device {device!r}: use cpu, cuda, cuda:<index> or mps ({error})"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but this torch has no CUDA device")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} asked for, but MPS is not available")
    return resolved
