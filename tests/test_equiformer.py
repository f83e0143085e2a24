"""Equiformer: the model tests of :class:`~tests.model_tests.EnergyModelTests` (potential) and
:class:`~tests.model_tests.PropertyModelTests` (property model) over small SE(3) and E(3)
configurations, node features against their Wigner D matrices, invariant attention weights, the
depth-wise tensor product's paths, parameter counts of the published configurations against the
reference code, smoothness at r_max (and the reference's lack of it) and the radial bases in
closed form.

Reference parameter counts: atomicarchitects/equiformer @64cb786, its ``nets/`` instantiated in a
scratch directory outside molfold with torch 2 and e3nn 0.6.0 (which still accept the reference's
arguments), stub modules for ``torch_cluster`` and ``torch_scatter`` (unused when building) and for
``ocpmodels`` (registry, PBC utilities, and GemNet's ``RadialBasis`` with its only parameters, the
num_radial trainable frequencies of ``SphericalBesselBasis``); counted as
``sum(p.numel() for p in model.parameters())``. The module constant ``_MAX_ATOM_TYPE`` (the size
of the reference's one-hot) was set to the number of species of each small configuration.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from e3nn import o3
from torch_geometric.data import Batch

from molfold.data import graph as G
from molfold.data.neighbors import atoms_to_graph
from molfold.errors import DataError
from molfold.models.equiformer import EquiformerEnergy, EquiformerProperty
from molfold.models.registry import model_entry
from molfold.nn.equiformer_drop import GraphDropPath
from molfold.nn.equiformer_edges import edge_softmax
from molfold.nn.equiformer_tp import DepthwiseTensorProduct
from molfold.nn.radial_bases import CosineCutoff, ExpNormalBasis, GaussianBasis, radial_basis

from .equivariance import evaluate, random_orthogonal
from .model_tests import EnergyModelTests, ModelConfig, PropertyModelTests

SPECIES = [1, 6, 8, 29]
POTENTIAL_STATISTICS = {
    "species": SPECIES,
    "energy_scale": [0.5, 0.7, 0.9, 1.1],
    "energy_shifts": [-3.0, -2.0, -1.5, -1.0],
    "avg_num_nodes": 5.0,
    "avg_num_neighbors": 6.0,
}
PROPERTY_STATISTICS = {
    "species": SPECIES,
    "targets": {"names": ["homo"], "means": [-0.2], "stds": [0.5]},
}
# two blocks, tiny irreps; the averages as a config's ${statistics:...} would give them
BASE = dict(
    r_max=4.0,
    num_layers=2,
    num_heads=2,
    num_basis=8,
    radial_hidden=[8, 8],
    readout_irreps="16x0e",
    avg_num_nodes=5.0,
    avg_num_neighbors=6.0,
)
SE3 = dict(irreps_node="8x0e+4x1e+2x2e", irreps_head="4x0e+2x1e+1x2e", irreps_ffn="16x0e+8x1e+4x2e")
E3 = dict(
    parity=True,
    irreps_node="8x0e+2x0o+2x1e+2x1o+2x2e",
    irreps_head="4x0e+1x0o+1x1e+1x1o+1x2e",
    irreps_ffn="16x0e+4x0o+4x1e+4x1o+4x2e",
)
# OC20-like: l_max 1, tags, the IS2RS head, readout irreps with vectors as the reference's aux runs
OC20_LIKE = dict(
    BASE,
    parity=True,
    l_max=1,
    irreps_node="8x0e+2x0o+2x1e+4x1o",
    irreps_head="4x0e+1x0o+1x1e+2x1o",
    irreps_pre_attention="8x0e+2x0o+2x1e+4x1o",
    irreps_ffn="16x0e+4x0o+4x1e+8x1o",
    readout_irreps="16x0e+4x1o",
    drop_path=0.05,
    tag_embedding=True,
    atom_vector_head=True,
)


# Parameter counts of the reference (module docstring): GraphAttentionTransformerMD17 (potential
# configurations), GraphAttentionTransformer (QM9) and GraphAttentionTransformerOC20 (OC20-like,
# use_auxiliary_task=True), with _MAX_ATOM_TYPE = 4 and the same irreps, bases and widths.
POTENTIALS = [
    ModelConfig(
        "equiformer",
        dict(BASE, **SE3, radial_basis="exp_normal", attention_dropout=0.0),
        POTENTIAL_STATISTICS,
        num_parameters=6181,
        id="se3-exp-normal-nonlinear",
        kind="potential",
    ),
]
POTENTIALS_E3 = [
    ModelConfig(
        "equiformer",
        dict(BASE, **E3, radial_basis="gaussian", nonlinear_messages=False, attention_dropout=0.0),
        POTENTIAL_STATISTICS,
        num_parameters=5133,
        id="e3-gaussian-linear",
        kind="potential",
    ),
]
PROPERTIES = [
    ModelConfig(
        "equiformer",
        dict(BASE, **SE3, radial_basis="bessel"),
        PROPERTY_STATISTICS,
        num_parameters=6189,
        id="qm9-like-bessel",
        kind="property",
    ),
]
PROPERTIES_E3 = [
    ModelConfig(
        "equiformer",
        OC20_LIKE,
        PROPERTY_STATISTICS,
        num_parameters=6829,
        id="oc20-like-tags-vectors",
        kind="property",
    ),
]


class TestEquiformerEnergySE3(EnergyModelTests):
    """The reference's SE(3) irreps (spherical harmonics labelled 0e+1e+2e): not reflection
    equivariant."""

    reflections = False

    @pytest.fixture(scope="class", params=POTENTIALS, ids=str)
    @classmethod
    def model_config(cls, request):
        return request.param


class TestEquiformerEnergyE3(EnergyModelTests):
    @pytest.fixture(scope="class", params=POTENTIALS_E3, ids=str)
    @classmethod
    def model_config(cls, request):
        return request.param


def _with_tags(atoms):
    atoms = atoms.copy()
    atoms.set_tags([k % 3 for k in range(len(atoms))])
    return atoms


class TestEquiformerPropertySE3(PropertyModelTests):
    scalar_outputs = ("target",)
    reflections = False

    @pytest.fixture(scope="class", params=PROPERTIES, ids=str)
    @classmethod
    def model_config(cls, request):
        return request.param


class TestEquiformerPropertyE3(PropertyModelTests):
    """OC20-like: tags (carried by the ASE Atoms, so permuted and kept under transformations)."""

    scalar_outputs = ("target",)
    vector_outputs = ("atom_vectors",)

    @pytest.fixture(scope="class", params=PROPERTIES_E3, ids=str)
    @classmethod
    def model_config(cls, request):
        return request.param

    @pytest.fixture
    def structures(self, ethanol, triclinic_cu):
        crystal = triclinic_cu.copy()
        crystal.numbers[1] = 8
        return {"molecule": _with_tags(ethanol), "crystal": _with_tags(crystal)}

    def evaluate(self, model, atoms):
        graph = atoms_to_graph(atoms, model.r_max)
        graph[G.TAGS] = torch.as_tensor(atoms.get_tags(), dtype=torch.long)
        with torch.no_grad():
            out = model(graph)
        return {k: v.detach().cpu().numpy() for k, v in out.items()}


# --- node features and attention weights under O(3) ---------------------------------------------
FEATURE_CASES = {
    # readout irreps with l > 0, so that the final features are not all invariant
    "se3": (dict(BASE, **SE3, readout_irreps="6x0e+3x1e+2x2e"), [False]),
    "e3": (dict(BASE, **E3, readout_irreps="6x0e+2x0o+2x1e+2x1o+2x2e"), [False, True]),
}


@contextlib.contextmanager
def float64():
    """Default dtype float64 inside: e3nn makes its constants (Clebsch-Gordan coefficients, the
    Wigner D of ``D_from_matrix``) in the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _network(hparams: dict, cls=EquiformerEnergy, **extra) -> torch.nn.Module:
    """The raw network, built in float64 (as :func:`~molfold.models.registry.build_model`)."""
    torch.manual_seed(0)
    with float64():
        return cls(num_types=len(SPECIES), **hparams, **extra).eval()


