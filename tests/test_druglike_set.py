"""The shipped held-out drug-like test set `data/druglike_xtb` (data/README.md): what it claims."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from molfold.data.sources.geom import load_geom

from .conftest import DATA


@pytest.fixture(scope="module")
def molecules():
    return load_geom(DATA / "druglike_xtb" / "drugs_crude.msgpack", all_conformers=True)


def _connectivity(smiles: str) -> str:
    return Chem.MolToInchiKey(Chem.MolFromSmiles(smiles)).split("-")[0]


def test_sixty_or_more_drug_sized_molecules_with_every_stereo_element_specified(molecules):
    assert len(molecules) >= 60
    for molecule in molecules:
        mol = Chem.MolFromSmiles(molecule.smiles)
        assert 10 <= mol.GetNumHeavyAtoms() <= 40
        open_elements = [
            e
            for e in Chem.FindPotentialStereo(mol)
            if e.specified == Chem.StereoSpecified.Unspecified
        ]
        assert open_elements == [], molecule.smiles


def test_reference_geometries_have_the_specified_stereo_and_are_xtb_minima(molecules):
    for molecule in molecules:
        lowest = int(np.argmin(molecule.energies))
        mol = Chem.AddHs(Chem.MolFromSmiles(molecule.smiles))
        conformer = Chem.Conformer(mol.GetNumAtoms())
        for i, p in enumerate(molecule.positions[lowest].tolist()):
            conformer.SetAtomPosition(i, p)
        mol.AddConformer(conformer)
        Chem.AssignStereochemistryFrom3D(mol)
        assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == molecule.smiles


def test_no_constitution_is_shared_with_the_other_shipped_set(molecules):
    shipped = load_geom(DATA / "geom_xtb" / "drugs_crude.msgpack")
    assert not {_connectivity(m.smiles) for m in molecules} & {
        _connectivity(m.smiles) for m in shipped
    }


def test_molecules_are_diverse_by_fingerprint(molecules):
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fingerprints = [generator.GetFingerprint(Chem.MolFromSmiles(m.smiles)) for m in molecules]
    nearest = [
        max(DataStructs.BulkTanimotoSimilarity(f, fingerprints[:i] + fingerprints[i + 1 :]))
        for i, f in enumerate(fingerprints)
    ]
    # no two molecules share even a third of their Morgan bits (a congeneric series would)
    assert max(nearest) < 0.33
