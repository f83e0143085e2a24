"""QM9's targets and the plain-tensor layout that both QM9 readers produce and the cache stores.

:data:`TARGETS` names every target with its unit after loading, its unit in the source files and
the factor between them (:mod:`molfold.units`: Hartree to eV is ``HARTREE_TO_EV``, CODATA 2014);
:data:`ATOMREF` gives the free-atom energies that turn ``U0``, ``U``, ``H`` and ``G`` into
atomization energies. :class:`MoleculeColumns` collects parsed molecules (source units) and
converts them into the tensors described in :func:`molfold.data.sources.qm9.read_qm9`, stamped
with :data:`CACHE_VERSION`. See :mod:`molfold.data.sources.qm9` for the table of targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from molfold.errors import DataError
from molfold.units import HARTREE_TO_EV

# name: (meaning, unit after loading, source unit, factor source -> loaded)
TARGETS: dict[str, tuple[str, str, str, float]] = {
    "mu": ("dipole moment", "Debye", "Debye", 1.0),
    "alpha": ("isotropic polarizability", "a0^3", "a0^3", 1.0),
    "homo": ("HOMO energy", "eV", "Hartree", HARTREE_TO_EV),
    "lumo": ("LUMO energy", "eV", "Hartree", HARTREE_TO_EV),
    "gap": ("HOMO-LUMO gap", "eV", "Hartree", HARTREE_TO_EV),
    "r2": ("electronic spatial extent", "a0^2", "a0^2", 1.0),
    "zpve": ("zero-point vibrational energy", "eV", "Hartree", HARTREE_TO_EV),
    "U0": ("internal energy at 0 K", "eV", "Hartree", HARTREE_TO_EV),
    "U": ("internal energy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "H": ("enthalpy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "G": ("free energy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "Cv": ("heat capacity at 298.15 K", "cal/mol/K", "cal/mol/K", 1.0),
    "U0_atom": ("atomization energy at 0 K", "eV", "Hartree", HARTREE_TO_EV),
    "U_atom": ("atomization energy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "H_atom": ("atomization enthalpy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "G_atom": ("atomization free energy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "A": ("rotational constant A", "GHz", "GHz", 1.0),
    "B": ("rotational constant B", "GHz", "GHz", 1.0),
    "C": ("rotational constant C", "GHz", "GHz", 1.0),
}
"""Every QM9 target: meaning, unit after loading, unit in the source files, conversion factor."""

TARGET_NAMES = tuple(TARGETS)

ATOMREF: dict[str, dict[int, float]] = {
    "U0": {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730},
    "U": {1: -0.498857, 6: -37.845355, 7: -54.582445, 8: -75.063162, 9: -99.717314},
    "H": {1: -0.497912, 6: -37.844411, 7: -54.581501, 8: -75.062219, 9: -99.716370},
    "G": {1: -0.510927, 6: -37.861317, 7: -54.598897, 8: -75.079532, 9: -99.733544},
}
"""Energies of the free atoms H, C, N, O, F in Hartree at B3LYP/6-31G(2df,p), by atomic number:
the ``atomref`` table of Ramakrishnan et al., Sci. Data 1, 140022 (2014) (figshare ``atomref.txt``;
torch-geometric's ``atomrefs`` are these values in eV)."""

N_GDB = 133_885
"""Molecules in the original QM9 release, GDB indices 1..133,885."""
N_UNCHARACTERIZED = 3_054
N_CHARACTERIZED = N_GDB - N_UNCHARACTERIZED  # 130,831

CACHE_VERSION = 2
"""Version of the processed cache's layout and contents; caches of another version are rebuilt
(2: graphs perceived by :mod:`molfold.data.sources.qm9_graph`, charge-aware, strained cages
fixed)."""


class MoleculeColumns:
    """Growing per-molecule arrays, converted to the tensors of the processed cache."""

    def __init__(self) -> None:
        self.z: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []
        self.n_atoms: list[int] = []
        self.idx: list[int] = []
        self.smiles: list[str] = []
        self.targets: list[list[float]] = []
        self.bonds: list[np.ndarray] = []
        self.bond_types: list[np.ndarray] = []
        self.n_bonds: list[int] = []
        self.charges: list[np.ndarray] = []
        self.graph_source: list[int] = []

    def add(
        self,
        idx: int,
        z: Sequence[int],
        pos: np.ndarray,
        targets: dict[str, float],
        smiles: str,
        bonds: Sequence,
        bond_types: Sequence[int],
        charges: Sequence[int],
        graph_source: int,
        where: str,
    ) -> None:
        """Append one molecule.

        Parameters
        ----------
        idx : GDB index (1-based)
        z : [N] atomic numbers (H, C, N, O, F only)
        pos : [N, 3] positions, Angstrom
        targets : every target of :data:`TARGETS` except the ``*_atom`` ones, in source units;
            the atomization energies are added to it (Hartree) from :data:`ATOMREF`
        smiles : the molecule's SMILES
        bonds : [B, 2] atom indices of each bond, once per bond
        bond_types : [B] bond type codes (:data:`~molfold.data.sources.qm9_graph.BOND_TYPE_CODES`)
        charges : [N] formal charges
        graph_source : key of :data:`~molfold.data.sources.qm9_graph.GRAPH_SOURCES`
        where : file and line or molecule, for error messages
        """
        z = np.asarray(z, dtype=np.int64)
        pos = np.asarray(pos, dtype=np.float64)
        if len(z) == 0 or pos.shape != (len(z), 3):
            raise DataError(f"{where}: {len(z)} atoms but positions of shape {pos.shape}")
        if not np.isfinite(pos).all():
            raise DataError(f"{where}: positions contain NaN or inf")
        atom = {}
        for key in ("U0", "U", "H", "G"):
            try:
                atom[key] = targets[key] - sum(ATOMREF[key][int(k)] for k in z)
            except KeyError as error:
                raise DataError(f"{where}: element Z={error} is not H, C, N, O or F") from None
        for key, value in atom.items():
            targets[f"{key}_atom"] = value
        row = [targets[name] * TARGETS[name][3] for name in TARGET_NAMES]
        self.z.append(z)
        self.pos.append(pos)
        self.n_atoms.append(len(z))
        self.idx.append(idx)
        self.smiles.append(smiles)
        self.targets.append(row)
        self.bonds.append(np.asarray(bonds, dtype=np.int64).reshape(-1, 2))
        self.bond_types.append(np.asarray(bond_types, dtype=np.int64))
        self.n_bonds.append(len(bond_types))
        self.charges.append(np.asarray(charges, dtype=np.int64))
        self.graph_source.append(graph_source)

    def tensors(self, source: str) -> dict:
        """The molecules added so far as the cache's dict of plain tensors (``source``: ``"raw"``
        or ``"qm9pack"``); :class:`DataError` if there are none."""
        if not self.idx:
            raise DataError(f"the QM9 {source} source holds no molecules")

        def cat(arrays: list[np.ndarray], shape: tuple[int, ...]) -> torch.Tensor:
            return torch.from_numpy(np.concatenate(arrays).reshape(shape))

        return {
            "version": CACHE_VERSION,
            "source": source,
            "target_names": list(TARGET_NAMES),
            "idx": torch.tensor(self.idx, dtype=torch.int64),
            "n_atoms": torch.tensor(self.n_atoms, dtype=torch.int64),
            "z": cat(self.z, (-1,)),
            "pos": cat(self.pos, (-1, 3)),
            "targets": torch.tensor(self.targets, dtype=torch.float64),
            "smiles": list(self.smiles),
            "n_bonds": torch.tensor(self.n_bonds, dtype=torch.int64),
            "bonds": cat(self.bonds, (-1, 2)),
            "bond_type": cat(self.bond_types, (-1,)),
            "formal_charge": cat(self.charges, (-1,)),
            "graph_source": torch.tensor(self.graph_source, dtype=torch.int64),
        }
