"""Allegro: symmetry, finite-difference forces and stress, batching, locality, smoothness, and the
``"resnet"`` mode against allegro v0.3.0 (equations and parameter count)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch

from molfold.data import graph as G
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
    dict(latent_update="resnet", l_max=2, num_layers=3, latent_resnet_coefficients_learnable=True),
    dict(latent_update="resnet", parity=False, num_layers=1),
]
FORCE_VARIANTS = [
    dict(),
    dict(latent_update="resnet"),
    dict(latent_update="resnet", l_max=2, num_layers=3),
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


@pytest.mark.parametrize("hparams", FORCE_VARIANTS, ids=["dense", "resnet", "resnet-3-layers"])
def test_forces_match_finite_differences(float64, ethanol, hparams):
    potential = make_potential([1, 6, 8], **hparams)
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


@pytest.mark.parametrize("latent_update", ["dense", "resnet"])
def test_batch_equals_single_structures(float64, ethanol, triclinic_cu, latent_update):
    potential = make_potential([1, 6, 8, 29], latent_update=latent_update)
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


@pytest.mark.parametrize("latent_update", ["dense", "resnet"])
def test_strict_locality(float64, ethanol, latent_update):
    """Moving a far-away molecule changes nothing: no information travels beyond r_max."""
    potential = make_potential([1, 6, 8], num_layers=3, latent_update=latent_update)
    pair = ethanol + ethanol
    pair.positions[len(ethanol) :] += [20.0, 0.0, 0.0]
    moved = pair.copy()
    moved.positions[len(ethanol) :] += [0.0, 5.0, -3.0]
    a, b = evaluate(potential, pair), evaluate(potential, moved)
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=1e-12)
    np.testing.assert_allclose(a["forces"][: len(ethanol)], b["forces"][: len(ethanol)], atol=1e-12)
    single = evaluate(potential, ethanol)
    np.testing.assert_allclose(a["energy"], 2 * single["energy"], rtol=1e-12)


@pytest.mark.parametrize("latent_update", ["dense", "resnet"])
def test_energy_is_smooth_at_the_cutoff(float64, latent_update):
    """An O-H pair crossing r_max changes energy and forces continuously (polynomial envelope).

    Water plus an H2 molecule on the far side of O: only the O-H(2) distance crosses r_max.
    """
    from ase import Atoms

    potential = make_potential([1, 8], latent_update=latent_update)
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


# --- latent_update="resnet" against allegro v0.3.0 ------------------------------------------------
# Line numbers refer to allegro/nn/_allegro.py at the allegro tag v0.3.0 (commit 0cb3ec8).


def v030_atomic_energies(
    model: Allegro, graph, atom_types: torch.Tensor, avg_num_neighbors: float
) -> torch.Tensor:
    """Per-atom energies from the equations of v0.3.0's ``Allegro_Module.forward`` (l. 389-537),
    tensors_mixing_mode "uuulin", self_edge_tensor_product False, in plain torch.

    Only the weights are read out of ``model``; its MLPs are called as they are (their
    normalisation is molfold's, a documented departure), everything between them is redone here.
    v0.3.0's layer k >= 1 latent MLP is molfold's ``layers[k - 1].latent_mlp``, its
    ``final_latent`` is ``layers[-1].latent_mlp``, its ``env_embed_mlps[k]`` is
    ``layers[k].env_embed`` and its ``linears[k]`` is ``layers[k].linear``. The pruned tensor
    track (l. 133-185) is taken from ``model.track_irreps``, as in "dense".
    """
    neighbour, centre = graph[G.EDGE_INDEX]
    num_atoms, num_layers = len(atom_types), model.num_layers
    vectors = G.edge_vectors(graph)
    sh_irreps = model.track_irreps[0]
    sh = o3.spherical_harmonics(sh_irreps, vectors, normalize=True, normalization="component")
    mul = model.sh_weighter.multiplicity
    sh_slices = list(sh_irreps.slices())
    irrep_of_component = torch.tensor(
        [r for r, s in enumerate(sh_slices) for _ in range(s.stop - s.start)]
    )

    def weighted_channels(weights):  # MakeWeightedChannels: [E, mul * n_irreps] -> [E, mul, dim]
        return weights.view(-1, mul, len(sh_slices))[:, :, irrep_of_component] * sh[:, None, :]

    # latents[0]: the two-body MLP on the radial-chemical embedding, nothing after it (l. 286-297)
    latent = model.two_body(
        vectors.norm(dim=-1, keepdim=True), atom_types[centre], atom_types[neighbour]
    )
    logits = model.latent_mixing.logits
    coefficients = (logits - logits.max()).exp()  # l. 418-421
    cumulative = coefficients.cumsum(0) + 1e-12
    for k in range(num_layers):
        # env_embed_mlps[k] on the current latent (l. 458); at k = 0 it also weights V^0
        # (l. 461-465) as one linear map: molfold's two maps side by side
        embed = model.layers[k].env_embed[0]
        if k == 0:
            first = model.tensor_embedding_weights[0]
            assert first.alpha == embed.alpha == 1 / math.sqrt(latent.shape[1])
            weights = latent @ (torch.cat([first.weight, embed.weight], 1) * embed.alpha)
            features = weighted_channels(weights[:, : first.weight.shape[1]])
            weights = weights[:, first.weight.shape[1] :]
        else:
            weights = latent @ (embed.weight * embed.alpha)
        # environment without the edge itself, 1/sqrt(avg_num_neighbors - 1) (l. 197-207, 477-492)
        edges = weighted_channels(weights) / math.sqrt(avg_num_neighbors - 1)
        env = torch.zeros(num_atoms, *edges.shape[1:]).index_add(0, centre, edges)[centre] - edges
        # Contracter "uuu" without weights: one output per path, ordered (i_out, i_1, i_2), each
        # w3j * sqrt(2 l_out + 1) (l. 213-256 and _strided/_contract.py)
        irreps_in, irreps_out = model.track_irreps[k], model.track_irreps[k + 1]
        paths = []
        for _, ir_out in irreps_out:
            for (_, ir1), s1 in zip(irreps_in, irreps_in.slices()):
                for (_, ir2), s2 in zip(sh_irreps, sh_slices):
                    if ir_out in ir1 * ir2:
                        w3j = o3.wigner_3j(ir1.l, ir2.l, ir_out.l) * math.sqrt(ir_out.dim)
                        path = torch.einsum(
                            "zui,zuj,ijk->zuk", features[..., s1], env[..., s2], w3j
                        )
                        paths.append((ir_out, path))
        # scalars: every scalar path of every channel, before the linear (l. 498-503)
        scalars = torch.cat([p for ir, p in paths if ir.l == 0 and ir.p == 1], -1).flatten(1)
        # linears[k]: per output irrep, W[v, u, n] over channels u and its paths n, 1/sqrt(mul n)
        # (_strided/_linear.py l. 89-141); the last one's output is never read (l. 506, 519)
        if k < num_layers - 1:
            mixed = []
            for (_, ir_out), weight in zip(irreps_out, model.layers[k].linear.weights):
                stack = torch.stack([p for ir, p in paths if ir == ir_out], 2)  # [E, u, n, m]
                mixed.append(
                    torch.einsum("vun,zunm->zvm", weight, stack) / math.sqrt(mul * stack.shape[2])
                )
            features = torch.cat(mixed, -1)
        # latents[k + 1] (final_latent at the end) on [x, scalars], then the resnet update with
        # coefficient k + 1 (l. 431-455, 519-529): v0.3.0 does this at the top of its next layer
        new = model.layers[k].latent_mlp(torch.cat([latent, scalars], -1))
        c_old = (cumulative[k] / cumulative[k + 1]).sqrt()
        c_new = (coefficients[k + 1] / cumulative[k + 1]).sqrt()
        latent = c_old * latent + c_new * new
    edge_energy = model.edge_readout(latent).squeeze(-1) * model.edge_energy_factor
    return torch.zeros(num_atoms).index_add(0, centre, edge_energy)


@pytest.mark.parametrize(
    "hparams",
    [dict(), dict(l_max=2, num_layers=3), dict(parity=False, num_layers=1)],
    ids=["l1-2-layers", "l2-3-layers", "so3-1-layer"],
)
def test_resnet_matches_v030_equations(float64, ethanol, hparams):
    """float64, tiny widths, random resnet logits: molfold's resnet mode equals the v0.3.0
    equations written out above."""
    torch.manual_seed(3)
    tiny = dict(
        num_scalar_features=6,
        num_tensor_features=3,
        radial_chemical_embed_dim=4,
        two_body_mlp_hidden=[5],
        allegro_mlp_hidden=[5],
        readout_mlp_hidden=[5],
    )
    model = Allegro(
        3,
        r_max=4.0,
        avg_num_neighbors=6.5,
        latent_update="resnet",
        latent_resnet_coefficients_learnable=True,
        **{**tiny, **hparams},
    )
    with torch.no_grad():
        model.latent_mixing.logits.normal_()
    graph = atoms_to_graph(ethanol, model.r_max)
    atom_types = torch.tensor([{1: 0, 6: 1, 8: 2}[z] for z in ethanol.numbers])
    expected = v030_atomic_energies(model, graph, atom_types, avg_num_neighbors=6.5)
    torch.testing.assert_close(model(graph, atom_types), expected, rtol=1e-12, atol=1e-12)
    assert expected.abs().min() > 1e-3  # a real comparison, not of zeros


def test_resnet_parameter_count_matches_v030():
    """The tutorial settings (4 species) in resnet mode have v0.3.0's parameters but two blocks.

    v0.3.0 Allegro_Module (and its model builder, allegro/model/_allegro.py) with l_max 1, parity
    o3_full, 2 layers, 64 scalars (every latent MLP [64, 64], readout [64]), 32 tensor channels,
    radial-chemical embedding 64, 8 Bessels, tensors_mixing_mode uuulin, env_embed_mlp [] (linear).
    """
    species, bessels, embed, scalars, channels, n_sh = 4, 8, 64, 64, 32, 2  # n_sh: 0e + 1o
    # tensor track (l. 137-181): layer 0 maps 0e+1o to 0e (0e x 0e, 1o x 1o) and 1o (0e x 1o,
    # 1o x 0e); 1e is pruned, nothing after it leads to 0e. Layer 1 maps 0e+1o to 0e (2 paths).
    paths, scalar_paths = [4, 2], [2, 2]
    v030 = {
        "AllegroBesselBasis bessel_weights (trainable by default)": bessels,
        "ProductTypeEmbedding type_embeddings [2, types, 32]": 2 * species * (embed // 2),
        "ProductTypeEmbedding basis_mlp (linear)": bessels * embed,
        "latents[0]: two-body MLP 64 -> 64 -> 64": embed * 64 + 64 * scalars,
        "env_embed_mlps[0]: edge + environment weights": scalars * (2 * channels * n_sh),
        "env_embed_mlps[1]": scalars * channels * n_sh,
        "tps (uuulin: no weights)": 0,
        "linears[0]: 32 x 32 per path": channels * channels * paths[0],
        "linears[1]: 32 x 32 per path, output never read": channels * channels * paths[1],
        "latents[1]: (64 + 32 * 2) -> 64 -> 64": (scalars + channels * scalar_paths[0]) * 64
        + 64 * scalars,
        "final_latent: (64 + 32 * 2) -> 64 -> 64": (scalars + channels * scalar_paths[1]) * 64
        + 64 * scalars,
        "resnet coefficients (a buffer unless learnable)": 0,
        "edge_eng MLP 64 -> 64 -> 1": scalars * 64 + 64,
    }
    assert sum(v030.values()) == 56136
    not_in_molfold = bessels + channels * channels * paths[1]  # fixed Bessels, no dead linear

    model = Allegro(num_types=species, latent_update="resnet", avg_num_neighbors=10.0)
    assert [layer.tensor_product.path_irreps for layer in model.layers] == [
        o3.Irreps("0e+0e+1o+1o"),
        o3.Irreps("0e+0e"),
    ]
    assert sum(p.numel() for p in model.parameters()) == 56136 - not_in_molfold == 54080
    learnable = Allegro(
        4, latent_update="resnet", avg_num_neighbors=10.0, latent_resnet_coefficients_learnable=True
    )
    assert sum(p.numel() for p in learnable.parameters()) == 54080 + 3  # one logit per latent


@pytest.mark.parametrize("learnable", [False, True])
def test_resnet_coefficients_are_fixed_unless_learnable(learnable):
    """v0.3.0 l. 369-376: the logits are a buffer (saved, not trained) unless asked to learn."""
    model = Allegro(
        2,
        num_layers=2,
        latent_update="resnet",
        avg_num_neighbors=5.0,
        latent_resnet_coefficients_learnable=learnable,
    )
    names = {name for name, _ in model.named_parameters()}
    assert ("latent_mixing.logits" in names) == learnable
    assert "latent_mixing.logits" in model.state_dict()
    torch.testing.assert_close(model.latent_mixing.logits, torch.zeros(3))


@pytest.mark.parametrize(
    "hparams, message",
    [
        (
            dict(latent_update="resnet", tp_path_channel_coupling=False),
            "needs latent_update='dense'",
        ),
        (dict(latent_resnet_coefficients_learnable=True), "needs latent_update='resnet'"),
        (dict(latent_update="resnet", avg_num_neighbors=1.0), "must exceed 1 when each edge"),
    ],
)
def test_mode_specific_hyperparameters_are_checked(hparams, message):
    with pytest.raises(ValueError, match=message):
        Allegro(2, **hparams)
