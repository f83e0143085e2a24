"""The ``data=qm9`` source: each molecule's DFT geometry, its targets and its 2D molecular graph.

Each structure carries the DFT geometry (``z``, ``pos`` Angstrom), every target of
:data:`molfold.data.sources.qm9.TARGETS` in its table's units, the GDB index ``idx``, and the 2D
graph (:mod:`molfold.data.molgraph`: ``atom_features``, ``bond_index``, ``bond_type``): the RDKit
graph perceived in the geometry's atom order (:mod:`molfold.data.sources.qm9`) with tetrahedral
chirality assigned from the geometry (GTMGC and ReBind read QM9 from SDF files, whose 3D
coordinates set the chiral tags). So one source serves a conformer model (2D graph -> geometry)
and a 3D model (geometry -> targets, with a radius graph from :mod:`molfold.data.transforms`).

Featurised graphs are cached next to the QM9 cache, so a run does not re-featurise 130k molecules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from molfold.data.graph import CONFORMER_FIELDS
from molfold.data.molgraph import mol_to_graph
from molfold.data.sources import register_source
from molfold.data.sources.qm9_targets import TARGET_NAMES
from molfold.io import atomic_write

FEATURES_VERSION = 3
"""Version of the conformer-graph cache (3: the QM9 targets and GDB index are kept too)."""


def _sanitized(mol):
    """Sanitise in place as far as RDKit allows (hybridisation and rings are needed)."""
    from rdkit import Chem

    failed = Chem.SanitizeMol(mol, catchErrors=True)
    if failed != Chem.SanitizeFlags.SANITIZE_NONE:
        mol.UpdatePropertyCache(strict=False)
        Chem.SanitizeMol(
            mol,
            Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_PROPERTIES,
            catchErrors=True,
        )
    return mol


def _pack(graphs: list[Data]) -> dict[str, Any]:
    return {
        "version": FEATURES_VERSION,
        "n_atoms": torch.tensor([g.num_nodes for g in graphs]),
        "n_bonds": torch.tensor([g.bond_type.numel() for g in graphs]),
        "z": torch.cat([g.z for g in graphs]),
        "atom_features": torch.cat([g.atom_features for g in graphs]),
        "pos": torch.cat([g.pos for g in graphs]),
        "bond_index": torch.cat([g.bond_index for g in graphs], dim=1),
        "bond_type": torch.cat([g.bond_type for g in graphs]),
        "smiles": [g.smiles for g in graphs],
        "name": [g.name for g in graphs],
        "idx": torch.cat([g.idx for g in graphs]),
        "targets": torch.stack([torch.cat([g[t] for t in TARGET_NAMES]) for g in graphs]),
        "target_names": list(TARGET_NAMES),
    }


def _unpack(tensors: dict[str, Any]) -> list[Data]:
    atoms = np.concatenate([[0], np.cumsum(tensors["n_atoms"].numpy())])
    bonds = np.concatenate([[0], np.cumsum(tensors["n_bonds"].numpy())])
    graphs = []
    for m in range(len(tensors["smiles"])):
        a0, a1, b0, b1 = atoms[m], atoms[m + 1], bonds[m], bonds[m + 1]
        graph = Data(
            z=tensors["z"][a0:a1],
            atom_features=tensors["atom_features"][a0:a1],
            pos=tensors["pos"][a0:a1],
            bond_index=tensors["bond_index"][:, b0:b1],
            bond_type=tensors["bond_type"][b0:b1],
            smiles=tensors["smiles"][m],
            name=tensors["name"][m],
            idx=tensors["idx"][m : m + 1],
        )
        for t, target in enumerate(tensors["target_names"]):
            graph[target] = tensors["targets"][m, t : t + 1]
        graph.num_nodes = int(a1 - a0)
        graphs.append(graph)
    return graphs


def qm9_conformer_graphs(
    root: str | None = None, max_molecules: int | None = None, cache_dir: str | None = None
) -> list[Data]:
    """QM9 molecules as conformer graphs (name and ``idx``: the GDB index) with every target of
    :data:`~molfold.data.sources.qm9.TARGETS` ([1] float64 each, in its table's units), through
    a cache next to QM9's."""
    from molfold.data.sources.qm9 import CACHE_VERSION, cache_path, load_qm9, to_rdkit_mol

    qm9_cache = cache_path(root, max_molecules, cache_dir)
    path = qm9_cache.with_name(
        f"{qm9_cache.stem}-conformers-v{CACHE_VERSION}.{FEATURES_VERSION}.pt"
    )
    if path.is_file():
        try:
            tensors = torch.load(path, weights_only=True)
            if tensors.get("version") == FEATURES_VERSION:
                return _unpack(tensors)
        except Exception:  # corrupt or foreign cache: rebuild it
            pass
    from rdkit import Chem
    from tqdm import tqdm

    graphs = []
    for data in tqdm(load_qm9(root, max_molecules, cache_dir), desc="featurising QM9", unit="mol"):
        mol = _sanitized(to_rdkit_mol(data))
        Chem.AssignStereochemistryFrom3D(mol)  # chiral tags, as GTMGC's SDF-read molecules have
        graph = mol_to_graph(mol, name=f"gdb_{int(data.idx)}")
        graph.pos = data.pos.double()
        graph.idx = data.idx
        for target in TARGET_NAMES:
            graph[target] = data[target]
        graphs.append(graph)
    tensors = _pack(graphs)
    atomic_write(path, lambda file: torch.save(tensors, file))
    return graphs


@dataclass(frozen=True)
class QM9Options:
    """The keys of ``data=qm9`` besides the shared ones."""

    cache_dir: str | None = None
    """Folder of the processed caches (null: the default of :func:`cache_path`)."""


@register_source("qm9", QM9Options, provides=(*CONFORMER_FIELDS, *TARGET_NAMES))
def load(path: str | None, options: QM9Options, max_structures: int | None) -> list[Data]:
    """QM9 molecules with their DFT geometry, targets and 2D molecular graph: ``path`` is the raw
    layout's folder, or None (or a folder without the raw files) for qm9pack; at most
    ``max_structures`` molecules."""
    return qm9_conformer_graphs(path, max_structures, options.cache_dir)