def _graph(atoms, r_max: float):
    graph = atoms_to_graph(atoms, r_max)
    types = torch.as_tensor([SPECIES.index(z) for z in atoms.numbers])
    return graph, types


def _moved(graph, matrix: np.ndarray, shift: np.ndarray):
    """The same graph (same edges) with r -> R r + t and the cell rows rotated."""
    moved = copy.copy(graph)
    rotation = torch.from_numpy(matrix)
    moved[G.POS] = graph[G.POS] @ rotation.T + torch.from_numpy(shift)
    moved[G.CELL] = graph[G.CELL] @ rotation.T
    return moved


@pytest.mark.parametrize("structure", ["molecule", "crystal"])
@pytest.mark.parametrize("case", sorted(FEATURE_CASES))
def test_node_features_rotate_by_their_wigner_d(case, structure, ethanol, triclinic_cu):
    """Final node features f [N, irreps.dim] of a rotated (E(3) config: also reflected) and
    translated structure are f D(R)^T, D from e3nn's ``Irreps.D_from_matrix``, to 1e-9."""
    hparams, reflects = FEATURE_CASES[case]
    model = _network(hparams)
    atoms = {"molecule": ethanol, "crystal": triclinic_cu}[structure]
    graph, types = _graph(atoms, model.r_max)
    with torch.no_grad():
        features = model.node_features(graph, types)
        irreps = model.irreps
        vectors = features[:, irreps.slices()[1].start :]
        assert vectors.abs().max() > 1e-3  # the l > 0 features are there
        for seed, reflect in enumerate(reflects):
            matrix = random_orthogonal(np.random.default_rng(seed), reflect)
            moved = _moved(graph, matrix, np.array([0.3, -1.0, 2.0]))
            with float64():
                wigner = irreps.D_from_matrix(torch.from_numpy(matrix))
            expected = features @ wigner.T
            torch.testing.assert_close(
                model.node_features(moved, types), expected, rtol=0, atol=1e-9
            )
            assert (expected - features).abs().max() > 1e-3  # the rotation changes them


