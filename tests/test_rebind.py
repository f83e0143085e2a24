"""ReBind: Lennard-Jones rewiring, permutation equivariance, the equivariant decoder, losses,
the reference's initialisation of the relation weights, and the gate's inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch_geometric.data import Batch

from molfold.conformers.metrics import distance_errors, distance_l1_loss, metrics_from_sums
from molfold.data.molgraph import smiles_to_graph
from molfold.errors import UnknownElementError
from molfold.models.rebind import ReBind, laplacian_eigenvectors
from molfold.nn.graph_transformer import MultiRelationalAttention
from molfold.nn.lennard_jones import (
    force_based_rewiring,
    lennard_jones_energy,
    lennard_jones_force,
    pair_parameters,
)

TINY = dict(d_model=32, num_heads=4, d_ffn=64, num_encoder_layers=2, num_decoder_layers=2)
# the normalised Laplacian of this molecule's graph (hydrogens included) has no repeated
# eigenvalue, so its positional encoding is unique up to signs, which molfold fixes
ASYMMETRIC = "O=CC(F)=CC(Cl)=CO"


def _orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    matrix = torch.from_numpy(Rotation.random(random_state=seed).as_matrix())
    return -matrix if reflect else matrix


def _graph_with_positions(smiles: str, seed: int = 0):
    from rdkit.Chem import AllChem

    graph, mol = smiles_to_graph(smiles)
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    graph.pos = torch.from_numpy(mol.GetConformer().GetPositions())
    return graph


def _permuted(graph, order: torch.Tensor):
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    new = graph.clone()
    new.z, new.atom_features = graph.z[order], graph.atom_features[order]
    new.bond_index = inverse[graph.bond_index]
    if graph.pos is not None:
        new.pos = graph.pos[order]
    return new


# --- Lennard-Jones and rewiring -------------------------------------------------------------
def test_lj_force_is_minus_the_energy_derivative():
    r = torch.linspace(2.0, 8.0, 25, dtype=torch.float64)
    sigma, epsilon = pair_parameters(torch.tensor([6, 8]))
    s, e = sigma[0, 1], epsilon[0, 1]
    h = 1e-6
    numeric = -(lennard_jones_energy(r + h, s, e) - lennard_jones_energy(r - h, s, e)) / (2 * h)
    torch.testing.assert_close(lennard_jones_force(r, s, e), numeric, rtol=1e-7, atol=1e-10)
    # repulsive inside the minimum at 2^(1/6) sigma, attractive outside
    r_min = 2 ** (1 / 6) * s
    assert lennard_jones_force(r_min - 0.1, s, e) > 0 > lennard_jones_force(r_min + 0.1, s, e)


def test_lorentz_berthelot_mixing_and_unknown_elements():
    sigma, epsilon = pair_parameters(torch.tensor([1, 6]))
    torch.testing.assert_close(sigma[0, 1], torch.tensor((2.886 + 3.431) / 2, dtype=torch.float64))
    torch.testing.assert_close(epsilon[0, 1], torch.tensor((0.044 * 0.105) ** 0.5).double())
    with pytest.raises(UnknownElementError, match="92"):
        pair_parameters(torch.tensor([6, 92]))


def test_rewiring_keeps_top_k_by_force_and_splits_by_sign():
    # a four-atom chain C0-C1-C2 plus C3 bonded to C1: degrees 1, 3, 1, 1 -> K = 2, 0, 2, 2
    bonded = torch.zeros(1, 4, 4, dtype=torch.bool)
    for i, j in ((0, 1), (1, 2), (1, 3)):
        bonded[0, i, j] = bonded[0, j, i] = True
    # C0-C2 very close (repulsive), C0-C3 and C2-C3 near the LJ minimum but outside it (attractive)
    distance = torch.tensor(
        [[[0.0, 1.5, 2.0, 4.2], [1.5, 0.0, 1.5, 1.5], [2.0, 1.5, 0.0, 4.5], [4.2, 1.5, 4.5, 0.0]]],
        dtype=torch.float64,
    )
    z = torch.full((1, 4), 6)
    mask = torch.ones(1, 4, dtype=torch.bool)
    attraction, repulsion = force_based_rewiring(distance, z, bonded, mask)
    expected_attraction = torch.zeros(1, 4, 4, dtype=torch.float64)
    expected_repulsion = torch.zeros(1, 4, 4, dtype=torch.float64)
    expected_repulsion[0, 0, 2] = expected_repulsion[0, 2, 0] = -1
    expected_attraction[0, 0, 3] = expected_attraction[0, 2, 3] = 1
    expected_attraction[0, 3, 0] = expected_attraction[0, 3, 2] = 1
    torch.testing.assert_close(attraction, expected_attraction)
    torch.testing.assert_close(repulsion, expected_repulsion)
    assert not (attraction.bool() & bonded).any() and not (repulsion.bool() & bonded).any()
    # a fixed K of 1: each atom keeps only its strongest non-bonded partner (none for C1)
    attraction, repulsion = force_based_rewiring(distance, z, bonded, mask, top_k=1)
    kept = (attraction - repulsion)[0]
    assert kept.sum(-1).tolist() == [1.0, 0.0, 1.0, 1.0]
    assert kept[0, 2] == kept[2, 0] == 1  # C0-C2 at 2.0 A pushes hardest


def test_rewiring_is_applied_and_changes_the_output():
    torch.manual_seed(0)
    batch = Batch.from_data_list(
        [smiles_to_graph(s)[0] for s in ("CCO", "CC(=O)Nc1ccc(O)cc1", ASYMMETRIC)]
    )
    model = ReBind(**TINY).eval()
    with torch.no_grad():
        wired = model(batch)
        model.rewiring = False
        plain = model(batch)
    assert (wired["num_attractive"] + wired["num_repulsive"] > 0).all()
    assert (plain["num_attractive"] + plain["num_repulsive"] == 0).all()
    torch.testing.assert_close(wired["pos_intermediate"], plain["pos_intermediate"])
    assert (wired["pos"] - plain["pos"]).abs().max() > 1e-4


# --- initialisation and the gate -----------------------------------------------------------
def test_relation_weights_are_uniform_on_the_reference_glorot_bound():
    # the reference's w_t has shape (1, heads, 1, 1) and PyG's glorot takes its fan from the last
    # two dims: fan_in = fan_out = 1, so w_t ~ U(-sqrt(6 / 2), sqrt(6 / 2)) for any head count
    bound = math.sqrt(6.0 / (1 + 1))
    torch.manual_seed(0)
    for num_heads in (2, 8):
        w = MultiRelationalAttention(8, num_heads, num_relations=4000).relation_weights.detach()
        assert w.shape == (4000, num_heads)
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.999 * bound
        assert float(w.mean()) == pytest.approx(0.0, abs=0.03)
        assert float(w.var()) == pytest.approx(bound**2 / 3, rel=0.03)  # uniform: b^2 / 3 = 1
    # ReBind's own Linear initialisation leaves them alone
    w = torch.cat([p.flatten() for n, p in ReBind(**TINY).named_parameters() if "relation" in n])
    assert w.abs().max() <= bound
    assert w.abs().max() > math.sqrt(6.0 / (1 + TINY["num_heads"]))  # above the old, smaller bound


def _gate_inputs(model: ReBind, batch) -> dict[str, torch.Tensor]:
    """The encoder's output, the decoder's input and the gate's two inputs, each [B, N, d]."""
    seen = {}
    hooks = [
        model.encoder[-1].register_forward_hook(lambda m, a, out: seen.update(encoded=out)),
        model.decoder[0].register_forward_hook(lambda m, a, out: seen.update(decoder_in=a[0])),
        model.gate.register_forward_hook(lambda m, a, out: seen.update(gate=a)),
    ]
    with torch.no_grad():
        seen["out"] = model(batch)
    for hook in hooks:
        hook.remove()
    return seen


