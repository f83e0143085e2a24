"""ReBind: the model tests of :class:`~tests.model_tests.ConformerModelTests` (permutation
equivariance, batch padding, loss invariance, the equivariant decoder), Lennard-Jones rewiring, the
reference's initialisation of the relation weights, and the gate's inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_batch

from molfold.conformers.metrics import distance_l1_loss
from molfold.conformers.starts import START_METHODS, EtkdgMmffStart, etkdg_mmff_start
from molfold.data import graph as G
from molfold.data.laplacian import laplacian_eigenvectors
from molfold.data.molgraph import molecule_fields, smiles_to_graph
from molfold.errors import DataError, UnknownElementError
from molfold.models.rebind import ReBind
from molfold.nn.graph_transformer import MultiRelationalAttention
from molfold.nn.lennard_jones import (
    force_based_rewiring,
    lennard_jones_energy,
    lennard_jones_force,
    pair_parameters,
)

from .model_tests import (
    ConformerModelTests,
    CoordinateMap,
    ModelConfig,
    graph_with_positions,
    permuted_graph,
)

TINY = dict(d_model=32, num_heads=4, d_ffn=64, num_encoder_layers=2, num_decoder_layers=2)
# the normalised Laplacian of this molecule's graph (hydrogens included) has no repeated
# eigenvalue, so its positional encoding is unique up to signs, which molfold fixes
ASYMMETRIC = "N#Cc1ccc(O)c(C#CC#N)c1"


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
    permuted = permuted_graph(graph, order)

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


def test_training_reduces_the_loss_on_one_batch():
    torch.manual_seed(0)
    batch = Batch.from_data_list([graph_with_positions(s) for s in ("CCO", "CC(=O)O", "CCN")])
    model = ReBind(**TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(batch)
        loss = distance_l1_loss(out["pos"], batch.pos.float(), batch.batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# --- the model tests ------------------------------------------------------------------------
CONFIGS = [
    ModelConfig("rebind", {**TINY, "decoder": "paper"}, seed=1, id="paper"),
    ModelConfig("rebind", {**TINY, "decoder": "equivariant"}, seed=1, id="equivariant"),
    ModelConfig(
        "rebind",
        {**TINY, "decoder": "paper", "gate_with_encoding": True, "top_k": 2},
        seed=1,
        id="paper-gate-with-encoding-top-k-2",
    ),
]


class TestReBind(ConformerModelTests):
    coordinate_outputs = (G.POS, G.POS_INTERMEDIATE)
    smiles = ASYMMETRIC

    @pytest.fixture(scope="class", params=CONFIGS, ids=str)
    @classmethod
    def model_config(cls, request):
        return request.param

    def equivariant_part(self, model, batch):
        """The equivariant decoder's refiner, on the inputs it gets in ``batch``: the
        intermediate conformation, encoder embeddings, mask, bond types and the rewired
        adjacencies, to which random attractive edges are added (an untrained model's compressed
        intermediate conformation gives only repulsive ones)."""
        if model.decoder_kind != "equivariant":
            return None
        seen = {}
        hook = model.refiner.register_forward_pre_hook(lambda module, args: seen.update(args=args))
        with torch.no_grad():
            model(batch)
        hook.remove()
        x0, h, mask, bond_type, attraction, repulsion = seen["args"]
        pairs = mask[:, :, None] & mask[:, None, :] & (bond_type == 0)
        generator = torch.Generator().manual_seed(5)
        extra = torch.triu(torch.rand(pairs.shape, generator=generator) > 0.7, 1)
        attraction = attraction + ((extra | extra.transpose(1, 2)) & pairs).to(attraction)
        assert (attraction != 0).any() and (repulsion != 0).any()

        def refine(x):
            return model.refiner(x, h, mask, bond_type, attraction, repulsion)

        return CoordinateMap(refine, x0, mask)

    def test_padding_with_a_repeated_laplacian_eigenvalue(self, model):
        """Where the Laplacian has a repeated eigenvalue (ethanol's methyl hydrogens), the
        prediction still does not depend on the batch: each Laplacian is diagonalised at its own
        size (molfold/models/rebind.py, laplacian_eigenvectors)."""
        graph, larger = self.graph("CCO"), self.graph(self.larger_smiles)
        alone = self._predict(model, [graph])
        padded = self._predict(model, [graph, larger])
        n = graph.num_nodes
        for key in self.coordinate_outputs:
            self._assert_same(padded[key][:n], alone[key], key)


class TestReBindRefiningEtkdg(ConformerModelTests):
    """``start="etkdg"``: the equivariant decoder refines the batch's ETKDG + MMFF conformer, so
    the whole model is E(3)-equivariant in that conformer (its output is centred, so the map
    tested adds the input's centroid back)."""

    smiles = ASYMMETRIC

    @pytest.fixture(scope="class", ids=str)
    @classmethod
    def model_config(cls):
        return ModelConfig("rebind", {**TINY, "decoder": "equivariant", "start": "etkdg"}, seed=1)

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, model_config):
        """A refiner that moves its start: the displacement map, zero when built, drawn at random
        (a zero map would make every equivariance test hold trivially)."""
        model = model_config.build("float64")
        with torch.no_grad():
            model.refiner.displacement.weight.normal_(generator=torch.Generator().manual_seed(2))
        return model

    def graph(self, smiles: str, target_seed: int | None = None):
        graph = super().graph(smiles, target_seed)
        graph[G.POS_START] = etkdg_mmff_start(smiles_to_graph(smiles)[1], seed=3)[0]
        return graph

    def equivariant_part(self, model, batch):
        start, mask = to_dense_batch(batch[G.POS_START], batch[G.BATCH])

        def refine(x):
            moved = batch.clone()
            moved[G.POS_START] = x[mask]
            out = to_dense_batch(model(moved)[G.POS], batch[G.BATCH])[0]
            weights = mask[..., None].to(x)
            return out + (x * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)

        return CoordinateMap(refine, start, mask)

    def test_output_starts_from_the_given_conformer(self, model):
        """Moving the start conformer changes the prediction (the model reads it) and no
        intermediate conformation is returned (nothing for the loss to average with)."""
        graph = self.graph(self.smiles)
        other = graph.clone()
        noise = torch.randn(graph.num_nodes, 3, generator=torch.Generator().manual_seed(0))
        other[G.POS_START] = graph[G.POS_START] + 0.3 * noise.to(graph[G.POS_START])
        out, out_other = self._predict(model, [graph]), self._predict(model, [other])
        assert G.POS_INTERMEDIATE not in out
        assert (
            torch.cdist(out[G.POS], out[G.POS]) - torch.cdist(out_other[G.POS], out_other[G.POS])
        ).abs().max() > 1e-3


def test_an_untrained_refiner_returns_its_start_conformer():
    """Built, the refiner's displacement is zero: its prediction is the ETKDG + MMFF start (up to
    a translation), so training begins from the baseline."""
    graph = smiles_to_graph(ASYMMETRIC)[0]
    graph[G.POS_START] = etkdg_mmff_start(smiles_to_graph(ASYMMETRIC)[1], seed=3)[0].float()
    model = ReBind(**TINY, decoder="equivariant", start="etkdg").eval()
    with torch.no_grad():
        pos = model(Batch.from_data_list([graph]))[G.POS]
    start = graph[G.POS_START]
    torch.testing.assert_close(pos - pos.mean(0), start - start.mean(0), atol=1e-5, rtol=0)


def test_refining_model_needs_a_start_conformer_and_the_equivariant_decoder():
    with pytest.raises(ValueError, match="decoder='equivariant'"):
        ReBind(**TINY, start="etkdg")
    model = ReBind(**TINY, decoder="equivariant", start="etkdg")
    with pytest.raises(DataError, match="pos_start"):
        model(Batch.from_data_list([smiles_to_graph("CCO")[0]]))


def test_etkdg_mmff_start_is_an_mmff_minimum_with_the_smiles_stereo():
    """The start conformer of the data transform: seeded (the same twice), an MMFF94 minimum
    (gradient near zero, by RDKit's own force field) and with the SMILES's stereocentre."""
    from rdkit.Chem import AllChem

    smiles = "C[C@H](N)C(=O)O"
    mol = smiles_to_graph(smiles)[1]
    graph = Data(**molecule_fields(mol))  # as a data source stores a molecule
    transformed = EtkdgMmffStart(seed=2)(graph.clone(), "L-alanine")
    again = EtkdgMmffStart(seed=2)(graph.clone(), "L-alanine")
    torch.testing.assert_close(transformed[G.POS_START], again[G.POS_START])
    probe = Chem.Mol(mol)
    probe.RemoveAllConformers()
    conformer = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(transformed[G.POS_START].tolist()):
        conformer.SetAtomPosition(i, p)
    probe.AddConformer(conformer)
    field = AllChem.MMFFGetMoleculeForceField(probe, AllChem.MMFFGetMoleculeProperties(probe))
    assert max(abs(g) for g in field.CalcGrad()) < 0.05  # kcal/mol/A
    Chem.AssignStereochemistryFrom3D(probe)
    centres = Chem.FindMolChiralCenters(Chem.RemoveHs(probe), useLegacyImplementation=False)
    wanted = Chem.FindMolChiralCenters(Chem.MolFromSmiles(smiles), useLegacyImplementation=False)
    assert centres == wanted


@pytest.mark.parametrize(
    ("smiles", "method"),
    [  # QM9 molecules on which ETKDG with their stereo fails
        ("CCN=C1O[C@H]2C[C@@H]12", "etkdg_random_coords"),
        ("C1CC12[C@H]1C[C@@H]2C1", "etkdg_free_stereo"),
        ("O=C1OC[C@@]23CC[C@]12O3", "layout_2d"),
    ],
)
def test_etkdg_fallbacks_give_strained_molecules_a_start_with_their_stereo(smiles, method):
    """Where ETKDG with the graph's stereo cannot embed a molecule (checked here with RDKit
    itself), the start comes from a fallback, is recorded as such, and still has every
    specified stereocentre and chemically sane bond lengths (0.9-1.8 A)."""
    from rdkit import rdBase
    from rdkit.Chem import AllChem, rdMolTransforms

    mol = smiles_to_graph(smiles)[1]
    probe = Chem.Mol(mol)
    probe.RemoveAllConformers()
    params = AllChem.ETKDGv3()
    params.randomSeed = 1
    with rdBase.BlockLogs():
        assert AllChem.EmbedMolecule(probe, params) == -1
    graph = EtkdgMmffStart()(Data(**molecule_fields(mol)), smiles)
    assert START_METHODS[int(graph[G.START_METHOD])] == method
    conformer = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(graph[G.POS_START].tolist()):
        conformer.SetAtomPosition(i, p)
    probe.AddConformer(conformer)
    for bond in probe.GetBonds():
        length = rdMolTransforms.GetBondLength(
            probe.GetConformer(), bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        )
        assert 0.9 < length < 1.8, (bond.GetIdx(), length)
    Chem.AssignStereochemistryFrom3D(probe)
    centres = Chem.FindMolChiralCenters(Chem.RemoveHs(probe), useLegacyImplementation=False)
    wanted = Chem.FindMolChiralCenters(Chem.MolFromSmiles(smiles), useLegacyImplementation=False)
    assert centres == wanted


def test_conformer_test_split_reports_the_start_baseline_and_its_fallback_fraction():
    """A refining model's test metrics: one of two molecules needed a fallback start (0.5), and
    a model that returns its start unchanged scores exactly the start's own D-MAE and C-RMSD."""
    from molfold.tasks.conformer import ConformerSettings, ConformerTask

    graphs = []
    noise = torch.Generator().manual_seed(0)
    for smiles in ("CC(=O)OC", "O=C1OC[C@@]23CC[C@]12O3"):
        mol = smiles_to_graph(smiles)[1]
        graph = Data(**molecule_fields(mol), num_nodes=mol.GetNumAtoms())
        for transform in ConformerTask.transforms({"start": "etkdg"}):
            graph = transform(graph, smiles)
        graph[G.POS] = graph[G.POS_START] + 0.3 * torch.randn(graph.num_nodes, 3, generator=noise)
        graphs.append(graph)
    batch = Batch.from_data_list(graphs)
    model = ReBind(**TINY, decoder="equivariant", start="etkdg")
    task = ConformerTask(model, ConformerSettings())
    task.accumulate({G.POS: batch[G.POS_START].clone()}, batch, "test")
    metrics = task.metrics(task.errors.reduced())
    assert metrics["start_fallback"] == pytest.approx(0.5)
    assert metrics["d_mae"] == pytest.approx(metrics["d_mae_start"]) and metrics["d_mae"] > 0.05
    assert metrics["c_rmsd"] == pytest.approx(metrics["c_rmsd_start"]) and metrics["c_rmsd"] > 0.05