def test_se3_features_are_not_reflection_equivariant(ethanol):
    """Control: with the reference's even-labelled harmonics, a reflection is not D(-R)."""
    model = _network(FEATURE_CASES["se3"][0])
    graph, types = _graph(ethanol, model.r_max)
    matrix = random_orthogonal(np.random.default_rng(5), reflect=True)
    with torch.no_grad():
        features = model.node_features(graph, types)
        moved = model.node_features(_moved(graph, matrix, np.zeros(3)), types)
    with float64():
        wigner = model.irreps.D_from_matrix(torch.from_numpy(matrix))
    assert (moved - features @ wigner.T).abs().max() > 1e-4


@pytest.mark.parametrize("envelope", [False, True], ids=["softmax", "enveloped"])
def test_attention_weights_are_invariant(envelope, ethanol):
    """Every block's attention weights [E, H] are unchanged by a rotation, a reflection (E(3)
    config) and a translation; without the envelope they sum to 1 over each centre's incoming
    edges, with it to less."""
    model = _network(dict(BASE, **E3), cutoff_envelope=envelope)
    graph, types = _graph(ethanol, model.r_max)
    with torch.no_grad():
        weights = model.backbone.attention_weights(graph, types)
        for seed, reflect in enumerate([False, True]):
            matrix = random_orthogonal(np.random.default_rng(seed), reflect)
            moved = _moved(graph, matrix, np.array([1.0, 2.0, -0.5]))
            for got, expected in zip(model.backbone.attention_weights(moved, types), weights):
                torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    centre = graph[G.EDGE_INDEX][1]
    for alpha in weights:
        assert alpha.shape == (centre.shape[0], 2)
        sums = torch.zeros(graph.num_nodes, 2, dtype=alpha.dtype).index_add(0, centre, alpha)
        if envelope:
            assert bool((sums < 1).all()) and bool((sums > 0).all())
        else:
            torch.testing.assert_close(sums, torch.ones_like(sums))
        assert alpha.std() > 1e-3  # not uniform


def test_edge_softmax_weighted_by_hand():
    """alpha_ij = w_ij exp(a_ij) / sum_k w_ik exp(a_ik), per centre, stable for large logits."""
    logits = torch.tensor([[1000.0], [999.0], [3.0], [-2.0]], dtype=torch.float64)
    dst = torch.tensor([0, 0, 1, 1])
    weight = torch.tensor([0.5, 1.0, 0.2, 0.0], dtype=torch.float64)
    alpha = edge_softmax(logits, dst, 3, weight)[:, 0]
    e = math.exp(-1.0)
    expected = [0.5 / (0.5 + e), e / (0.5 + e), 1.0, 0.0]
    torch.testing.assert_close(alpha, torch.tensor(expected, dtype=torch.float64))


