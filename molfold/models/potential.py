"""An interatomic potential: per-atom energies -> total energy, forces and stress.

:class:`Potential` wraps any energy model (``model(data, atom_types) -> [N]`` per-atom energies)
and adds what every machine-learned potential needs:

* the map from atomic numbers to the model's type indices, with a clear error for elements the
  model was not trained on;
* per-species scale and shift, E_i = scale[s_i] * e_i + shift[s_i], fitted from the training set
  (:func:`molfold.data.statistics.fit_statistics`) and stored with the weights; they and the
  energies are float64 whatever the model's dtype, as total energies need it for meV accuracy;
* forces F = -dE/dpos and the stress sigma = (1/V) dE/d(strain) for periodic cells (a symmetric
  strain applied to positions and cell; Knuth et al., Comput. Phys. Commun. 190, 33 (2015), the
  convention of ASE), both from one autograd derivative dE/dr_e of the edge vectors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.models.species import SpeciesModel

EdgeGradient = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]
"""``(vectors [E, 3], edge_index [2, E], atom_types [N]) -> (per_atom [N], dE/dr_e [E, 3])``:
a replacement for the model call and its autograd derivative (compiled training,
:class:`molfold.compiled.training.CompiledEdgeGradient`)."""


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
        self,
        data: Data,
        compute_forces: bool = True,
        compute_stress: bool = False,
        edge_gradient: EdgeGradient | None = None,
    ) -> dict[str, torch.Tensor]:
        """Outputs for a graph or batch of graphs.

        Returns ``energy`` [B] eV, ``atomic_energy`` [N] eV, and, when asked, ``forces`` [N, 3]
        eV/Angstrom and ``stress`` [B, 3, 3] eV/Angstrom^3 (zero for graphs without a cell).
        Gradients keep their graph while the module is training, so force losses can be
        back-propagated.

        Forces and stress come from one derivative, dE/dr_e of the edge vectors
        (:func:`forces_and_stress`); without them the energies stay differentiable in ``pos``,
        ``cell`` and the edge shifts, for callers that take their own derivatives.

        ``edge_gradient``, if given, computes the per-atom outputs and dE/dr_e in place of the
        model and autograd (used only when forces or stress are asked for).
        """
        atom_types = self.atom_types(data[G.Z])
        data, num_graphs = graph_in_dtype(data, self.dtype)
        batch = data[G.BATCH]
        differentiate = compute_forces or compute_stress
        if differentiate:
            vectors = G.edge_vectors(data).detach().requires_grad_(True)
            data[G.EDGE_VECTORS] = vectors

        if differentiate and edge_gradient is not None:
            per_atom, gradient = edge_gradient(vectors.detach(), data[G.EDGE_INDEX], atom_types)
            out = total_energies(per_atom, atom_types, self.scales, self.shifts, batch, num_graphs)
            out.update(forces_and_stress(data, gradient, num_graphs, compute_stress))
            return out
        per_atom = self.model(data, atom_types)
        out = total_energies(per_atom, atom_types, self.scales, self.shifts, batch, num_graphs)
        if differentiate:
            (gradient,) = torch.autograd.grad(
                out[G.ENERGY].sum(), [vectors], create_graph=self.training, allow_unused=True
            )
            gradient = torch.zeros_like(vectors) if gradient is None else gradient
            out.update(forces_and_stress(data, gradient, num_graphs, compute_stress))
        return out


def graph_in_dtype(data: Data, dtype: torch.dtype) -> tuple[Data, int]:
    """A shallow copy of ``data`` (the caller's graph keeps its own tensors) with ``batch`` set
    (zeros for a single graph) and positions, cell [B, 3, 3] and edge shifts in ``dtype``; and
    the number of graphs."""
    num_graphs = data.num_graphs if hasattr(data, "num_graphs") else 1
    batch = data[G.BATCH] if G.BATCH in data else data[G.Z].new_zeros(data[G.Z].shape[0])
    data = copy.copy(data)
    data[G.BATCH] = batch
    data[G.POS] = data[G.POS].to(dtype)
    data[G.CELL] = data[G.CELL].to(dtype).view(-1, 3, 3)
    data[G.EDGE_CELL_SHIFT] = data[G.EDGE_CELL_SHIFT].to(dtype)
    return data, num_graphs


def total_energies(
    per_atom: torch.Tensor,
    atom_types: torch.Tensor,
    scales: torch.Tensor,
    shifts: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
) -> dict[str, torch.Tensor]:
    """``energy`` [B] and ``atomic_energy`` [N] (float64, eV) from a model's per-atom outputs
    e_i [N]: E_i = scale[s_i] e_i + shift[s_i] (``scales``, ``shifts`` [T] float64), summed over
    each graph's atoms."""
    atomic_energy = scales[atom_types] * per_atom.double() + shifts[atom_types]
    energy = atomic_energy.new_zeros(num_graphs).index_add_(0, batch, atomic_energy)
    return {G.ENERGY: energy, G.ATOMIC_ENERGY: atomic_energy}


def forces_and_stress(
    data: Data, gradient: torch.Tensor, num_graphs: int, compute_stress: bool
) -> dict[str, torch.Tensor]:
    """Forces [N, 3] (eV/A) and, if asked, stress [B, 3, 3] (eV/A^3) from dE/dr_e [E, 3].

    With r_e = pos[j] - pos[i] + S_e cell for the edge from centre i to neighbour j, the force on
    an atom is the sum of dE/dr_e over the edges it centres minus the sum over the edges it ends.
    A symmetric strain eps maps every r_e to r_e (1 + eps), so dE/d(eps) = sum_e r_e (x) dE/dr_e,
    symmetrised, and the stress is that over the cell volume (the convention of ASE; zero for a
    graph without a cell). Valid for any model whose energy depends on the positions only through
    the edge vectors, as every molfold potential does.
    """
    neighbour, centre = data[G.EDGE_INDEX]
    num_atoms = data[G.POS].shape[0]
    forces = gradient.new_zeros(num_atoms, 3).index_add_(0, centre, gradient)
    out = {G.FORCES: forces.index_add_(0, neighbour, gradient, alpha=-1.0)}
    if compute_stress:
        vectors = data[G.EDGE_VECTORS].detach()
        if num_graphs == 1:  # one cell (MD): no [E, 3, 3] temporary
            de_dstrain = (vectors.t() @ gradient).unsqueeze(0)
        else:
            per_edge = vectors.unsqueeze(2) * gradient.unsqueeze(1)  # [E, 3, 3]
            graph_of_edge = data[G.BATCH][centre]
            de_dstrain = per_edge.new_zeros(num_graphs, 3, 3).index_add_(0, graph_of_edge, per_edge)
        de_dstrain = 0.5 * (de_dstrain + de_dstrain.transpose(1, 2))
        volume = torch.linalg.det(data[G.CELL]).abs().detach()
        safe = torch.where(volume > 0, volume, torch.ones_like(volume))
        out[G.STRESS] = torch.where(
            (volume > 0).view(-1, 1, 1), de_dstrain / safe.view(-1, 1, 1), 0.0
        )
    return out
