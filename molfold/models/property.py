"""A property model: graph targets (and per-atom vectors) of a 3D structure, in physical units.

:class:`PropertyModel` wraps a network of kind ``property``
(``network(data, atom_types) -> {"graph": [B, T], "atom_vectors": [N, 3]?}``, its graph output
in standardised units) and adds what every property model needs:

* the map from atomic numbers to type indices (:class:`~molfold.models.species.SpeciesTypes`),
  with a clear error for elements the model was not trained on;
* the target names and the training split's mean and standard deviation of each target, stored
  with the weights, so that ``target = mean + std * graph`` comes out in the target's units (the
  reference Equiformer standardises the same way in its training loop, outside the network;
  a target trained unstandardised has mean 0 and std 1).

Per-atom vectors (the IS2RS auxiliary head: displacement from the initial to the relaxed
position, Angstrom) pass through unscaled.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.models.species import SpeciesModel

TARGET_OUTPUT = "target"  # [B, T] graph targets in their units
ATOM_VECTORS_OUTPUT = "atom_vectors"  # [N, 3] Angstrom


class PropertyModel(SpeciesModel):
    """Graph targets in physical units from a standardised property network.

    Parameters
    ----------
    network : ``network(data, atom_types [N]) -> dict`` with ``graph`` [B, T]
    species : atomic numbers the model knows; ``species[t]`` is type index t
    names : the T target names, in output order
    means, stds : [T] mean and standard deviation of each target on the training split
    units : [T] unit of each target (for tables), optional
    """

    def __init__(
        self,
        network: nn.Module,
        species: Sequence[int],
        names: Sequence[str],
        means: Sequence[float],
        stds: Sequence[float],
        units: Sequence[str] | None = None,
    ) -> None:
        if not (len(names) == len(means) == len(stds)) or not names:
            raise ValueError(f"targets need as many means and stds as names, got {list(names)}")
        if min(stds) <= 0:
            raise ValueError(f"target standard deviations must be > 0, got {list(stds)}")
        super().__init__(network, species)
        self.names = list(names)
        self.units = list(units) if units is not None else [""] * len(self.names)
        self.register_buffer("means", torch.tensor(list(means), dtype=torch.float64))
        self.register_buffer("stds", torch.tensor(list(stds), dtype=torch.float64))

    def forward(self, data: Data) -> dict[str, torch.Tensor]:
        """``target`` [B, T] in the targets' units (float64) and, when the network has the
        head, ``atom_vectors`` [N, 3] Angstrom."""
        atom_types = self.atom_types(data[G.Z])
        data = copy.copy(data)  # shallow: the caller's graph keeps its own tensors
        if G.BATCH not in data:
            data[G.BATCH] = atom_types.new_zeros(atom_types.shape[0])
        data[G.POS] = data[G.POS].to(self.dtype)
        data[G.CELL] = data[G.CELL].to(self.dtype)
        data[G.EDGE_CELL_SHIFT] = data[G.EDGE_CELL_SHIFT].to(self.dtype)
        out = self.model(data, atom_types)
        result = {TARGET_OUTPUT: self.means + self.stds * out["graph"].double()}
        if ATOM_VECTORS_OUTPUT in out:
            result[ATOM_VECTORS_OUTPUT] = out[ATOM_VECTORS_OUTPUT]
        return result
