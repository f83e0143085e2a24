"""Conformer datasets: 2D graphs (:mod:`molfold.data.molgraph`) with ground-state coordinates.

Sources (``data.format``):

* ``qm9``: the DFT geometries of QM9 (:mod:`molfold.data.qm9`) with the RDKit graph perceived in
  the geometry's atom order and tetrahedral chirality assigned from the geometry (GTMGC and
  ReBind read QM9 from SDF files, whose 3D coordinates set the chiral tags); the paper split,
  110,000 / 10,000 / rest, from ``split_seed``.
* ``geom``: the lowest-energy conformer of each GEOM molecule (:mod:`molfold.data.geom_drugs`,
  ``rdkit_folder`` or msgpack layout); 80 / 10 / 10 % from ``split_seed``.

Featurised graphs are cached next to the QM9 cache, so a run does not re-featurise 130k molecules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from molfold.data.datamodule import (
    SplitDataModule,
    is_primary_process,
    load_split,
    save_split,
    wait_for,
)
from molfold.data.molgraph import InvalidMoleculeError, mol_to_graph
from molfold.errors import ConfigError, DataError

FEATURES_VERSION = 2


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
        )
        graph.num_nodes = int(a1 - a0)
        graphs.append(graph)
    return graphs


def qm9_conformer_graphs(
    root: str | None = None, max_molecules: int | None = None, cache_dir: str | None = None
) -> list[Data]:
    """QM9 molecules as conformer graphs (name = GDB index), through a cache next to QM9's."""
    from molfold.data.qm9 import CACHE_VERSION, cache_path, load_qm9, to_rdkit_mol

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
        graphs.append(graph)
    from molfold.data.qm9 import _save_atomic

    _save_atomic(_pack(graphs), path)
    return graphs


def geom_conformer_graphs(
    root: str, allow_pickle: bool = False, max_molecules: int | None = None
) -> list[Data]:
    """Lowest-energy conformers of a GEOM folder (either layout) as conformer graphs."""
    from molfold.data.geom_drugs import load_geom

    graphs = []
    for molecule in load_geom(root, allow_pickle=allow_pickle, max_molecules=max_molecules):
        try:
            graphs.append(mol_to_graph(molecule.mol, name=molecule.smiles))
        except InvalidMoleculeError as error:
            raise DataError(f"{root}: {error}") from None
    return graphs


def load_conformer_graphs(config: dict[str, Any]) -> list[Data]:
    """The graphs named by a ``data`` config (see the module docstring)."""
    fmt = config.get("format")
    if fmt == "qm9":
        return qm9_conformer_graphs(
            config.get("path"), config.get("max_molecules"), config.get("cache_dir")
        )
    if fmt == "geom":
        return geom_conformer_graphs(
            config["path"], bool(config.get("allow_pickle", False)), config.get("max_molecules")
        )
    raise ConfigError(f"unknown conformer data format {fmt!r}; use qm9 or geom")


def conformer_split(n: int, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Train / val / test indices from ``split_seed``: ``n_train``, ``n_val`` and the rest (at
    most ``n_test``). Sizes left None: the paper's 110,000 / 10,000 for full QM9, GEOM's
    80 / 10 / 10 % (:func:`~molfold.data.geom_drugs.geom_split`), else 80 / 10 %."""
    from molfold.data.geom_drugs import geom_split
    from molfold.data.qm9 import qm9_split

    n_train, n_val = config.get("n_train"), config.get("n_val")
    seed = int(config.get("split_seed", 0))
    if (n_train is None or n_val is None) and config.get("format") == "geom":
        split = geom_split(n, seed)
        if config.get("n_test") is not None:
            split["test"] = split["test"][: int(config["n_test"])]
        return split
    if n_train is None or n_val is None:
        if config.get("format") == "qm9" and n >= 120_000:
            n_train, n_val = 110_000, 10_000
        else:
            n_train, n_val = int(0.8 * n), int(0.1 * n)
    try:
        parts = qm9_split(n, seed, int(n_train), int(n_val))
    except ValueError as error:
        raise ConfigError(f"data: {error}") from None
    n_test = config.get("n_test")
    test = parts[2] if n_test is None else parts[2][: int(n_test)]
    return {"train": parts[0].numpy(), "val": parts[1].numpy(), "test": test.numpy()}


class ConformerDataModule(SplitDataModule):
    """Loads conformer graphs, splits them (``split.npz`` in the run directory, written by the
    primary process) and serves batches; each process takes its own shard, without duplicates."""

    def setup(self, stage: str | None = None) -> None:
        if self.items is not None:
            return
        self.items = load_conformer_graphs(self.config)
        if not self.items:
            raise DataError(f"no molecules in {self.config.get('path') or self.config['format']}")
        split_file = self.run_dir / "split.npz"
        if is_primary_process():
            if not split_file.exists():
                save_split(conformer_split(len(self.items), self.config), split_file)
        else:
            wait_for(split_file)
        self.split = load_split(split_file, len(self.items))
