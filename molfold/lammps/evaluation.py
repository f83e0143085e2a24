"""A molfold potential on one MPI rank's atoms: energy, forces and virial of its share.

LAMMPS gives each rank its *local* atoms (the ones it owns and integrates) followed by *ghost*
atoms: copies of atoms owned by other ranks, or periodic images, within the ghost cutoff of the
rank's sub-domain. Two ways to evaluate a model on them:

``whole`` (one rank, any potential)
    The local atoms are the whole system. The graph is built on them with the periodic cell
    (vesin, triclinic included), exactly as :class:`molfold.MolfoldCalculator` builds it; ghosts
    are not used.

``domain`` (any number of ranks, strictly local models: Allegro)
    A strictly local model writes the energy as E = sum_i E_i, where E_i depends only on the edges
    (i, j) centred at i, j within r_max. The force on a local atom k needs every E_i that depends
    on x_k, i.e. every centre i within r_max of k, and each such E_i needs the neighbours of i:
    atoms within 2 r_max of k. With a ghost shell of 2 r_max this rank therefore builds the graph
    of local and ghost atoms (no periodicity: ghosts are the images), computes E_i for the
    *counted* centres C (local atoms and every atom within r_max of one), and takes
    F_k = -d(sum_{i in C} E_i)/dx_k for its local atoms k. Each rank's forces on its own atoms are
    exact; no force on a ghost has to be sent back to its owner.

Along a periodic direction that LAMMPS did not split among ranks (``processors 2 1 1`` leaves
b and c whole), a rank's ghosts are its own atoms' periodic images. :func:`fold_images` keeps one
copy of each atom per image across the split directions and makes the graph periodic along the
others, so that energies are computed twice only for atoms across a domain boundary, not for
the rank's own images (by geometry, on 2 ranks of a 36 A Cu cube with r_max 4.2 A, from about
2.2 to 1.5 times the local atoms).

The energy of a rank is the sum of E_i over its local atoms only, so the ranks' energies add up to
the total. Its virial is that of the same local energies:
W = -sum_{edges e centred at a local atom} r_e (x) dE/dr_e. As E_i depends on positions only
through the edge vectors r_e, dE_C/dr_e = dE_i/dr_e for an edge centred at i, so one backward pass
gives the forces and the virial. Summed over ranks it is -dE/d(strain), the strain derivative of
:mod:`molfold.models.potential` (``W = -V sigma``, sigma the stress). The same formula gives the
virial in ``whole`` mode, where the edge vectors include the periodic offsets.

Edges carry their offsets in Angstrom (``r_e = x_j - x_i + offset_e``, the offsets a leaf tensor
with ``cell`` = identity), so that the backward pass returns dE/dr_e directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.data.neighbors import MIN_DISTANCE, neighbor_list
from molfold.errors import DataError
from molfold.models.potential import Potential

VIRIAL_ORDER = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
"""LAMMPS's order of the six virial components: xx, yy, zz, xy, xz, yz."""


@dataclass
class RankResult:
    """What one rank contributes, in eV and Angstrom (float64 numpy).

    energy : sum of the per-atom energies of the local atoms, eV
    forces : [nlocal, 3] forces on the local atoms, eV/Angstrom
    virial : [6] virial of the local energies (xx, yy, zz, xy, xz, yz), eV
    atom_energies : [nlocal] per-atom energies, eV
    atom_virials : [nlocal, 6] virial of each local atom's energy, eV (edges assigned to their
        centre)
    """

    energy: float
    forces: np.ndarray
    virial: np.ndarray
    atom_energies: np.ndarray
    atom_virials: np.ndarray


@dataclass
class Box:
    """The simulation box as one rank sees it.

    cell : [3, 3] lattice vectors as rows, Angstrom
    origin : [3] the box's low corner, Angstrom
    folded : [3] bool, lattice directions that are periodic and not split among ranks: this
        rank's atoms and ghosts span the whole box along them
    """

    cell: np.ndarray
    origin: np.ndarray
    folded: np.ndarray


