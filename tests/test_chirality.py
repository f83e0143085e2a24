"""Chirality-aware losses: zero for the right enantiomer, positive for its mirror image, which the
distance loss cannot tell apart (float64, random proper rotations)."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from scipy.spatial.transform import Rotation
from torch_geometric.data import Batch

from molfold.conformers.chirality import (
    aligned_coordinate_loss,
    batch_stereocentres,
    proper_superposition,
    signed_volume_loss,
)
from molfold.conformers.metrics import distance_l1_loss
from molfold.data.molgraph import smiles_to_graph

SMILES = "N[C@@H](C)C(=O)O[C@H](C)CC"  # two stereocentres


@pytest.fixture(scope="module")
def graph():
    graph, mol = smiles_to_graph(SMILES, "", "test")
    AllChem.EmbedMolecule(mol, randomSeed=5)
    graph.pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float64)
    return graph


def _moved(pos: torch.Tensor, seed: int) -> torch.Tensor:
    rotation = torch.tensor(Rotation.random(random_state=seed).as_matrix(), dtype=torch.float64)
    return pos @ rotation.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def test_stereocentres_are_the_graphs_chiral_atoms(graph):
    quads = batch_stereocentres(Batch.from_data_list([graph]))
    centres = Chem.FindMolChiralCenters(Chem.MolFromSmiles(SMILES))
    assert sorted(quads[:, 0].tolist()) == sorted(i for i, _ in centres)
    bonded = {tuple(p) for p in graph.bond_index.t().tolist()}
    assert all((c, n) in bonded for c, *rest in quads.tolist() for n in rest)


@pytest.mark.parametrize("seed", range(3))
def test_right_enantiomer_costs_nothing_and_its_mirror_image_does(graph, seed):
    batch = torch.zeros(len(graph.pos), dtype=torch.long)
    target = graph.pos
    quads = batch_stereocentres(Batch.from_data_list([graph]))
    right = _moved(target, seed)
    mirror = _moved(target * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64), seed)
    # the distance loss sees no difference ...
    assert distance_l1_loss(right, target, batch) == pytest.approx(0.0, abs=1e-9)
    assert distance_l1_loss(mirror, target, batch) == pytest.approx(0.0, abs=1e-9)
    # ... these do
    assert aligned_coordinate_loss(right, target, batch) == pytest.approx(0.0, abs=1e-12)
    assert signed_volume_loss(right, target, quads) == 0.0
    assert aligned_coordinate_loss(mirror, target, batch) > 0.05
    assert signed_volume_loss(mirror, target, quads) > 1.0  # |V| is about 2 A^3 per centre


def test_proper_superposition_undoes_a_rotation_per_molecule(graph):
    other, _ = smiles_to_graph("OC[C@H](F)Cl", "", "test")
    other.pos = torch.randn(other.num_nodes, 3, dtype=torch.float64)
    batch = Batch.from_data_list([graph, other])
    target = batch.pos
    pred = torch.cat([_moved(graph.pos, 7), _moved(other.pos, 8)])
    aligned = proper_superposition(pred, target, batch.batch)
    torch.testing.assert_close(aligned, target, atol=1e-10, rtol=0)
    # a reflection is not a rotation: the mirror image cannot be superposed
    mirrored = proper_superposition(-pred, target, batch.batch)
    assert (mirrored - target).abs().max() > 0.1


def test_volume_gradient_points_from_the_mirror_image_towards_the_right_one(graph):
    target = graph.pos
    quads = batch_stereocentres(Batch.from_data_list([graph]))
    mirror = (target * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)).requires_grad_()
    loss = signed_volume_loss(mirror, target, quads)
    loss.backward()
    with torch.no_grad():
        stepped = mirror - 0.01 * mirror.grad
    assert signed_volume_loss(stepped, target, quads) < loss


def test_conformer_task_loss_adds_the_terms_only_when_weighted(graph):
    from molfold.tasks.conformer import ConformerSettings, ConformerTask

    batch = Batch.from_data_list([graph])
    mirror = {"pos": graph.pos * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)}
    plain = ConformerTask(torch.nn.Linear(1, 1), ConformerSettings())
    aware = ConformerTask(
        torch.nn.Linear(1, 1), ConformerSettings(coordinate_weight=1.0, chirality_weight=1.0)
    )
    assert plain.loss(mirror, batch)[0] == pytest.approx(0.0, abs=1e-9)
    loss, parts = aware.loss(mirror, batch)
    assert loss == pytest.approx(float(parts["coordinate_mse"] + parts["chirality"]), abs=1e-9)
    assert parts["chirality"] > 1.0
    right = {"pos": _moved(graph.pos, 1)}
    assert aware.loss(right, batch)[0] == pytest.approx(0.0, abs=1e-9)
