"""Allegro: symmetry, finite-difference forces and stress, batching, locality, smoothness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from molfold.data.neighbors import atoms_to_graph
from molfold.models.allegro import Allegro
from molfold.models.potential import Potential

from .equivariance import assert_equivariant, evaluate

SMALL = dict(
    num_scalar_features=16,
    num_tensor_features=8,
    radial_chemical_embed_dim=16,
    two_body_mlp_hidden=[16],
    allegro_mlp_hidden=[16],
    readout_mlp_hidden=[16],
)


def make_potential(species, seed=0, **hparams) -> Potential:
    torch.manual_seed(seed)
    kwargs = {**SMALL, "r_max": 4.0, "avg_num_neighbors": 10.0, **hparams}
    shifts = torch.linspace(-3.0, -1.0, len(species))
    return Potential(Allegro(len(species), **kwargs), species, scales=0.7, shifts=shifts)


VARIANTS = [
    dict(),
    dict(latent_update="resnet"),
    dict(parity=False),
    dict(l_max=2, num_layers=3),
    dict(tp_path_channel_coupling=False, num_layers=1),
]


@pytest.mark.parametrize(
    "hparams", VARIANTS, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()) or "default"
)
def test_molecule_equivariance(float64, ethanol, hparams):
    assert_equivariant(make_potential([1, 6, 8], **hparams), ethanol, seed=1)


@pytest.mark.parametrize("hparams", VARIANTS[:2], ids=["dense", "resnet"])
def test_periodic_equivariance(float64, triclinic_cu, hparams):
    atoms = triclinic_cu.copy()
    atoms.numbers[1] = 8  # two species, so the type embeddings matter
    assert_equivariant(make_potential([8, 29], **hparams), atoms, seed=2)


def test_reference_parameter_count():
    """The tutorial hyperparameters give nequip-allegro 0.8.3's 62,464 parameters (4 species)."""
    model = Allegro(num_types=4)
    assert sum(p.numel() for p in model.parameters()) == 62464


def test_forces_match_finite_differences(float64, ethanol):
    potential = make_potential([1, 6, 8], latent_update="resnet")
    forces = evaluate(potential, ethanol)["forces"]
    h = 1e-5
    for atom in range(len(ethanol)):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                displaced = ethanol.copy()
                displaced.positions[atom, axis] += sign * h
                energies.append(evaluate(potential, displaced)["energy"][0])
            numeric = -(energies[0] - energies[1]) / (2 * h)
            assert abs(numeric - forces[atom, axis]) < 1e-7 * max(1.0, abs(numeric))


def test_stress_matches_finite_strain(float64, triclinic_cu):
    potential = make_potential([29])
    stress = evaluate(potential, triclinic_cu)["stress"][0]
    volume = triclinic_cu.get_volume()
    h = 1e-6
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[a, b] += sign * h * 0.5
                strain[b, a] += sign * h * 0.5
                strained = triclinic_cu.copy()
                strained.set_cell(np.asarray(triclinic_cu.cell) @ strain, scale_atoms=True)
                energies.append(evaluate(potential, strained)["energy"][0])
            numeric = (energies[0] - energies[1]) / (2 * h) / volume
            assert abs(numeric - stress[a, b]) < 1e-7 * max(1.0, abs(numeric))
    assert np.allclose(stress, stress.T)


def test_batch_equals_single_structures(float64, ethanol, triclinic_cu):
    potential = make_potential([1, 6, 8, 29])
    graphs = [atoms_to_graph(a, potential.r_max) for a in (ethanol, triclinic_cu, ethanol)]
    batched = potential(Batch.from_data_list(graphs), compute_stress=True)
    start = 0
    for index, graph in enumerate(graphs):
        single = potential(graph, compute_stress=True)
        n = graph.num_nodes
        torch.testing.assert_close(batched["energy"][index], single["energy"][0])
        torch.testing.assert_close(batched["forces"][start : start + n], single["forces"])
        torch.testing.assert_close(batched["stress"][index], single["stress"][0])
        start += n


def test_strict_locality(float64, ethanol):
    """Moving a far-away molecule changes nothing: no information travels beyond r_max."""
    potential = make_potential([1, 6, 8], num_layers=3)
    pair = ethanol + ethanol
    pair.positions[len(ethanol) :] += [20.0, 0.0, 0.0]
    moved = pair.copy()
    moved.positions[len(ethanol) :] += [0.0, 5.0, -3.0]
    a, b = evaluate(potential, pair), evaluate(potential, moved)
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=1e-12)
    np.testing.assert_allclose(a["forces"][: len(ethanol)], b["forces"][: len(ethanol)], atol=1e-12)
    single = evaluate(potential, ethanol)
    np.testing.assert_allclose(a["energy"], 2 * single["energy"], rtol=1e-12)


def test_energy_is_smooth_at_the_cutoff(float64):
    """An O-H pair crossing r_max changes energy and forces continuously (polynomial envelope).

    Water plus an H2 molecule on the far side of O: only the O-H(2) distance crosses r_max.
    """
    from ase import Atoms

    potential = make_potential([1, 8])
    outputs = []
    for r in (potential.r_max - 1e-4, potential.r_max + 1e-4):
        positions = [[0, 0, 0], [0.96, 0, 0], [-r, 0, 0], [-r - 0.74, 0, 0]]
        outputs.append(evaluate(potential, Atoms("OHHH", positions=positions)))
    inside, outside = outputs
    assert abs(inside["energy"][0] - outside["energy"][0]) < 1e-9
    assert np.abs(inside["forces"] - outside["forces"]).max() < 1e-6


def test_unknown_element_is_refused(ethanol):
    from molfold.errors import UnknownElementError

    potential = make_potential([1, 6])
    with pytest.raises(UnknownElementError, match="element.*O.*knows only H, C"):
        evaluate(potential, ethanol)
