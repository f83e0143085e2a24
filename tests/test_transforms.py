"""Transforms: the radius graph and the 2D molecular graph, rebuilt from what sources store, and
the cache of transformed structures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.data import Batch, Data

import molfold.data.sources as sources
from molfold.conformers.starts import EtkdgMmffStart
from molfold.data import graph as G
from molfold.data.datamodule import load_structures, parse_data_config
from molfold.data.molgraph import mol_from_fields, mol_to_graph, molecule_fields, smiles_to_graph
from molfold.data.neighbors import build_graph
from molfold.data.sources.geom import load_geom
from molfold.data.structure_cache import cache_file
from molfold.data.transform_pool import transform_structures
from molfold.data.transforms import LaplacianEigenvectors, MolecularGraph, RadiusGraph
from molfold.errors import DataError
from molfold.models.registry import build_model

from .conftest import DATA

GEOM = {"format": "geom", "path": str(DATA / "geom_xtb")}


def embedded(smiles: str, seed: int = 7):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return mol


def test_molecular_graph_equals_featurising_the_molecule_itself():
    """On every shipped GEOM molecule, the transform of the stored fields gives the features,
    bonds and chirality that featurising the source's RDKit molecule directly gives."""
    for molecule in load_geom(DATA / "geom_xtb"):
        expected = mol_to_graph(molecule.mol)
        structure = Data(**molecule_fields(molecule.mol), pos=torch.from_numpy(molecule.pos))
        got = MolecularGraph()(structure, molecule.smiles)
        assert torch.equal(got.atom_features, expected.atom_features), molecule.smiles
        assert torch.equal(got.bond_index, expected.bond_index)
        assert torch.equal(got.bond_type, expected.bond_type)


@pytest.mark.parametrize(
    "smiles", ["N[C@@H](C)C(=O)O", "N[C@H](C)C(=O)O", "C[C@H]1CC[C@@H](O)CC1", "c1ccncc1"]
)
def test_rebuilt_molecule_keeps_its_stereocentres(smiles):
    """Chiral tags are relative to the bond order: rebuilt from the fields, the molecule is the
    same stereoisomer (canonical isomeric SMILES). Double-bond configurations are not stored:
    like the papers' features, molfold's carry tetrahedral chirality only."""
    mol = embedded(smiles)
    Chem.AssignStereochemistryFrom3D(mol)
    pos = torch.from_numpy(mol.GetConformer().GetPositions())
    structure = Data(**molecule_fields(mol), pos=pos)
    rebuilt = mol_from_fields(structure)
    Chem.AssignStereochemistry(rebuilt, cleanIt=True, force=True)
    assert Chem.MolToSmiles(Chem.RemoveHs(rebuilt)) == Chem.MolToSmiles(Chem.RemoveHs(mol))
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.CanonSmiles(smiles)


def test_radius_graph_is_the_neighbour_list_of_the_structure(ethanol):
    expected = build_graph(ethanol.numbers, ethanol.positions, 3.0)
    bare = build_graph(ethanol.numbers, ethanol.positions, None)
    assert "edge_index" not in bare
    got = RadiusGraph(3.0)(bare)
    assert torch.equal(got.edge_index, expected.edge_index)
    assert torch.equal(got.edge_cell_shift, expected.edge_cell_shift)


def structure_cache_file(values):
    return cache_file(*parse_data_config(values), [MolecularGraph()])


def test_transformed_structures_are_cached_and_a_bad_cache_is_rebuilt(monkeypatch):
    first = load_structures(GEOM, [MolecularGraph()])
    cache = structure_cache_file(GEOM)
    assert cache.is_file()

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was read again")

    geom = sources.source("geom")
    monkeypatch.setitem(sources._SOURCES, "geom", dataclasses.replace(geom, load=no_reading))
    cached = load_structures(GEOM, [MolecularGraph()])
    monkeypatch.undo()
    assert len(cached) == len(first) == 24
    for a, b in zip(first, cached):
        for key in ("atom_features", "bond_index", "pos", "z"):
            assert torch.equal(a[key], b[key]), key
        assert a.smiles == b.smiles and a.name == b.name
    cache.write_bytes(b"not a checkpoint")
    rebuilt = load_structures(GEOM, [MolecularGraph()])
    assert np.array_equal(rebuilt[3].atom_features.numpy(), first[3].atom_features.numpy())
    other = structure_cache_file({**GEOM, "max_structures": 5})
    assert other != cache  # another selection of structures, another cache


