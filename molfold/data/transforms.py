"""Transforms: what a model needs, attached to the structures a source yields.

A source (:mod:`molfold.data.sources`) yields structures in molfold units and nothing more; the
task of the model that trains on them names the transforms it needs
(:meth:`molfold.tasks.base.Task.transforms`), and the datamodule, ``molfold eval`` and the ASE
calculator apply the same ones. Each transform is ``transform(data, where) -> data``, where
``where`` names the structure in error messages.

* :class:`RadiusGraph`: every ordered pair closer than ``r_max``, through periodic images
  (vesin), as ``edge_index`` and ``edge_cell_shift`` (:func:`molfold.data.neighbors
  .add_radius_graph`).

Conformer sources attach the 2D molecular graph themselves (:mod:`molfold.data.molgraph`),
because it needs the RDKit molecule they read, and ReBind computes its Laplacian encoding inside
the model (its signs are drawn at random while training).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch_geometric.data import Data

from molfold.data.neighbors import add_radius_graph


@dataclass(frozen=True)
class RadiusGraph:
    """Attach the radius graph at ``r_max`` (Angstrom); ``allow_isolated`` accepts atoms with no
    neighbour (a dissociating atom in MD), which a training set refuses."""

    r_max: float
    allow_isolated: bool = False

    def __call__(self, data: Data, where: str = "structure") -> Data:
        return add_radius_graph(data, self.r_max, where, self.allow_isolated)