def test_gate_with_encoding_is_opt_in_and_gates_against_the_encoded_input():
    torch.manual_seed(4)
    batch = Batch.from_data_list([smiles_to_graph(s)[0] for s in ("CCO", ASYMMETRIC)])
    model = ReBind(**TINY).eval()
    assert model.gate_with_encoding is False  # the shipped model's form is the default
    default = _gate_inputs(model, batch)
    torch.testing.assert_close(default["gate"][1], default["encoded"], rtol=0, atol=0)
    model.gate_with_encoding = True
    opted = _gate_inputs(model, batch)
    # the released code's form: encoder output plus the positional encoding, the decoder's input
    torch.testing.assert_close(opted["gate"][1], opted["decoder_in"], rtol=0, atol=0)
    assert (opted["gate"][1] - opted["encoded"]).abs().max() > 1e-3
    out, out_opted = default["out"], opted["out"]
    torch.testing.assert_close(out_opted["pos_intermediate"], out["pos_intermediate"])
    assert (out_opted["pos"] - out["pos"]).abs().max() > 1e-5
    with pytest.raises(ValueError, match="gate_with_encoding"):
        ReBind(**TINY, decoder="equivariant", gate_with_encoding=True)


# --- symmetry -------------------------------------------------------------------------------
def test_laplacian_encoding_follows_a_permutation(float64):
    graph = smiles_to_graph(ASYMMETRIC)[0]
    order = torch.from_numpy(np.random.default_rng(0).permutation(graph.num_nodes))
    permuted = _permuted(graph, order)

    def encoding(g):
        n = g.num_nodes
        adjacency = torch.zeros(1, n, n)
        adjacency[0, g.bond_index[0], g.bond_index[1]] = 1.0
        d = adjacency[0].sum(-1).rsqrt()
        laplacian = torch.eye(n) - d[:, None] * adjacency[0] * d[None, :]
        eigenvalues = torch.linalg.eigvalsh(laplacian)
        assert (eigenvalues.diff() > 1e-2).all(), "test molecule must have a simple spectrum"
        return laplacian_eigenvectors(adjacency, torch.ones(1, n, dtype=torch.bool))[0]

    torch.testing.assert_close(encoding(permuted), encoding(graph)[order])