def test_laplacian_eigenvectors_diagonalise_the_normalised_laplacian():
    graph = smiles_to_graph("CC(=O)Nc1ccc(O)cc1")[0]
    n = graph.num_nodes
    vectors = LaplacianEigenvectors()(graph).lap_vectors.reshape(n, n).numpy()
    adjacency = np.zeros((n, n))
    adjacency[graph.bond_index[0].numpy(), graph.bond_index[1].numpy()] = 1.0
    d = (adjacency.sum(1) + 1e-8) ** -0.5  # the reference keeps isolated atoms finite
    laplacian = np.eye(n) - d[:, None] * adjacency * d[None, :]
    values = np.linalg.eigvalsh(laplacian)  # independent: numpy's solver
    np.testing.assert_allclose(laplacian @ vectors, vectors * values[None, :], atol=1e-10)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(n), atol=1e-10)


def test_rebind_gives_the_same_prediction_with_precomputed_eigenvectors():
    """The data pipeline's eigenvectors (training, eval) and the model's own (molfold predict)
    are the same numbers, so the prediction is too."""
    torch.manual_seed(0)
    model = build_model(
        "rebind",
        dict(d_model=32, num_heads=4, d_ffn=64, num_encoder_layers=1, num_decoder_layers=1),
    ).eval()
    graphs = [smiles_to_graph(s)[0] for s in ("CCO", "CC(=O)Nc1ccc(O)cc1", "C1CCCCC1")]
    plain = Batch.from_data_list([g.clone() for g in graphs])
    precomputed = Batch.from_data_list([LaplacianEigenvectors()(g.clone()) for g in graphs])
    assert "lap_vectors" in precomputed and "lap_vectors" not in plain
    with torch.no_grad():
        a, b = model(plain), model(precomputed)
    for key in ("pos", "pos_intermediate"):
        assert torch.equal(a[key], b[key]), key


def test_eigenvectors_of_a_molecule_do_not_depend_on_its_batch():
    """Molecules of one size with repeated eigenvalues (CH3 groups), alone and batched together
    and with a larger one: the same eigenvectors to the last bit."""
    from torch_geometric.utils import to_dense_adj, to_dense_batch

    from molfold.data.laplacian import laplacian_eigenvectors

    graphs = [smiles_to_graph(s)[0] for s in ("CCCO", "CC(C)O", "COCC", "CC(=O)Nc1ccc(O)cc1")]

    def encode(selection):
        batch = Batch.from_data_list([graphs[k] for k in selection])
        _, mask = to_dense_batch(batch.z, batch.batch)
        adjacency = to_dense_adj(batch.bond_index, batch.batch, max_num_nodes=mask.shape[1])
        return laplacian_eigenvectors(adjacency.double(), mask)

    alone = [encode([k])[0] for k in range(4)]
    together = encode([0, 1, 2, 3])
    for k, single in enumerate(alone):
        n = single.shape[0]
        assert torch.equal(together[k, :n, :n], single), k


@dataclasses.dataclass(frozen=True)
class RefuseCarbonFree:
    """A costly (``cache_version``) transform that refuses a structure without carbon."""

    cache_version: int = 1

    def __call__(self, data: Data, where: str = "structure") -> Data:
        if not (data.z == 6).any():
            raise DataError(f"{where}: no carbon")
        return data


def test_costly_transforms_in_worker_processes_give_what_one_process_gives():
    """The ETKDG + MMFF start of every shipped GEOM conformer, made by two worker processes,
    equals the one made here structure by structure, in the same order; a worker's molfold error
    comes back naming its structure."""
    structures = load_structures(GEOM)
    transforms = [MolecularGraph(), EtkdgMmffStart()]
    expected = []
    for data in structures[:12]:
        for transform in transforms:
            data = transform(data.clone())
        expected.append(data)
    made = transform_structures(
        [d.clone() for d in structures[:12]], transforms, "geom", processes=2, parallel_min=1
    )
    assert len(made) == len(expected)
    for got, want in zip(made, expected, strict=True):
        assert G.POS_START in got and sorted(got.keys()) == sorted(want.keys())
        for key, value in want:  # a Data iterates over (key, value) pairs
            same = torch.equal if torch.is_tensor(value) else (lambda a, b: a == b)
            assert same(got[key], value), key
    water = Data(z=torch.tensor([8, 1, 1]), pos=torch.zeros(3, 3))
    with pytest.raises(DataError, match="geom structure 2: no carbon"):
        transform_structures(
            [structures[0], structures[1], water, structures[2]],
            [RefuseCarbonFree()],
            "geom",
            processes=2,
            parallel_min=1,
        )