# --- the depth-wise tensor product --------------------------------------------------------------
def _paths_by_hand(node: str, sh: str) -> set[tuple]:
    """(input entry, SH entry, output irrep) for every l3 in |l1 - l2|..l1 + l2 of the right
    parity that is in the node irreps or is 0e."""
    node, sh = o3.Irreps(node), o3.Irreps(sh)
    allowed = {ir for _, ir in node} | {o3.Irrep("0e")}
    paths = set()
    for i, (_, a) in enumerate(node):
        for j, (_, b) in enumerate(sh):
            for l3 in range(abs(a.l - b.l), a.l + b.l + 1):
                ir = o3.Irrep(l3, a.p * b.p)
                if ir in allowed:
                    paths.add((i, j, ir))
    return paths


@pytest.mark.parametrize(
    "node, sh, num_paths, weight_numel",
    [
        # L = 2: from 0e 3 paths, from 1e 6 (1e x 0e; 1e x 1e -> 0e, 1e, 2e; 1e x 2e -> 1e, 2e),
        # from 2e 6 (2e x 0e; 2e x 1e -> 1e, 2e; 2e x 2e -> 0e, 1e, 2e): 128*3 + 64*6 + 32*6
        ("128x0e+64x1e+32x2e", "1x0e+1x1e+1x2e", 15, 960),
        # L = 3: 4 + 9 + 11 + 10 paths (l3 <= 3): 128*4 + 64*9 + 64*11 + 32*10
        ("128x0e+64x1e+64x2e+32x3e", "1x0e+1x1e+1x2e+1x3e", 34, 2112),
        # OC20 L = 1: 0e x 0e, 0e x 1e, 1e x 0e, 1e x 1e -> 0e, 1e: 256*2 + 128*3
        ("256x0e+128x1e", "1x0e+1x1e", 5, 896),
    ],
    ids=["L2", "L3", "OC20-L1"],
)
def test_depthwise_tensor_product_keeps_every_path(node, sh, num_paths, weight_numel):
    tp = DepthwiseTensorProduct(node, sh, node)
    assert tp.num_paths == num_paths and tp.weight_numel == weight_numel
    got = {(ins.i_in1, ins.i_in2, tp.irreps_out[ins.i_out].ir) for ins in tp.tp.instructions}
    assert got == _paths_by_hand(node, sh)
    assert len({ins.i_out for ins in tp.tp.instructions}) == num_paths  # one slot per path
    assert all(ins.connection_mode == "uvu" for ins in tp.tp.instructions)
    ls = [(ir.l, -ir.p) for _, ir in tp.irreps_out]
    assert ls == sorted(ls)  # sorted by l, even first


