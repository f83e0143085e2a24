"""The ``data=qm9`` source: each molecule's DFT geometry, its targets and its RDKit molecule.

Each structure carries the DFT geometry (``z``, ``pos`` Angstrom), every target of
:data:`molfold.data.sources.qm9.TARGETS` in its table's units, the GDB index ``idx``, and the
RDKit-level molecule (:func:`molfold.data.molgraph.molecule_fields`): the graph perceived in the
geometry's atom order (:mod:`molfold.data.sources.qm9`) with tetrahedral chirality assigned from
the geometry (GTMGC and ReBind read QM9 from SDF files, whose 3D coordinates set the chiral
tags). Transforms attach what a model needs (:mod:`molfold.data.transforms`): the 2D molecular
graph for a conformer model, a radius graph for a 3D model. ``data.target`` picks the targets a
property model (or, for an energy target, a potential) trains on.

The molecules are cached next to the QM9 cache, so a run does not perceive 130k molecules again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.data.molgraph import MOLECULE_FIELDS, molecule_fields, sanitized
from molfold.data.sources import register_source
from molfold.data.sources.qm9_targets import TARGET_NAMES, TARGETS
from molfold.io import atomic_write

FEATURES_VERSION = 4
"""Version of the molecule cache (4: RDKit-level molecule fields, featurised by the
:class:`~molfold.data.transforms.MolecularGraph` transform; 3 stored the features)."""

ATOM_FIELDS = ("z", "pos", "formal_charge", "chiral_tag", "num_hs")


def _pack(graphs: list[Data]) -> dict[str, Any]:
    return {
        "version": FEATURES_VERSION,
        "n_atoms": torch.tensor([g.num_nodes for g in graphs]),
        "n_bonds": torch.tensor([g.bond_type.numel() for g in graphs]),
        **{name: torch.cat([g[name] for g in graphs]) for name in ATOM_FIELDS},
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
            **{name: tensors[name][a0:a1] for name in ATOM_FIELDS},
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


def qm9_molecules(
    root: str | None = None, max_molecules: int | None = None, cache_dir: str | None = None
) -> list[Data]:
    """QM9 molecules (name and ``idx``: the GDB index) with the RDKit-level molecule of
    :func:`~molfold.data.molgraph.molecule_fields` and every target of
    :data:`~molfold.data.sources.qm9.TARGETS` ([1] float64 each, in its table's units), through
    a cache next to QM9's."""
    from molfold.data.sources.qm9 import CACHE_VERSION, cache_path, load_qm9, to_rdkit_mol

    qm9_cache = cache_path(root, max_molecules, cache_dir)
    path = qm9_cache.with_name(f"{qm9_cache.stem}-molecules-v{CACHE_VERSION}.{FEATURES_VERSION}.pt")
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
    for data in tqdm(load_qm9(root, max_molecules, cache_dir), desc="reading QM9", unit="mol"):
        mol = sanitized(to_rdkit_mol(data))
        Chem.AssignStereochemistryFrom3D(mol)  # chiral tags, as GTMGC's SDF-read molecules have
        graph = Data(**molecule_fields(mol), pos=data.pos.double(), idx=data.idx)
        graph.smiles = Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))
        graph.name = f"gdb_{int(data.idx)}"
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
    target: str | list[str] | None = None
    """The target(s) a model trains on (names of :data:`~molfold.data.sources.qm9.TARGETS`,
    any case: ``homo``, ``U0``, ...), attached as ``target`` [1, T]; a single energy target
    (U0, U, H, G or their atomization energies) is also the ``energy`` a potential trains on.
    Null: none (conformer models)."""

    def __post_init__(self) -> None:
        selected_targets(self)  # unknown names are errors before anything is read


ENERGY_TARGETS = ("U0", "U", "H", "G", "U0_atom", "U_atom", "H_atom", "G_atom")
"""Targets that are total (or atomization) energies, eV."""


def selected_targets(options: QM9Options) -> list[str]:
    """The canonical names of ``options.target`` ([] when none); ValueError for unknown ones."""
    if options.target is None:
        return []
    requested = [options.target] if isinstance(options.target, str) else list(options.target)
    by_lower = {name.lower(): name for name in TARGET_NAMES}
    unknown = [name for name in requested if name.lower() not in by_lower]
    if unknown or not requested:
        raise ValueError(
            f"unknown QM9 target(s) {unknown or requested}; targets: {', '.join(TARGET_NAMES)}"
        )
    return [by_lower[name.lower()] for name in requested]


def _fields(options: QM9Options) -> tuple[str, ...]:
    targets = selected_targets(options)
    chosen = (G.TARGET,) if targets else ()
    if len(targets) == 1 and targets[0] in ENERGY_TARGETS:
        chosen += (G.ENERGY,)
    return (*MOLECULE_FIELDS, *TARGET_NAMES, *chosen)


def _target_units(options: QM9Options) -> list[tuple[str, str]]:
    return [(name, TARGETS[name][1]) for name in selected_targets(options)]


def _identity(path: str | None, options: QM9Options, max_structures: int | None) -> str:
    from molfold.data.sources.qm9 import cache_path

    return cache_path(path, max_structures, options.cache_dir).name  # hashes the source files


@register_source("qm9", QM9Options, provides=_fields, identity=_identity, targets=_target_units)
def load(path: str | None, options: QM9Options, max_structures: int | None) -> list[Data]:
    """QM9 molecules with their DFT geometry, targets and RDKit-level molecule: ``path`` is the
    raw layout's folder, or None (or a folder without the raw files) for qm9pack; at most
    ``max_structures`` molecules; the chosen targets attached (:class:`QM9Options`)."""
    graphs = qm9_molecules(path, max_structures, options.cache_dir)
    targets = selected_targets(options)
    if targets:
        energy = len(targets) == 1 and targets[0] in ENERGY_TARGETS
        for graph in graphs:
            graph[G.TARGET] = torch.cat([graph[name] for name in targets]).view(1, -1)
            if energy:
                graph[G.ENERGY] = graph[targets[0]].reshape(1)
    return graphs
