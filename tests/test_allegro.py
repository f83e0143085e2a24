"""Allegro: the model tests of :class:`~tests.model_tests.EnergyModelTests` (symmetry, batching,
locality, smoothness, finite-difference forces and stress) over dense and resnet configurations,
their parameter counts from the reference code's structure and their tensor tracks by hand, and the
``"resnet"`` mode against allegro v0.3.0 (equations and parameter count)."""

from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3

from molfold.data import graph as G
from molfold.data.neighbors import atoms_to_graph
from molfold.models.allegro import Allegro

from .common import SMALL, make_potential
from .equivariance import evaluate
from .model_tests import EnergyModelTests, ModelConfig


# --- the model tests ----------------------------------------------------------------------------
def _mlp(widths: list[int]) -> int:
    """Weights of a bias-free MLP through ``widths``."""
    return sum(a * b for a, b in zip(widths, widths[1:]))


def reference_parameter_count(
    num_types: int, h: dict, paths: list[int], scalar_paths: list[int]
) -> int:
    """Parameters of the reference code for hyperparameters ``h`` (every size given) and the
    tensor-product paths of each layer (``paths``; ``scalar_paths``: those to 0e), counted by
    hand, module by module.

    ``"dense"``: nequip-allegro 0.8.3 (``allegro/model/allegro_models.py``, ``nn/_allegro.py``):
    ProductTypeEmbedding (two [T, D/2] type embeddings, a linear Bessel -> D), the two-body MLP,
    the V^0 weights (a linear S -> C n_sh), the first projection S -> S + C n_sh, per layer k a
    latent MLP (S (k + 1) + C -> S, plus C n_sh environment weights except in the last layer) and
    Contracter path weights ([C, paths], or [paths] without path-channel coupling; no path
    dimension for one path), and the readout S (L + 1) -> 1. No biases, fixed Bessels.

    ``"resnet"``: allegro v0.3.0 as :func:`test_resnet_parameter_count_matches_v030` counts it,
    less its trainable Bessels and the linear after the last tensor product: the same two-body
    part, the V^0 weights, per layer a linear environment embedding S -> C n_sh, a latent MLP
    (S + C scalar_paths -> S) and, but in the last layer, a C x C linear per path; one logit per
    latent when learnable; the readout S -> 1.
    """
    types, bessels, embed = num_types, h["num_bessels"], h["radial_chemical_embed_dim"]
    scalars, channels, layers = h["num_scalar_features"], h["num_tensor_features"], h["num_layers"]
    env_weights = channels * (h["l_max"] + 1)  # one weight per channel and SH irrep
    count = types * embed + bessels * embed + _mlp([embed, *h["two_body_mlp_hidden"], scalars])
    count += scalars * env_weights  # V^0
    hidden = h["allegro_mlp_hidden"]
    if h["latent_update"] == "dense":
        count += scalars * (scalars + env_weights)
        for k in range(layers):
            out = scalars + (env_weights if k < layers - 1 else 0)
            count += _mlp([scalars * (k + 1) + channels, *hidden, out])
            coupling = channels if h.get("tp_path_channel_coupling", True) else 1
            count += coupling * (paths[k] if paths[k] > 1 else 1)
        readout_in = scalars * (layers + 1)
    else:
        for k in range(layers):
            count += scalars * env_weights
            count += channels * channels * paths[k] if k < layers - 1 else 0
            count += _mlp([scalars + channels * scalar_paths[k], *hidden, scalars])
        count += layers + 1 if h.get("latent_resnet_coefficients_learnable", False) else 0
        readout_in = scalars
    return count + _mlp([readout_in, *h["readout_mlp_hidden"], 1])


def test_reference_parameter_formulas():
    """The counting above gives the reference codes' numbers for the tutorial settings (4 species,
    l_max 1, 2 layers: paths [4, 2], scalar paths [2, 2]): nequip-allegro 0.8.3's 62,464 and
    v0.3.0's 56,136 less 8 Bessels and the 32 x 32 x 2 dead linear."""
    tutorial = dict(
        num_bessels=8,
        radial_chemical_embed_dim=64,
        num_scalar_features=64,
        num_tensor_features=32,
        num_layers=2,
        l_max=1,
        two_body_mlp_hidden=[64],
        allegro_mlp_hidden=[64],
        readout_mlp_hidden=[64],
    )
    dense = reference_parameter_count(4, {**tutorial, "latent_update": "dense"}, [4, 2], [2, 2])
    resnet = reference_parameter_count(4, {**tutorial, "latent_update": "resnet"}, [4, 2], [2, 2])
    assert dense == 62464
    assert resnet == 56136 - 8 - 32 * 32 * 2