# --- parameter counts of the published configurations --------------------------------------------
QM9 = dict(avg_num_nodes=18.0, avg_num_neighbors=15.6)
MD17 = dict(QM9, radial_basis="exp_normal", num_basis=32, attention_dropout=0.0)
OC20 = dict(
    irreps_node="256x0e+128x1e",
    l_max=1,
    irreps_head="32x0e+16x1e",
    num_heads=8,
    irreps_pre_attention="256x0e+128x1e",
    irreps_ffn="768x0e+384x1e",
    tag_embedding=True,
    avg_num_nodes=77.8,
    avg_num_neighbors=23.4,
)
# (class, num_types = the reference's one-hot size, hparams, count of the reference: see the
# module docstring; factories graph_attention_transformer_nonlinear_l2 (QM9, 5 types, Gaussian
# 128: the paper's 3.53 M), graph_attention_transformer_nonlinear_exp_l2_md17 and _l3_md17 (64
# types, --num-basis 32 as main_md17's scripts), GraphAttentionTransformerOC20 with the config
# oc20/configs/is2re/all/graph_attention_transformer/l1_256_nonlinear_g@2_local.yml (84 atom
# types, 3 tags: the paper's 9.12 M))
FULL_SIZE = {
    "qm9-l2": (EquiformerProperty, 5, dict(QM9, num_targets=1), 3_531_715),
    "md17-l2": (EquiformerEnergy, 64, MD17, 3_496_001),
    "md17-l3": (
        EquiformerEnergy,
        64,
        dict(
            MD17,
            irreps_node="128x0e+64x1e+64x2e+32x3e",
            l_max=3,
            irreps_head="32x0e+16x1e+16x2e+8x3e",
            irreps_ffn="384x0e+192x1e+192x2e+96x3e",
        ),
        5_500_865,
    ),
    "oc20-is2re": (EquiformerProperty, 84, dict(OC20, num_targets=1), 9_123_331),
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_parameter_counts_equal_the_reference(name):
    cls, num_types, hparams, expected = FULL_SIZE[name]
    model = cls(num_types=num_types, **hparams)
    assert sum(p.numel() for p in model.parameters()) == expected


# --- smoothness at r_max --------------------------------------------------------------------------
def _three_atoms(model, r: float) -> dict:
    # A at the origin, B bonded to it, C at distance r from A (and > r_max from B)
    positions = [[0.0, 0.0, 0.0], [0.0, 1.1, 0.0], [-r, 0.0, 0.0]]
    from ase import Atoms

    return evaluate(model, Atoms(numbers=[1, 6, 8], positions=positions), True)


def test_reference_model_jumps_at_the_cutoff():
    """Control for the envelope: the same potential with ``cutoff_envelope=False`` (the
    reference) changes its energy and forces as the third atom crosses r_max."""
    config = POTENTIALS[0]
    hparams = dict(config.hparams, cutoff_envelope=False)
    model = ModelConfig(config.name, hparams, config.statistics, kind="potential").build()
    r_max = model.r_max
    inside, outside = _three_atoms(model, r_max - 1e-5), _three_atoms(model, r_max + 1e-5)
    assert abs(inside["energy"][0] - outside["energy"][0]) > 1e-4
    assert np.abs(inside["forces"] - outside["forces"]).max() > 1e-4


def test_enveloped_energy_and_forces_vanish_smoothly_at_the_cutoff():
    """With the envelope, the third atom's contribution and force go to zero as it reaches r_max:
    energy differences from the value just outside shrink like (r_max - r)^3 and the force on it
    like (r_max - r)^2 (polynomial envelope p = 5)."""
    model = POTENTIALS[0].build()
    r_max = model.r_max
    outside = _three_atoms(model, r_max + 1e-6)
    gaps = []
    for distance in (0.04, 0.02):
        inside = _three_atoms(model, r_max - distance)
        gaps.append(
            (abs(inside["energy"][0] - outside["energy"][0]), np.abs(inside["forces"][2]).max())
        )
    (e1, f1), (e2, f2) = gaps
    assert e1 > 1e-10 and f1 > 1e-8  # the atom does interact
    assert 5.0 < e1 / e2 < 11.0  # ~8: cubic
    assert 2.5 < f1 / f2 < 5.5  # ~4: quadratic
    np.testing.assert_allclose(outside["forces"][2], 0.0, atol=0.0)


def test_cutoff_envelope_defaults_by_kind():
    """On for the potential (smooth energies), off for the property model (the reference)."""
    potential = _network(dict(BASE, **SE3))
    prop = _network(dict(BASE, **SE3), cls=EquiformerProperty, num_targets=1)
    assert potential.backbone.envelope is not None and prop.backbone.envelope is None


def test_tag_embedding_needs_tags(ethanol):
    model = _network(dict(BASE, **SE3, tag_embedding=True), cls=EquiformerProperty, num_targets=1)
    graph, types = _graph(ethanol, model.r_max)
    with pytest.raises(DataError, match="tags"):
        model(graph, types)
    graph[G.TAGS] = torch.full((graph.num_nodes,), 3)
    with pytest.raises(DataError, match="0, 1 or 2"):
        model(graph, types)


def test_drop_path_drops_whole_graphs():
    drop = GraphDropPath(0.5).train()
    x = torch.ones(6, 4, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1, 2])
    torch.manual_seed(1)
    seen = set()
    for _ in range(20):
        out = drop(x, batch)
        for graph in range(3):
            values = out[batch == graph].unique()
            assert len(values) == 1 and float(values[0]) in (0.0, 2.0)
            seen.add(float(values[0]))
    assert seen == {0.0, 2.0}
    torch.testing.assert_close(drop.eval()(x, batch), x)


def test_property_model_batches(ethanol, triclinic_cu):
    """A batch gives per-graph targets equal to each structure alone."""
    model = PROPERTIES[0].build()
    graphs = [atoms_to_graph(a, model.r_max) for a in (ethanol, triclinic_cu)]
    with torch.no_grad():
        batched = model(Batch.from_data_list(graphs))["target"]
        singles = torch.cat([model(g)["target"] for g in graphs])
    assert batched.shape == (2, 1)
    torch.testing.assert_close(batched, singles, rtol=1e-10, atol=1e-12)


# --- radial bases in closed form ------------------------------------------------------------------
R = np.array([0.3, 1.0, 2.5, 4.2, 4.999, 5.0, 6.0])


