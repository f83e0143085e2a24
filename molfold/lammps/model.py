"""The potential that ``pair_style molfold MODEL`` names, and the elements of ``pair_coeff``."""

from __future__ import annotations

import torch
from ase.data import atomic_numbers, chemical_symbols

from molfold.errors import ConfigError, MolfoldError
from molfold.lammps.script import PairStyle
from molfold.models.checkpoint import load_model, torch_device
from molfold.models.potential import Potential


def rank_device(name: str | None, local_rank: int) -> torch.device:
    """The torch device of a rank: ``name`` as given, or, when None, one CUDA device per rank of a
    node (round robin) where CUDA is available and the CPU otherwise."""
    if name is not None:
        return torch_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def load_potential(style: PairStyle, local_rank: int, where: str) -> Potential:
    """The checkpoint ``style.model`` on this rank's device, in ``style.dtype`` when given;
    ConfigError, naming ``where`` (the script line), for a file that is missing, unreadable or
    not a potential."""
    try:
        model = load_model(style.model, rank_device(style.device, local_rank))
    except MolfoldError as error:
        raise ConfigError(f"{where}: {error}") from None
    if not isinstance(model, Potential):
        info = getattr(model, "model_info", {})
        what = f"a {info['kind']} model ({info['name']})" if info else type(model).__name__
        raise ConfigError(
            f"{where}: {style.model} is {what}, not a potential: pair_style molfold needs a model "
            "trained on energies and forces"
        )
    if style.dtype is not None:
        model = model.to(getattr(torch, style.dtype))
    return model


def species_of_types(potential: Potential, elements: list[str], where: str) -> list[int]:
    """Atomic numbers of the element symbols of ``pair_coeff``, one per LAMMPS atom type;
    ConfigError for a symbol that is no element or an element the model does not know."""
    numbers = []
    for element in elements:
        if element not in atomic_numbers or element == "X":
            raise ConfigError(f"{where}: {element!r} in pair_coeff is not an element symbol")
        numbers.append(atomic_numbers[element])
    unknown = sorted({e for e, z in zip(elements, numbers) if z not in potential.species})
    if unknown:
        known = ", ".join(chemical_symbols[z] for z in potential.species)
        raise ConfigError(
            f"{where}: the model was not trained on {', '.join(unknown)}; it knows {known}"
        )
    return numbers
