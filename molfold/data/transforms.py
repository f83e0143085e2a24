"""Transforms: what a model needs, attached to the structures a source yields.

A source (:mod:`molfold.data.sources`) yields structures in molfold units and nothing more; the
task of the model that trains on them names the transforms it needs
(:meth:`molfold.tasks.base.Task.transforms`), and the datamodule, ``molfold eval`` and the ASE
calculator apply the same ones. Each transform is ``transform(data, where) -> data``, where
``where`` names the structure in error messages.

* :class:`RadiusGraph`: every ordered pair closer than ``r_max``, through periodic images
  (vesin), as ``edge_index`` and ``edge_cell_shift`` (:func:`molfold.data.neighbors
  .add_radius_graph`).
* :class:`MolecularGraph`: the 2D molecular graph of a conformer model, the atom features of
  :mod:`molfold.data.molgraph`, from the RDKit-level molecule a source stores
  (:data:`molfold.data.molgraph.MOLECULE_FIELDS`). ``molfold predict`` featurises its SMILES with
  the same function.

* :class:`LaplacianEigenvectors`: the eigenvectors of each molecule's normalised graph Laplacian
  (:mod:`molfold.data.laplacian`), ReBind's positional encoding (ReBind names it in its
  ``data_transforms``; a task names its own in ``Task.transforms``).

A transform with ``cache_version`` set is costly enough that the structures it makes are cached
(:mod:`molfold.data.structure_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from molfold.data.laplacian import LAP_VECTORS, laplacian_eigenvectors
from molfold.data.molgraph import InvalidMoleculeError, mol_from_fields, mol_to_graph
from molfold.data.neighbors import add_radius_graph
from molfold.errors import DataError


@dataclass(frozen=True)
class RadiusGraph:
    """Attach the radius graph at ``r_max`` (Angstrom); ``allow_isolated`` accepts atoms with no
    neighbour (a dissociating atom in MD), which a training set refuses."""

    r_max: float
    allow_isolated: bool = False

    def __call__(self, data: Data, where: str = "structure") -> Data:
        return add_radius_graph(data, self.r_max, where, self.allow_isolated)


@dataclass(frozen=True)
class MolecularGraph:
    """Attach ``atom_features`` [N, 9], ``bond_index`` [2, 2B] and ``bond_type`` [2B]
    (:func:`molfold.data.molgraph.mol_to_graph`) to a structure with the RDKit-level molecule's
    fields."""

    cache_version: int = 1

    def __call__(self, data: Data, where: str = "structure") -> Data:
        try:
            graph = mol_to_graph(mol_from_fields(data), name=where, with_conformer=False)
        except InvalidMoleculeError as error:
            raise DataError(f"{where}: {error}") from None
        data.atom_features = graph.atom_features
        data.bond_index, data.bond_type = graph.bond_index, graph.bond_type
        return data


@dataclass(frozen=True)
class LaplacianEigenvectors:
    """Attach ``lap_vectors`` [N * N] (:data:`molfold.data.laplacian.LAP_VECTORS`) from the
    molecule's bonds (``bond_index``)."""

    cache_version: int = 1

    def __call__(self, data: Data, where: str = "structure") -> Data:
        n = data.num_nodes
        adjacency = torch.zeros(1, n, n, dtype=torch.float64)
        adjacency[0, data.bond_index[0], data.bond_index[1]] = 1.0
        vectors = laplacian_eigenvectors(adjacency, torch.ones(1, n, dtype=torch.bool))
        data[LAP_VECTORS] = vectors[0].reshape(-1)
        return data