def fold_images(positions: np.ndarray, tags: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """One copy of each atom per periodic image across the split directions.

    Copies of an atom (same tag) that differ only by lattice vectors along ``box.folded`` are
    one atom of a graph periodic along those directions; copies that differ along a split
    direction stay distinct. The first copy is kept (local atoms come first, so they are kept
    and stay first), wrapped into the box along the folded directions. Returns the kept indices
    [M] (ascending) and their positions [M, 3].
    """
    fractional = (positions - box.origin) @ np.linalg.inv(box.cell)
    folded, split = box.folded, ~box.folded
    wrapped = positions - np.floor(fractional[:, folded]) @ box.cell[folded]
    unique_tags, first = np.unique(tags, return_index=True)
    reference = fractional[first][np.searchsorted(unique_tags, tags)]
    # integer image across the split directions, relative to the atom's first copy
    image = np.rint(fractional[:, split] - reference[:, split]).astype(np.int64)
    _, kept = np.unique(np.column_stack([tags, image]), axis=0, return_index=True)
    kept.sort()
    return kept, wrapped[kept]


def strictly_local(potential: Potential) -> bool:
    """Whether the potential's per-atom energy E_i depends only on the edges centred at i (a class
    attribute ``strictly_local`` of its network; Allegro sets it)."""
    return bool(getattr(potential.model, "strictly_local", False))


class RankEvaluator:
    """Evaluates ``potential`` on the atoms of one rank (see the module docstring).

    Parameters
    ----------
    potential : the model, in eval mode on its device
    species_of_type : [ntypes + 1] atomic number of each LAMMPS atom type (index 0 unused)
    """

    def __init__(self, potential: Potential, species_of_type: np.ndarray) -> None:
        self.potential = potential
        self.r_max = float(potential.r_max)
        self.device = next(iter(potential.buffers())).device
        self.species_of_type = np.asarray(species_of_type, dtype=np.int64)
        self.last_model_seconds = 0.0  # wall time of the last model call, forward and backward

    def whole(
        self, positions: np.ndarray, types: np.ndarray, cell: np.ndarray, pbc: np.ndarray
    ) -> RankResult:
        """All atoms on this rank: ``positions`` [N, 3] Angstrom, ``types`` [N] LAMMPS types,
        ``cell`` [3, 3] lattice vectors as rows, ``pbc`` [3] bool."""
        edge_index, shift, distance = neighbor_list(positions, self.r_max, cell, pbc)
        offsets = shift.astype(np.float64) @ np.asarray(cell, dtype=np.float64)
        counted = np.ones(len(positions), dtype=bool)
        return self._evaluate(positions, types, edge_index, offsets, distance, counted, None)

    def domain(
        self,
        positions: np.ndarray,
        types: np.ndarray,
        nlocal: int,
        box: Box | None = None,
        tags: np.ndarray | None = None,
    ) -> RankResult:
        """Local atoms ``positions[:nlocal]`` and ghosts ``positions[nlocal:]`` (Angstrom), with a
        ghost shell of at least 2 r_max around the sub-domain.

        With ``box`` and ``tags`` (atom IDs [N]), ghosts that are periodic images along the
        box's ``folded`` directions (those LAMMPS did not split among ranks) are replaced by a
        graph periodic along them (:func:`fold_images`): then only atoms across the split
        directions are counted twice, not the rank's own periodic images."""
        offsets_of = np.zeros((3, 3))
        if box is not None and box.folded.any():
            kept, positions = fold_images(positions, tags, box)
            types = types[kept]
            edge_index, shift, distance = neighbor_list(positions, self.r_max, box.cell, box.folded)
            offsets_of = box.cell
        else:
            edge_index, shift, distance = neighbor_list(positions, self.r_max)
        neighbour, centre = edge_index
        counted = np.zeros(len(positions), dtype=bool)
        counted[:nlocal] = True
        counted[neighbour[centre < nlocal]] = True  # every atom within r_max of a local atom
        keep = counted[centre]
        edge_index, distance = edge_index[:, keep], distance[keep]
        offsets = shift[keep].astype(np.float64) @ offsets_of
        # only the counted centres and their neighbours enter the model; local atoms first
        used = np.zeros(len(positions), dtype=bool)
        used[:nlocal] = True
        used[edge_index[0]] = True
        used[edge_index[1]] = True
        index = np.flatnonzero(used)
        renumber = np.full(len(positions), -1, dtype=np.int64)
        renumber[index] = np.arange(len(index))
        return self._evaluate(
            positions[index], types[index], renumber[edge_index], offsets, distance,
            counted[index], nlocal,
        )  # fmt: skip

    def _evaluate(
        self,
        positions: np.ndarray,
        types: np.ndarray,
        edge_index: np.ndarray,
        offsets: np.ndarray,
        distance: np.ndarray,
        counted: np.ndarray,
        nlocal: int | None,
    ) -> RankResult:
        """The model on a graph whose edges carry Angstrom offsets; ``counted`` [N] marks the
        centres whose energies are differentiated, the first ``nlocal`` atoms (all when None) are
        this rank's own."""
        nlocal = len(positions) if nlocal is None else nlocal
        if nlocal == 0:
            return RankResult(0.0, np.zeros((0, 3)), np.zeros(6), np.zeros(0), np.zeros((0, 6)))
        if not np.isfinite(positions[:nlocal]).all():
            bad = np.flatnonzero(~np.isfinite(positions[:nlocal]).all(axis=1))
            raise DataError(f"non-finite positions of {len(bad)} atoms (the simulation blew up)")
        if len(distance) and distance.min() < MIN_DISTANCE:
            raise DataError(
                f"two atoms are {distance.min():.3g} A apart (less than {MIN_DISTANCE} A): "
                "the simulation blew up or atoms overlap"
            )
        device, dtype = self.device, torch.float64
        pos = torch.as_tensor(positions, dtype=dtype, device=device).requires_grad_(True)
        edge_offsets = torch.as_tensor(offsets, dtype=dtype, device=device).requires_grad_(True)
        data = Data(
            pos=pos,
            z=torch.as_tensor(self.species_of_type[types], device=device),
            cell=torch.eye(3, dtype=dtype, device=device).unsqueeze(0),
            pbc=torch.zeros(1, 3, dtype=torch.bool, device=device),
            edge_index=torch.as_tensor(edge_index, device=device),
            edge_cell_shift=edge_offsets,
        )
        start = time.perf_counter()
        with torch.enable_grad():
            atom_energies = self.potential(data, compute_forces=False)[G.ATOMIC_ENERGY]
            counted_mask = torch.as_tensor(counted, device=device)
            counted_energy = atom_energies[counted_mask].sum()
            grad_pos, grad_offsets = torch.autograd.grad(
                counted_energy, [pos, edge_offsets], allow_unused=True
            )
        self.last_model_seconds = time.perf_counter() - start
        if grad_pos is None:  # no edges: nothing depends on the positions
            grad_pos, grad_offsets = torch.zeros_like(pos), torch.zeros_like(edge_offsets)
        neighbour, centre = data[G.EDGE_INDEX]
        if nlocal < len(positions):  # the virial of the local atoms' energies only
            local_edges = centre < nlocal
            neighbour, centre = neighbour[local_edges], centre[local_edges]
            edge_offsets, grad_offsets = edge_offsets[local_edges], grad_offsets[local_edges]
        vectors = (pos[neighbour] - pos[centre] + edge_offsets).detach()
        rows, columns = (list(axes) for axes in zip(*VIRIAL_ORDER))
        # -r (x) dE/dr, symmetrised (the strain is symmetric), in LAMMPS's 6-component order
        per_edge = -0.5 * (
            vectors[:, rows] * grad_offsets[:, columns]
            + vectors[:, columns] * grad_offsets[:, rows]
        )
        atom_virials = per_edge.new_zeros(nlocal, 6).index_add_(0, centre, per_edge)
        local_energies = atom_energies[:nlocal].detach()
        return RankResult(
            energy=float(local_energies.sum()),
            forces=(-grad_pos[:nlocal]).cpu().numpy(),
            virial=atom_virials.sum(0).cpu().numpy(),
            atom_energies=local_energies.cpu().numpy(),
            atom_virials=atom_virials.cpu().numpy(),
        )
