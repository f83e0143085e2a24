"""D-MAE, D-RMSE and C-RMSD on known cases, against RDKit's GetBestRMS, and C-RMSD of mirror
images (molfold's stereocentre correction and the papers' min over both images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign
from scipy.spatial.transform import Rotation

from molfold.conformers.metrics import (
    c_rmsd,
    c_rmsd_pair,
    distance_errors,
    kabsch_rmsd,
    metrics_from_sums,
)
from molfold.conformers.stereo import stereo_mismatches
from molfold.data.molgraph import graph_to_mol, mol_to_graph


def _embedded(smiles: str, seed: int):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return mol


def test_distance_metrics_on_a_hand_computed_case():
    # three atoms on a line; moving the last one by 0.3 A changes two of the nine entries of the
    # distance matrix twice each (d_02 and d_12, both directions)
    target = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    prediction = target.clone()
    prediction[2, 0] += 0.3
    sums = distance_errors(prediction, target, torch.zeros(3, dtype=torch.long))
    metrics = metrics_from_sums(sums)
    assert metrics["d_mae"] == pytest.approx(4 * 0.3 / 9)
    assert metrics["d_rmse"] == pytest.approx((4 * 0.09 / 9) ** 0.5)


def test_c_rmsd_is_zero_for_a_moved_copy_and_matches_kabsch_without_symmetry():
    mol = _embedded("OC(F)C(Cl)C(=O)N", seed=1)
    moved = Chem.Mol(mol)
    rotation = Rotation.random(random_state=3).as_matrix()
    conformer = moved.GetConformer()
    for i, p in enumerate(conformer.GetPositions() @ rotation.T + [1.0, 2.0, -3.0]):
        conformer.SetAtomPosition(i, p.tolist())
    assert c_rmsd(moved, mol) == pytest.approx(0.0, abs=1e-6)

    other = _embedded("OC(F)C(Cl)C(=O)N", seed=7)  # another conformer, same atom order
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    expected = kabsch_rmsd(
        torch.from_numpy(other.GetConformer().GetPositions()[heavy]),
        torch.from_numpy(mol.GetConformer().GetPositions()[heavy]),
    )
    assert c_rmsd(other, mol) == pytest.approx(float(expected), rel=1e-6)
    assert c_rmsd(other, mol) > 0.05


def test_c_rmsd_matches_symmetric_atoms_as_rdkit_does():
    # swap two methyl carbons of tert-butanol in the prediction (a mirror image of the heavy
    # atoms, which no rotation undoes): a plain RMSD sees an error, C-RMSD does not
    mol = _embedded("CC(C)(C)O", seed=2)
    swapped = Chem.Mol(mol)
    conformer = swapped.GetConformer()
    positions = conformer.GetPositions()
    methyls = [
        a.GetIdx()
        for a in mol.GetAtoms()
        if a.GetSymbol() == "C" and sum(n.GetAtomicNum() == 1 for n in a.GetNeighbors()) == 3
    ]
    m1, m2 = methyls[:2]
    conformer.SetAtomPosition(m1, positions[m2].tolist())
    conformer.SetAtomPosition(m2, positions[m1].tolist())
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    plain = kabsch_rmsd(
        torch.from_numpy(swapped.GetConformer().GetPositions()[heavy]),
        torch.from_numpy(positions[heavy]),
    )
    assert float(plain) > 0.3
    reference = rdMolAlign.GetBestRMS(Chem.RemoveHs(swapped), Chem.RemoveHs(mol))
    assert c_rmsd(swapped, mol) == pytest.approx(reference, abs=1e-8)
    assert c_rmsd(swapped, mol) < 0.3 * float(plain)


@pytest.mark.parametrize("smiles", ["CC(=O)Nc1ccc(O)cc1", "C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"])
def test_graph_round_trips_to_the_same_molecule(smiles):
    mol = _embedded(smiles, seed=0)
    graph = mol_to_graph(mol)
    rebuilt = graph_to_mol(graph)
    Chem.AssignStereochemistry(rebuilt, cleanIt=True, force=True)
    assert Chem.MolToSmiles(Chem.RemoveHs(rebuilt)) == Chem.CanonSmiles(smiles)  # stereo kept
    assert c_rmsd(rebuilt, mol) == pytest.approx(0.0, abs=1e-6)


# two specified stereocentres and no symmetry-equivalent heavy atoms, so that its heavy-atom
# C-RMSD is a plain Kabsch RMSD and its mirror image is a different molecule
CHIRAL = "O[C@H](F)[C@@H](Cl)C(=O)N"


def _moved(pos: torch.Tensor, seed: int, reflect: bool) -> torch.Tensor:
    """``pos`` [N, 3] rotated, shifted and, with ``reflect``, mirrored through the yz plane."""
    rotation = torch.from_numpy(Rotation.random(random_state=seed).as_matrix())
    if reflect:
        pos = pos * pos.new_tensor([-1.0, 1.0, 1.0])
    return pos @ rotation.T + pos.new_tensor([1.0, -2.0, 0.5])


def _orthogonal_procrustes_rmsd(prediction: np.ndarray, target: np.ndarray) -> float:
    """RMSD [N, 3] x [N, 3] -> float after the best rotation *or reflection* (Kabsch without the
    determinant check, as GTMGC/ReBind's ``align_conformer_hat_to_conformer``)."""
    p, q = prediction - prediction.mean(0), target - target.mean(0)
    u, _, vt = np.linalg.svd(p.T @ q)
    return float(np.sqrt((((p @ (u @ vt)) - q) ** 2).sum(-1).mean()))


def test_c_rmsd_pair_is_zero_for_the_reference_itself():
    graph = mol_to_graph(_embedded(CHIRAL, seed=0))
    values = c_rmsd_pair(graph, graph.pos.clone())
    assert set(values) == {"c_rmsd", "c_rmsd_stereo", "c_rmsd_mirror"}
    assert all(isinstance(v, float) for v in values.values())
    for value in values.values():
        assert value == pytest.approx(0.0, abs=1e-6)


def test_c_rmsd_pair_of_an_exact_mirror_image():
    graph = mol_to_graph(_embedded(CHIRAL, seed=0))
    # mirrored through the yz plane and shifted; not rotated, since RDKit's alignment leaves
    # up to ~1e-6 A of round-off on some rotated copies
    mirrored = graph.pos * graph.pos.new_tensor([-1.0, 1.0, 1.0]) + 2.0
    values = c_rmsd_pair(graph, mirrored)
    assert values["c_rmsd"] > 0.1  # no rotation superimposes the enantiomer
    assert values["c_rmsd_mirror"] == pytest.approx(0.0, abs=1e-6)  # the papers' protocol
    assert values["c_rmsd_stereo"] == pytest.approx(0.0, abs=1e-6)  # the graph's R/S restored


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("seed", [3, 4])
def test_c_rmsd_mirror_is_the_best_of_both_images(seed, reflect):
    mol = _embedded(CHIRAL, seed=0)
    graph = mol_to_graph(mol)
    noise = 0.3 * torch.from_numpy(np.random.default_rng(seed).normal(size=graph.pos.shape))
    predicted = _moved(graph.pos + noise, seed, reflect)
    values = c_rmsd_pair(graph, predicted)
    assert values["c_rmsd_mirror"] <= values["c_rmsd"]
    assert values["c_rmsd_mirror"] <= values["c_rmsd_stereo"] <= values["c_rmsd"]
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    expected = _orthogonal_procrustes_rmsd(predicted.numpy()[heavy], graph.pos.numpy()[heavy])
    assert values["c_rmsd_mirror"] == pytest.approx(expected, rel=1e-6)
    if reflect:  # noise of 0.3 A leaves the mirror image the better fit
        assert values["c_rmsd_mirror"] < values["c_rmsd"]


def test_stereo_mismatches_name_each_wrong_centre_and_double_bond():
    """A conformer of the molecule itself has all its stereo; its mirror image inverts the
    centre but keeps the E double bond; the coordinates of the Z isomer have the right centre
    and the wrong double bond."""
    mol = _embedded("C[C@H](O)/C=C/Cl", seed=1)
    assert stereo_mismatches(mol) == []
    mirror = Chem.Mol(mol)
    positions = mirror.GetConformer().GetPositions() * np.array([1.0, 1.0, -1.0])
    for i, p in enumerate(positions):
        mirror.GetConformer().SetAtomPosition(i, p.tolist())
    assert stereo_mismatches(mirror) == ["atom 1: S specified, R in 3D"]
    wrong_bond = Chem.Mol(mol)
    wrong_bond.RemoveAllConformers()
    wrong_bond.AddConformer(_embedded("C[C@H](O)/C=C\\Cl", seed=1).GetConformer(), assignId=True)
    assert stereo_mismatches(wrong_bond) == ["bond 3 (atoms 3-4): E specified, Z in 3D"]
    assert stereo_mismatches(_embedded("CC(O)C=CCl", seed=1)) == []  # nothing specified
