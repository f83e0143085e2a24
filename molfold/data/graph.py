"""The atomic graph: field names, shapes and units, in one place.

A structure is a torch-geometric :class:`~torch_geometric.data.Data` with these fields (a batch of
structures adds ``batch`` [N] and ``ptr`` [B+1]):

=================  ==========  ===========  ===============================================
field              shape       unit         meaning
=================  ==========  ===========  ===============================================
``pos``            [N, 3]      Angstrom     Cartesian positions
``z``              [N]         --           atomic numbers (int64)
``cell``           [1, 3, 3]   Angstrom     lattice vectors as rows; zeros when not periodic
``pbc``            [1, 3]      --           periodicity along each lattice vector (bool)
``edge_index``     [2, E]      --           ``edge_index[0]`` = neighbour j (source),
                                            ``edge_index[1]`` = centre i (target)
``edge_cell_shift`` [E, 3]     cell units   integer image of j: r_ij = pos[j] - pos[i] + S @ cell
``energy``         [1]         eV           total energy
``forces``         [N, 3]      eV/Angstrom  forces, -dE/dpos
``stress``         [1, 3, 3]   eV/A^3       stress, (1/V) dE/d(strain)
``tags``           [N]         --           OC20 atom role (int64): 0 sub-surface, 1 surface,
                                            2 adsorbate
``fixed``          [N]         --           atom held fixed in the DFT relaxation (bool)
``sid``            [1]         --           OC20 system id (int64; -1 when absent)
``fid``            [1]         --           OC20 frame id in the system's relaxation (int64;
                                            -1 when absent)
``target``         [1, T]      per target   graph-level targets of a property model (OC20
                                            IS2RE: T = 1, relaxed adsorption energy, eV)
``energy_init``    [1]         eV           OC20 IS2RE: energy of the initial structure
``pos_relaxed``    [N, 3]      Angstrom     OC20 IS2RE: positions after relaxation
=================  ==========  ===========  ===============================================

Cell shifts are kept in integer cell units rather than Angstrom so that edge vectors are a
differentiable function of both positions and cell: the stress then follows from a strain
derivative (see :mod:`molfold.models.potential`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from molfold.errors import DataError

POS = "pos"  # [N, 3] Angstrom
Z = "z"  # [N] atomic numbers
CELL = "cell"  # [1, 3, 3] Angstrom, lattice vectors as rows
PBC = "pbc"  # [1, 3] bool
EDGE_INDEX = "edge_index"  # [2, E]: row 0 neighbour j, row 1 centre i
EDGE_CELL_SHIFT = "edge_cell_shift"  # [E, 3] integer cell units, stored as the float dtype of pos
BATCH = "batch"  # [N] index of the structure each atom belongs to
ENERGY = "energy"  # [1] (batched: [B]) eV
FORCES = "forces"  # [N, 3] eV/Angstrom
STRESS = "stress"  # [1, 3, 3] (batched: [B, 3, 3]) eV/Angstrom^3
ATOMIC_ENERGY = "atomic_energy"  # [N] eV, per-atom energies from a model
POS_INTERMEDIATE = "pos_intermediate"  # [N, 3] Angstrom, a two-stage conformer model's first guess
POS_START = (
    "pos_start"  # [N, 3] Angstrom, the (ETKDG + MMFF) conformer a refining model starts from
)
START_METHOD = "start_method"  # [1] int64, how pos_start was made (conformers.starts.START_METHODS)
ATOM_FEATURES = "atom_features"  # [N, 9] categorical atom features (molfold.data.molgraph)
BOND_INDEX = "bond_index"  # [2, 2B] bonds of the 2D molecular graph, both directions
BOND_TYPE = "bond_type"  # [2B] 1 single, 2 double, 3 triple, 4 aromatic
TAGS = "tags"  # [N] int64, OC20 atom role: 0 sub-surface, 1 surface, 2 adsorbate
FIXED = "fixed"  # [N] bool, atom fixed in the DFT relaxation
SID = "sid"  # [1] int64, OC20 system id (-1: absent)
GROUP = "group"  # [1] int64, the group a structure belongs to (data.group_key: its molecule)
FID = "fid"  # [1] int64, OC20 frame id within the system's relaxation (-1: absent)
TARGET = "target"  # [1, T] (batched: [B, T]) graph-level targets; OC20 IS2RE: T = 1, eV
ENERGY_INIT = "energy_init"  # [1] eV, OC20 IS2RE energy of the initial structure
POS_RELAXED = "pos_relaxed"  # [N, 3] Angstrom, OC20 IS2RE relaxed positions
EDGE_VECTORS = "edge_vectors"  # [E, 3] Angstrom, r_ij when set by the caller (see edge_vectors)


def edge_vectors(data: Data) -> torch.Tensor:
    """Vectors r_ij = pos[j] - pos[i] + S_ij @ cell from each centre i to its neighbour j.

    Returns a tensor of shape [E, 3] in Angstrom, differentiable with respect to ``pos`` and
    ``cell``; or ``data[EDGE_VECTORS]`` where a caller has set it (a potential differentiating
    with respect to the edge vectors themselves).
    """
    if EDGE_VECTORS in data:
        return data[EDGE_VECTORS]
    j, i = data[EDGE_INDEX]
    vectors = data[POS][j] - data[POS][i]
    shift = data[EDGE_CELL_SHIFT]
    cell = data[CELL]
    if cell.shape[0] == 1:
        return vectors + shift @ cell[0]
    graph_of_edge = data[BATCH][i]
    return vectors + torch.einsum("ek,ekl->el", shift, cell[graph_of_edge])


def validate_structure(
    z: np.ndarray, pos: np.ndarray, cell: np.ndarray | None = None, where: str = "structure"
) -> None:
    """Raise :class:`DataError` naming ``where`` if shapes or values are unusable.

    ``z`` [N] positive integers, ``pos`` [N, 3] finite, ``cell`` [3, 3] finite when given.
    """
    z = np.asarray(z)
    pos = np.asarray(pos)
    if z.ndim != 1 or len(z) == 0:
        raise DataError(f"{where}: atomic numbers must have shape [N] with N > 0, got {z.shape}")
    if pos.shape != (len(z), 3):
        raise DataError(f"{where}: positions must have shape [{len(z)}, 3], got {pos.shape}")
    if not np.issubdtype(z.dtype, np.integer) or z.min() < 1 or z.max() > 118:
        raise DataError(f"{where}: atomic numbers must be integers in 1..118, got {z[:10]}...")
    if not np.isfinite(pos).all():
        bad = np.unique(np.nonzero(~np.isfinite(pos))[0])
        raise DataError(f"{where}: positions contain NaN or inf at atoms {bad.tolist()[:10]}")
    if cell is not None:
        cell = np.asarray(cell)
        if cell.shape != (3, 3) or not np.isfinite(cell).all():
            raise DataError(f"{where}: cell must be a finite [3, 3] array, got {cell.tolist()}")