def test_gaussian_basis_closed_form():
    with float64():
        basis = GaussianBasis(3, r_max=5.0)
    with torch.no_grad():
        basis.mean.copy_(torch.tensor([[0.1, 0.5, 0.9]], dtype=torch.float64))
        basis.std.copy_(torch.tensor([[0.2, -0.3, 1.0]], dtype=torch.float64))  # |std| is used
        basis.scale.fill_(1.5)
        basis.offset.fill_(-0.1)
    x = 1.5 * R[:, None] / 5.0 - 0.1
    mean, std = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.3, 1.0]) + 1e-5
    expected = np.exp(-0.5 * ((x - mean) / std) ** 2) / (np.sqrt(2 * np.pi) * std)
    np.testing.assert_allclose(basis(torch.from_numpy(R)).detach().numpy(), expected, rtol=1e-12)
    # a standard normal density at its mean
    fresh = GaussianBasis(128, r_max=5.0)
    assert sum(p.numel() for p in fresh.parameters()) == 2 * 128 + 2
    assert float(fresh.mean.detach().min()) >= 0 and float(fresh.mean.detach().max()) < 1
    assert float(fresh.std.detach().min()) >= 1 / 128 and float(fresh.std.detach().max()) < 1


def test_exp_normal_basis_closed_form():
    """phi_k(r) = (cos(pi r / 5) + 1) / 2 exp(-beta (exp(-r) - mu_k)^2), r < 5, by hand."""
    with float64():
        basis = ExpNormalBasis(32, r_max=5.0)
    start = np.exp(-5.0)
    mu = np.linspace(start, 1.0, 32)
    beta = (2.0 / 32 * (1.0 - start)) ** -2
    cutoff = np.where(R < 5.0, 0.5 * (np.cos(np.pi * R / 5.0) + 1.0), 0.0)
    expected = cutoff[:, None] * np.exp(-beta * (np.exp(-R)[:, None] - mu) ** 2)
    np.testing.assert_allclose(basis(torch.from_numpy(R)).numpy(), expected, rtol=1e-12, atol=0)
    assert not list(basis.parameters())  # fixed means and widths
    # the basis and its derivative vanish at r_max
    r = torch.tensor([5.0 - 1e-6], dtype=torch.float64, requires_grad=True)
    value = basis(r).sum()
    (grad,) = torch.autograd.grad(value, r)
    assert abs(float(value)) < 1e-10 and abs(float(grad)) < 1e-5
    np.testing.assert_allclose(CosineCutoff(5.0)(torch.tensor([0.0, 2.5, 5.0])), [1.0, 0.5, 0.0])


def test_bessel_basis_closed_form():
    """sqrt(2 / r_max^3) sin(n pi x) / x (1 - 21 x^5 + 35 x^6 - 15 x^7), x = r / r_max < 1."""
    with float64():
        basis = radial_basis("bessel", 8, r_max=5.0, polynomial_p=5)
    x = R[:, None] / 5.0
    n = np.arange(1, 9)
    envelope = np.where(x < 1, 1 - 21 * x**5 + 35 * x**6 - 15 * x**7, 0.0)
    expected = np.sqrt(2 / 5.0**3) * np.sin(n * np.pi * x) / x * envelope
    np.testing.assert_allclose(
        basis(torch.from_numpy(R)).detach().numpy(), expected, rtol=1e-10, atol=1e-14
    )
    assert sum(p.numel() for p in basis.parameters()) == 8  # trained frequencies, as GemNet's
    with pytest.raises(ValueError, match="radial_basis"):
        radial_basis("sine", 8, 5.0)


# --- configs ------------------------------------------------------------------------------
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "path",
    [
        "model/equiformer.yaml",
        "preset/equiformer_md17.yaml",
        "preset/equiformer_md17_l3.yaml",
        "preset/equiformer_oc20.yaml",
        "preset/equiformer_qm9_energy.yaml",
    ],
)
def test_config_keys_are_hyperparameters(path):
    """Every model key of the config and its presets is a hyperparameter of both kinds; presets
    hold overrides only (no defaults list, which Hydra forbids in an interpolated group)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(CONFIGS / path))
    keys = set(config["model"]) - {"name"}
    for kind in ("potential", "property"):
        assert keys <= set(model_entry("equiformer", kind).hyperparameters()), kind
    if path.startswith("preset/"):
        assert "defaults" not in config and "name" not in config["model"]
