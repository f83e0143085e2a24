"""The map from atomic numbers to a model's type indices.

A model trained on species ``[1, 6, 8]`` sees H as type 0, C as 1 and O as 2; an element it was
not trained on is an :class:`~molfold.errors.UnknownElementError` that names it, never an index
error deep inside the network. :class:`SpeciesModel` is what potentials and property models
share: the network they wrap and this map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from molfold.errors import UnknownElementError

MAX_Z = 118


class SpeciesTypes(nn.Module):
    """Type indices of atomic numbers: ``species[t]`` is type ``t``.

    Parameters
    ----------
    species : the distinct atomic numbers a model knows, in type order
    """

    def __init__(self, species: Sequence[int]) -> None:
        super().__init__()
        self.species = [int(z) for z in species]
        if len(set(self.species)) != len(self.species) or not all(
            1 <= z <= MAX_Z for z in self.species
        ):
            raise ValueError(f"species must be distinct atomic numbers, got {self.species}")
        type_of_z = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        type_of_z[self.species] = torch.arange(len(self.species))
        self.register_buffer("type_of_z", type_of_z, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Type indices [N] of atomic numbers ``z`` [N]; :class:`UnknownElementError` for
        elements outside :attr:`species`."""
        types = self.type_of_z[z.clamp(0, MAX_Z)]
        if bool((types < 0).any()):
            from ase.data import chemical_symbols

            unknown = sorted({int(v) for v in z[types < 0]})
            names = ", ".join(chemical_symbols[v] if 0 < v <= MAX_Z else str(v) for v in unknown)
            known = ", ".join(chemical_symbols[v] for v in self.species)
            raise UnknownElementError(
                f"the model was not trained on element(s) {names}; it knows only {known}"
            )
        return types


class SpeciesModel(nn.Module):
    """A network of atomic structures (``model(data, atom_types)``) with the species map it was
    trained with: the base of :class:`~molfold.models.potential.Potential` and
    :class:`~molfold.models.property.PropertyModel`."""

    def __init__(self, model: nn.Module, species: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.types = SpeciesTypes(species)

    @property
    def r_max(self) -> float:
        """The network's cutoff radius, Angstrom."""
        return self.model.r_max

    @property
    def species(self) -> list[int]:
        """Atomic numbers the model knows; ``species[t]`` is type index t."""
        return self.types.species

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the network's weights and of positions inside it."""
        for tensor in self.model.parameters():
            return tensor.dtype
        return torch.get_default_dtype()

    def atom_types(self, z: torch.Tensor) -> torch.Tensor:
        """Type indices [N] of atomic numbers [N]; :class:`UnknownElementError` for the others."""
        return self.types(z)