@pytest.mark.parametrize("decoder", ["paper", "equivariant"])
def test_coordinates_are_permutation_equivariant(float64, decoder):
    torch.manual_seed(1)
    model = ReBind(**TINY, decoder=decoder).eval()
    graph = smiles_to_graph(ASYMMETRIC)[0]
    order = torch.from_numpy(np.random.default_rng(2).permutation(graph.num_nodes))
    other = smiles_to_graph("CC(=O)Nc1ccc(O)cc1")[0]
    with torch.no_grad():
        out = model(Batch.from_data_list([graph, other]))
        # permute the first molecule and swap the molecules' order in the batch
        out_perm = model(Batch.from_data_list([other, _permuted(graph, order)]))
    n = graph.num_nodes
    for key in ("pos", "pos_intermediate"):
        torch.testing.assert_close(out_perm[key][-n:], out[key][:n][order], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out_perm[key][:-n], out[key][n:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("reflect", [False, True])
def test_equivariant_decoder_rotates_with_the_intermediate_conformation(float64, reflect):
    torch.manual_seed(3)
    model = ReBind(**TINY, decoder="equivariant").eval()
    refiner = model.refiner
    b, n, d = 2, 7, TINY["d_model"]
    x0 = torch.randn(b, n, 3) * 2.0
    h = torch.randn(b, n, d)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 5:] = False
    bond_type = torch.randint(0, 5, (b, n, n))
    bond_type = torch.triu(bond_type, 1) + torch.triu(bond_type, 1).transpose(1, 2)
    attraction = (torch.rand(b, n, n) > 0.7).double()
    repulsion = -(torch.rand(b, n, n) > 0.7).double()
    rotation = _orthogonal(4, reflect)
    shift = torch.tensor([1.0, -2.0, 0.5])
    with torch.no_grad():
        out = refiner(x0, h, mask, bond_type, attraction, repulsion)
        moved = refiner(x0 @ rotation.T + shift, h, mask, bond_type, attraction, repulsion)
    torch.testing.assert_close(moved[mask], (out @ rotation.T + shift)[mask], rtol=1e-9, atol=1e-9)
    assert (out - x0)[mask].abs().max() > 1e-6  # the refiner does move atoms


@pytest.mark.parametrize("reflect", [False, True])
def test_loss_and_metrics_are_invariant_to_moving_the_target(float64, reflect):
    graphs = [_graph_with_positions(s, seed=k) for k, s in enumerate(("CCO", "c1ccncc1"))]
    batch = Batch.from_data_list(graphs)
    prediction = batch.pos + 0.3 * torch.randn_like(batch.pos)
    rotation = _orthogonal(5, reflect)
    moved = batch.pos @ rotation.T + torch.tensor([3.0, -1.0, 2.0])
    loss = distance_l1_loss(prediction, batch.pos, batch.batch)
    torch.testing.assert_close(distance_l1_loss(prediction, moved, batch.batch), loss)
    sums = distance_errors(prediction, batch.pos, batch.batch)
    torch.testing.assert_close(distance_errors(prediction, moved, batch.batch), sums)
    assert metrics_from_sums(sums)["d_mae"] == pytest.approx(float(loss), rel=1e-12)
    assert float(loss) > 0.01


def test_training_reduces_the_loss_on_one_batch():
    torch.manual_seed(0)
    batch = Batch.from_data_list([_graph_with_positions(s) for s in ("CCO", "CC(=O)O", "CCN")])
    model = ReBind(**TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(batch)
        loss = distance_l1_loss(out["pos"], batch.pos.float(), batch.batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
