"""An interatomic potential: per-atom energies -> total energy, forces and stress.

:class:`Potential` wraps any energy model (``model(data, atom_types) -> [N]`` per-atom energies)
and adds what every machine-learned potential needs:

* the map from atomic numbers to the model's type indices, with a clear error for elements the
  model was not trained on;
* per-species scale and shift, E_i = scale[s_i] * e_i + shift[s_i], fitted from the training set
  (:func:`molfold.data.statistics.fit_statistics`) and stored with the weights; they and the
  energies are float64 whatever the model's dtype, as total energies need it for meV accuracy;
* forces F = -dE/dpos by autograd, and the stress sigma = (1/V) dE/d(strain) for periodic cells,
  from a symmetric-gradient strain applied to positions and cell (Knuth et al., Comput. Phys.
  Commun. 190, 33 (2015)), the convention of ASE.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.models.species import SpeciesModel


class Potential(SpeciesModel):
    """Energy, forces and stress from a per-atom energy model.

    Parameters
    ----------
    model : ``model(data, atom_types [N]) -> [N]`` per-atom energies in units of ``scales``
    species : atomic numbers the model knows; ``species[t]`` is type index t
    scales, shifts : per-species energy scale and shift, eV ([T] or one value for all)
    """

    def __init__(
        self,
        model: nn.Module,
        species: Sequence[int],
        scales: Sequence[float] | float = 1.0,
        shifts: Sequence[float] | float = 0.0,
    ) -> None:
        super().__init__(model, species)
        # float64 whatever the model dtype: total energies of ~1e3-1e5 eV need it for meV accuracy
        self.register_buffer(
            "scales", torch.ones(len(self.species), dtype=torch.float64) * torch.as_tensor(scales)
        )
        self.register_buffer(
            "shifts", torch.zeros(len(self.species), dtype=torch.float64) + torch.as_tensor(shifts)
        )

    def forward(
        self, data: Data, compute_forces: bool = True, compute_stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Outputs for a graph or batch of graphs.

        Returns ``energy`` [B] eV, ``atomic_energy`` [N] eV, and, when asked, ``forces`` [N, 3]
        eV/Angstrom and ``stress`` [B, 3, 3] eV/Angstrom^3 (zero for graphs without a cell).
        Gradients keep their graph while the module is training, so force losses can be
        back-propagated.
        """
        atom_types = self.atom_types(data[G.Z])
        num_atoms = atom_types.shape[0]
        batch = data[G.BATCH] if G.BATCH in data else atom_types.new_zeros(num_atoms)
        num_graphs = data.num_graphs if hasattr(data, "num_graphs") else 1
        data = copy.copy(data)  # shallow: the caller's graph keeps its own tensors
        data[G.BATCH] = batch

        pos = data[G.POS].to(self.dtype)
        if (compute_forces or compute_stress) and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        cell = data[G.CELL].to(self.dtype).view(-1, 3, 3)
        inputs = [pos]
        if compute_stress:
            # symmetric strain eps: r -> r (1 + eps), cell -> cell (1 + eps)
            strain = torch.zeros(num_graphs, 3, 3, dtype=self.dtype, device=pos.device)
            strain.requires_grad_(True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            pos = pos + torch.einsum("ni,nij->nj", pos, symmetric[batch])
            cell = cell + torch.bmm(cell, symmetric)
            inputs.append(strain)
        data[G.POS], data[G.CELL] = pos, cell
        data[G.EDGE_CELL_SHIFT] = data[G.EDGE_CELL_SHIFT].to(self.dtype)

        per_atom = self.model(data, atom_types)
        atomic_energy = self.scales[atom_types] * per_atom.double() + self.shifts[atom_types]
        energy = atomic_energy.new_zeros(num_graphs).index_add_(0, batch, atomic_energy)
        out = {G.ENERGY: energy, G.ATOMIC_ENERGY: atomic_energy}
        if compute_forces or compute_stress:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=self.training, allow_unused=True
            )
            out[G.FORCES] = -grads[0] if grads[0] is not None else torch.zeros_like(pos)
            if compute_stress:
                volume = torch.linalg.det(cell).abs().detach()
                de_dstrain = grads[1] if grads[1] is not None else torch.zeros_like(strain)
                safe = torch.where(volume > 0, volume, torch.ones_like(volume))
                out[G.STRESS] = torch.where(
                    (volume > 0).view(-1, 1, 1), de_dstrain / safe.view(-1, 1, 1), 0.0
                )
        return out
