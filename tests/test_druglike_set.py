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


def test_training_frames_carry_xtb_minus_mmff_delta_labels():
    import ase.io
    from rdkit.Chem import AllChem
    from rdkit.Geometry import Point3D

    from molfold.data.sources.ase_files import load_ase

    path = DATA / "druglike_xtb_frames" / "chunk_007.extxyz.gz"
    kcal = 4184.0 / 96485.33212  # eV per kcal/mol from the joule and the Faraday constant
    index = "0:40:13"  # MMFF minima and xTB relaxation frames of several molecules
    delta = load_ase(path, index=index, energy_key="delta_energy", forces_key="delta_forces")
    xtb = load_ase(path, index=index)
    frames = ase.io.read(path, index=index)
    assert len(frames) == len(delta) == 4
    for frame, d, x in zip(frames, delta, xtb):
        mol = Chem.AddHs(Chem.MolFromSmiles(frame.info["smiles"]))
        conformer = Chem.Conformer(mol.GetNumAtoms())
        for i, p in enumerate(frame.positions.tolist()):
            conformer.SetAtomPosition(i, Point3D(*p))
        mol.AddConformer(conformer)
        field = AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))
        mmff_energy = field.CalcEnergy() * kcal
        mmff_forces = -np.array(field.CalcGrad()).reshape(-1, 3) * kcal
        assert float(d.energy) == pytest.approx(float(x.energy) - mmff_energy, abs=1e-4)
        np.testing.assert_allclose(d.forces.numpy(), x.forces.numpy() - mmff_forces, atol=1e-4)
    # the energy target: centred per molecule, differences kept
    first = [
        f for f in ase.io.read(path, index=":40") if f.info["smiles"] == frames[0].info["smiles"]
    ]
    assert len(first) >= 10  # ten MMFF94 minima and the xTB relaxation frames
    centred = np.array([f.info["delta_energy_centered"] for f in first])
    raw = np.array([f.info["delta_energy"] for f in first])
    assert abs(centred.mean()) < 1e-9
    np.testing.assert_allclose(centred - centred[0], raw - raw[0], atol=1e-9)