def test_reference_parameter_count():
    """The tutorial hyperparameters give nequip-allegro 0.8.3's 62,464 parameters (4 species)."""
    model = Allegro(num_types=4)
    assert sum(p.numel() for p in model.parameters()) == 62464


SPECIES = [1, 6, 8, 29]
STATISTICS = {
    "species": SPECIES,
    "energy_scale": [0.5, 0.7, 0.9, 1.1],
    "energy_shifts": [-3.0, -2.0, -1.5, -1.0],
}
BASE = dict(SMALL, r_max=4.0, num_bessels=8, avg_num_neighbors=10.0)
# Tensor tracks by hand (each irrep once). SH(1) = 0e+1o, SH(2) = 0e+1o+2e; a layer may output
# every allowed irrep in a product of its input with the SH (the last layer only 0e), then irreps
# from which no product reaches the next layer's output are pruned. Paths: pairs (input irrep, SH
# irrep) whose product holds an output irrep, summed over output irreps; scalar paths: those to 0e.
# * l_max 1, parity: 0e+1o -> {0e: 0e0e, 1o1o; 1o: 0e1o, 1o0e; 1e: 1o1o, pruned: 1e x SH has no
#   0e} -> 0e; paths [4, 2], scalar [2, 2].
# * l_max 2, parity, 3 layers: layer 0 reaches 0e, 1e, 1o, 2e, 2o (no 0o: no pair of equal l and
#   opposite parity); layer 1 also 0o, but 0o, 1e, 2o are pruned (no 0e in their products with
#   the SH), leaving 0e+1o+2e; paths: layer 0 {0e: 3, 1e: 2 (1o1o, 2e2e), 1o: 4 (0e1o, 1o0e, 1o2e,
#   2e1o), 2e: 4 (0e2e, 1o1o, 2e0e, 2e2e), 2o: 2 (1o2e, 2e1o)} = 15, layer 1 {0e: 3, 1o: 6, 2e: 6}
#   = 15, layer 2 {0e: 0e0e, 1o1o, 2e2e} = 3; scalar [3, 3, 3].
# * l_max 2, no parity (allowed = SH irreps): 0e+1o+2e throughout, then 0e; paths {0e: 3, 1o: 4,
#   2e: 4} = 11 per inner layer, 3 in the last; scalar 3.
L1_TRACK, L1_PATHS = ["0e+1o", "0e+1o", "0e"], ([4, 2], [2, 2])
L2_SO3 = "0e+1o+2e"
CASES = {
    "dense-l1": (dict(latent_update="dense", l_max=1, num_layers=2), L1_TRACK, L1_PATHS),
    "resnet-l1": (dict(latent_update="resnet", l_max=1, num_layers=2), L1_TRACK, L1_PATHS),
    "dense-l2-3-layers": (
        dict(latent_update="dense", l_max=2, num_layers=3),
        ["0e+1o+2e", "0e+1e+1o+2e+2o", "0e+1o+2e", "0e"],
        ([15, 15, 3], [3, 3, 3]),
    ),
    "resnet-l2-no-parity-3-layers-learnable": (
        dict(
            latent_update="resnet",
            l_max=2,
            parity=False,
            num_layers=3,
            latent_resnet_coefficients_learnable=True,
        ),
        [L2_SO3, L2_SO3, L2_SO3, "0e"],
        ([11, 11, 3], [3, 3, 3]),
    ),
    "dense-l2-no-parity-uncoupled": (
        dict(latent_update="dense", l_max=2, parity=False, tp_path_channel_coupling=False),
        [L2_SO3, L2_SO3, "0e"],
        ([11, 3], [3, 3]),
    ),
}
CONFIGS = [
    ModelConfig(
        "allegro",
        {**BASE, "num_layers": 2, **hparams},
        STATISTICS,
        num_parameters=reference_parameter_count(
            len(SPECIES), {**BASE, "num_layers": 2, **hparams}, *paths
        ),
        id=name,
    )
    for name, (hparams, _, paths) in CASES.items()
]


class TestAllegro(EnergyModelTests):
    @pytest.fixture(scope="class", params=CONFIGS, ids=str)
    @classmethod
    def model_config(cls, request):
        return request.param

    def test_tensor_track_irreps(self, model_config, model):
        """The tensor track is the one derived by hand above (which the parameter count uses)."""
        expected = [o3.Irreps(irreps) for irreps in CASES[model_config.id][1]]
        assert model.model.track_irreps == expected


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
        # v0.3.0 orders the weights channel-major (u, r); molfold stores the columns of the maps
        # that give them irrep-major (r, u), the same maps up to a fixed permutation of columns
        channel_major = weights.view(-1, len(sh_slices), mul).transpose(1, 2)
        return channel_major[:, :, irrep_of_component] * sh[:, None, :]

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
