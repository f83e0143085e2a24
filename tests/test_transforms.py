"""Transforms: the radius graph and the 2D molecular graph, rebuilt from what sources store, and
the cache of transformed structures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.data import Data

import molfold.data.sources as sources
from molfold.data.datamodule import load_structures, parse_data_config
from molfold.data.molgraph import mol_from_fields, mol_to_graph, molecule_fields
from molfold.data.neighbors import build_graph
from molfold.data.sources.geom import load_geom
from molfold.data.structure_cache import cache_file
from molfold.data.transforms import MolecularGraph, RadiusGraph

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
