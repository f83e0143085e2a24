"""Stereo correction centre by centre, ensembles ranked by energy with SD tags, deduplication,
stereo chosen or enumerated, and the time limit of `molfold predict`."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign

from molfold import predict_conformers
from molfold.cli import main
from molfold.conformers.ensemble import rank_conformers
from molfold.conformers.stereo import check_stereo, correct_stereo, invert_centre

EV_PER_KCAL_MOL = units.kcal / units.mol  # ASE's value, not molfold's constant


def _embedded(smiles: str, seed: int = 7):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol


def _with_coordinates_of(target: str, source: str):
    """``target``'s molecule with the coordinates of ``source`` (same atoms, other stereo)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(target))
    mol.AddConformer(_embedded(source).GetConformer(), assignId=True)
    return mol


def _bond_lengths(mol) -> np.ndarray:
    pos = mol.GetConformer().GetPositions()
    ends = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()])
    return np.linalg.norm(pos[ends[:, 0]] - pos[ends[:, 1]], axis=1)


def _stereo_smiles_from_3d(mol, conf_id: int = -1) -> str:
    """Canonical isomeric SMILES with all stereo read off the coordinates (RDKit alone)."""
    probe = Chem.Mol(mol)
    Chem.AssignStereochemistryFrom3D(probe, confId=conf_id)
    return Chem.MolToSmiles(Chem.RemoveHs(probe))


@pytest.mark.parametrize(
    "target, coordinates_of",
    [
        # a diastereomer: one of two centres wrong, so no reflection of the whole can mend it;
        # and the other double-bond isomer
        ("C[C@H](O)[C@@H](N)C/C=C/CC", "C[C@H](O)[C@H](N)C/C=C\\CC"),
        # a centre with no hydrogen: the smallest acyclic branch (F) goes through the plane
        ("C[C@@](F)(Cl)CC[C@H](C)O", "C[C@](F)(Cl)CC[C@H](C)O"),
        # trans-1,4-dimethylcyclohexane from cis coordinates: centres without CIP labels
        ("C[C@H]1CC[C@@H](C)CC1", "C[C@H]1CC[C@H](C)CC1"),
    ],
)
def test_correct_stereo_mends_each_wrong_element_and_keeps_bond_lengths(target, coordinates_of):
    mol = _with_coordinates_of(target, coordinates_of)
    assert check_stereo(mol).problems  # the coordinates start wrong
    before = _bond_lengths(mol)
    assert correct_stereo(mol) == []
    assert _stereo_smiles_from_3d(mol) == Chem.CanonSmiles(target)
    np.testing.assert_allclose(_bond_lengths(mol), before, atol=1e-9)


def test_mirror_image_is_fixed_by_one_reflection():
    mol = _with_coordinates_of("N[C@@H](C)C(=O)O", "N[C@H](C)C(=O)O")
    assert correct_stereo(mol) == []
    assert _stereo_smiles_from_3d(mol) == Chem.CanonSmiles("N[C@@H](C)C(=O)O")


def test_a_centre_with_every_bond_in_a_ring_cannot_be_inverted():
    mol = _embedded("C1CCC2(C1)CCCC2")  # spiro[4.4]nonane's spiro atom
    spiro = next(
        a.GetIdx()
        for a in mol.GetAtoms()
        if a.GetAtomicNum() == 6 and a.GetTotalNumHs(includeNeighbors=True) == 0
    )
    before = mol.GetConformer().GetPositions()
    assert invert_centre(mol, 0, spiro) is False
    np.testing.assert_array_equal(mol.GetConformer().GetPositions(), before)


def test_rank_orders_by_energy_drops_near_duplicates_and_sets_relative_energies():
    mol = Chem.AddHs(Chem.MolFromSmiles("CCCCCO"))
    ids = list(AllChem.EmbedMultipleConfs(mol, 3, randomSeed=11))
    AllChem.MMFFOptimizeMoleculeConfs(mol)
    heavy = [Chem.RemoveHs(Chem.Mol(mol, confId=i)) for i in ids]
    assert rdMolAlign.GetBestRMS(heavy[0], heavy[1]) > 0.2  # three distinct conformers
    assert rdMolAlign.GetBestRMS(heavy[1], heavy[2]) > 0.2
    # a fourth: conformer 0 moved by 0.01 A at most per coordinate, a duplicate
    copy = Chem.Conformer(mol.GetConformer(ids[0]))
    rng = np.random.default_rng(0)
    for i in range(mol.GetNumAtoms()):
        p = np.array(copy.GetAtomPosition(i)) + rng.uniform(-0.01, 0.01, 3)
        copy.SetAtomPosition(i, p.tolist())
    duplicate = mol.AddConformer(copy, assignId=True)
    expected_positions = {i: mol.GetConformer(i).GetPositions() for i in ids}
    energies = {ids[0]: -1.0, ids[1]: -1.5, ids[2]: None, duplicate: -0.9}  # eV
    kept = rank_conformers(mol, energies, rmsd_threshold=0.125)
    assert kept == [ids[1], ids[0], ids[2]]  # by energy, no energy last, duplicate gone
    conformers = list(mol.GetConformers())
    for conformer, old in zip(conformers, kept):
        np.testing.assert_array_equal(conformer.GetPositions(), expected_positions[old])
    assert [c.GetIntProp("molfold_rank") for c in conformers] == [1, 2, 3]
    assert conformers[1].GetDoubleProp("molfold_relative_energy_eV") == pytest.approx(0.5)
    kcal = conformers[1].GetDoubleProp("molfold_relative_energy_kcal_mol")
    assert kcal == pytest.approx(0.5 / EV_PER_KCAL_MOL, rel=1e-6)
    assert not conformers[2].HasProp("molfold_energy_eV")
    # at most two: the two lowest distinct ones, the duplicate (third lowest energy) skipped
    mol.AddConformer(copy, assignId=True)
    energies = {0: -1.0, 1: -1.5, 2: None, 3: -1.1}  # new ids; 3 duplicates 1 (old ids[0])
    assert rank_conformers(mol, energies, rmsd_threshold=0.125, limit=2) == [1, 0]
    assert mol.GetNumConformers() == 2


def _mmff_energy_ev(mol, conf_id: int) -> float:
    properties = AllChem.MMFFGetMoleculeProperties(mol)
    field = AllChem.MMFFGetMoleculeForceField(mol, properties, confId=conf_id)
    return field.CalcEnergy() * EV_PER_KCAL_MOL


def test_predict_writes_an_energy_ranked_ensemble_with_sd_tags(tmp_path):
    output = tmp_path / "ensemble.sdf"
    smiles = "OCCOCCOCCN"  # flexible: many distinct minima
    args = [f"smiles={smiles}", f"output={output}", "num_conformers=8", "sampler=etkdg"]
    assert main(["predict", *args, "refine=mmff", "rank=mmff"]) == 0
    records = list(Chem.SDMolSupplier(str(output), removeHs=False))
    assert 2 <= len(records) <= 8
    energies = [float(r.GetProp("molfold_energy_eV")) for r in records]
    assert energies == sorted(energies)
    for rank, record in enumerate(records, start=1):
        assert int(record.GetProp("molfold_rank")) == rank
        assert record.GetProp("molfold_energy_method") == "MMFF94"
        # the tag is the MMFF94 energy of the coordinates written, recomputed here
        assert float(record.GetProp("molfold_energy_eV")) == pytest.approx(
            _mmff_energy_ev(record, 0), abs=1e-4
        )
        relative = float(record.GetProp("molfold_relative_energy_kcal_mol"))
        assert relative == pytest.approx((energies[rank - 1] - energies[0]) / EV_PER_KCAL_MOL)
    heavy = [Chem.RemoveHs(r) for r in records]
    for i in range(len(heavy)):
        for j in range(i):
            assert rdMolAlign.GetBestRMS(heavy[i], heavy[j]) >= 0.5  # the default dedup_rmsd


def test_time_limit_drops_the_conformers_it_has_no_time_for(tmp_path, capsys):
    output = tmp_path / "late.sdf"
    args = ["smiles=OCCOCCOCCN", f"output={output}", "num_conformers=5", "num_samples=5"]
    assert main(["predict", *args, "time_limit=1e-6"]) == 0
    assert len(list(Chem.SDMolSupplier(str(output)))) == 1  # the first is always kept
    err = capsys.readouterr().err
    assert "smiles=: time limit 1e-06 s reached: 4 of 5 conformers dropped" in err


def test_open_stereo_is_chosen_once_and_stated(tmp_path):
    mols = predict_conformers("CC(O)C(C)/C=C/C", num_conformers=6, sampler="etkdg")
    chosen = mols.GetProp("molfold_chosen_stereo")
    assert chosen.startswith("atom 1: ") and "; atom 3: " in chosen
    labels = {
        f"atom {a.GetIdx()}: {a.GetProp('_CIPCode')}"
        for a in mols.GetAtoms()
        if a.HasProp("_CIPCode")
    }
    for conformer in mols.GetConformers():  # every conformer is the one stereoisomer stated
        probe = Chem.Mol(mols)
        Chem.AssignStereochemistryFrom3D(probe, confId=conformer.GetId())
        found = {
            f"atom {a.GetIdx()}: {a.GetProp('_CIPCode')}"
            for a in probe.GetAtoms()
            if a.HasProp("_CIPCode")
        }
        assert found == labels == set(chosen.split("; "))


def test_enumerate_predicts_every_stereoisomer(tmp_path):
    output = tmp_path / "isomers.sdf"
    args = ["smiles=CC(O)/C=C/C", "name=pentenol", f"output={output}", "stereo=enumerate"]
    assert main(["predict", *args]) == 0
    records = list(Chem.SDMolSupplier(str(output), removeHs=False))
    expected = {"C/C=C/[C@@H](C)O", "C/C=C/[C@H](C)O"}  # E given, the centre open
    assert {r.GetProp("molfold_smiles") for r in records} == expected
    assert {r.GetProp("_Name") for r in records} == {
        "pentenol stereoisomer 1/2",
        "pentenol stereoisomer 2/2",
    }
    for record in records:
        assert record.GetProp("input_smiles") == "CC(O)/C=C/C"
        assert _stereo_smiles_from_3d(record) == record.GetProp("molfold_smiles")


def test_specified_stereo_survives_prediction_and_refinement():
    smiles = "C[C@H](O)[C@@H](N)C/C=C/C[C@](C)(F)Cl"
    for sampler in ("model", "etkdg"):
        mol = predict_conformers(smiles, num_conformers=4, sampler=sampler)
        for conformer in mol.GetConformers():
            assert _stereo_smiles_from_3d(mol, conformer.GetId()) == Chem.CanonSmiles(smiles)


def test_default_predictions_of_drug_like_molecules_pass_posebusters():
    from posebusters import PoseBusters

    from molfold.data.sources.geom import load_geom

    from .conftest import DATA

    molecules = load_geom(DATA / "druglike_xtb" / "drugs_crude.msgpack")[:6]
    mols = predict_conformers([m.smiles for m in molecules])
    table = PoseBusters(config="mol").bust(mols, None, None)
    checks = table.drop(columns=["position"], errors="ignore").eq(True)  # NaN: not passed
    assert len(checks) == 6 and "bond_lengths" in checks and "internal_energy" in checks
    assert checks.all(axis=None), table.loc[:, ~checks.all()]


def test_a_spiro_centre_no_local_move_can_invert_is_still_right():
    # from the drug-like test set: the spiro atom 10 came out inverted from the shipped model
    smiles = "C=CCNc1nc([C@]2(C)C[C@@]3(CC(C)(C)OC3=O)C(=O)O2)cs1"
    for refine in ("none", "mmff"):
        mol = predict_conformers(smiles, sampler="model", num_samples=1, refine=refine)
        assert _stereo_smiles_from_3d(mol) == Chem.CanonSmiles(smiles)


def test_potential_ranks_all_conformers_in_one_batch_as_the_calculator_scores_them(
    tiny_potential_ckpt,
):
    from ase import Atoms

    from molfold import MolfoldCalculator
    from molfold.conformers.refine import make_scorer

    path = tiny_potential_ckpt
    mol = Chem.AddHs(Chem.MolFromSmiles("OCCOCCO"))
    ids = list(AllChem.EmbedMultipleConfs(mol, 4, randomSeed=3))
    batched = make_scorer(str(path))(mol, ids)
    calculator = MolfoldCalculator(str(path))
    one_by_one = []
    for conf_id in ids:
        atoms = Atoms(
            [a.GetAtomicNum() for a in mol.GetAtoms()], mol.GetConformer(conf_id).GetPositions()
        )
        atoms.calc = calculator
        one_by_one.append(atoms.get_potential_energy())
    assert batched == pytest.approx(one_by_one, abs=1e-4)
    assert len(set(np.round(batched, 6))) == 4  # distinct conformers, distinct energies


def test_rank_auto_uses_mmff_plus_the_shipped_delta_potential_inside_its_domain():
    from ase import Atoms

    from molfold import MolfoldCalculator
    from molfold.shipped import shipped_data

    delta = MolfoldCalculator(shipped_data("allegro_druglike_xtb.ckpt"))
    mol = predict_conformers("CC(=O)Nc1ccc(OCC(O)CNC(C)C)cc1", num_conformers=4)
    assert mol.GetProp("molfold_energy_method").startswith("MMFF94 + molfold Delta potential")
    assert 2 <= mol.GetNumConformers() <= 4
    energies = []
    for conformer in mol.GetConformers():  # the tag is MMFF94 + the correction, recomputed here
        atoms = Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], conformer.GetPositions())
        atoms.calc = delta
        energies.append(_mmff_energy_ev(mol, conformer.GetId()) + atoms.get_potential_energy())
        assert conformer.GetDoubleProp("molfold_energy_eV") == pytest.approx(energies[-1], abs=1e-4)
    assert energies == sorted(energies)
    # outside its domain (bromine was not in its training data; a net charge): MMFF94's energies
    for smiles in ("OCCCc1ccccc1Br", "CCCC[NH3+]"):
        mol = predict_conformers(smiles, num_conformers=2)
        assert mol.GetProp("molfold_energy_method") == "MMFF94"
        for conformer in mol.GetConformers():
            assert conformer.GetDoubleProp("molfold_energy_eV") == pytest.approx(
                _mmff_energy_ev(mol, conformer.GetId()), abs=1e-4
            )


def test_rank_single_points_only_inside_the_window_and_once_per_energy_twin():
    from molfold.conformers.ensemble import rescoring_candidates
    from molfold.conformers.refine import Relaxation

    kcal = EV_PER_KCAL_MOL
    relaxed = {
        0: Relaxation(True, 10.5 * kcal),  # 3.5 kcal/mol above the lowest
        1: Relaxation(True, 7.0 * kcal),  # the lowest minimum
        2: Relaxation(True, (7.0 + 0.0004) * kcal),  # its twin (same minimum or mirror image)
        3: Relaxation(True, 9.9 * kcal),  # inside the 3 kcal/mol window
        4: Relaxation(False, 0.0),  # not converged: no minimum to compare, always scored
        5: Relaxation(True, None),  # no energy (MMFF94 had no parameters): always scored
    }
    ids = [0, 1, 2, 3, 4, 5, 6]  # 6: not refined at all
    candidates, twins = rescoring_candidates(ids, relaxed, window=3.0)
    assert sorted(candidates) == [1, 3, 4, 5, 6] and twins == {2: 1}
    # an ensemble of three needs three distinct minima scored, the window notwithstanding
    candidates, twins = rescoring_candidates(ids, relaxed, window=0.5, at_least=3)
    assert sorted(candidates) == [0, 1, 3, 4, 5, 6] and twins == {2: 1}
    candidates, _ = rescoring_candidates(ids, relaxed, window=float("inf"))
    assert sorted(candidates) == [0, 1, 3, 4, 5, 6]


def test_rank_scores_only_the_window_yet_every_conformer_written(tiny_potential_ckpt, monkeypatch):
    """A potential single point for the lowest MMFF94 minima only (window 0: as many as are
    written); every conformer written has the potential's energy, recomputed here."""
    from ase import Atoms

    import molfold.conformers.predict as predict_module
    from molfold import MolfoldCalculator

    scored = []

    def recording(method, key="rank"):
        scorer = make_scorer(method, key)
        return lambda mol, conf_ids: scored.append(len(conf_ids)) or scorer(mol, conf_ids)

    make_scorer = predict_module.make_scorer
    monkeypatch.setattr(predict_module, "make_scorer", recording)
    settings = dict(num_samples=8, num_conformers=2, rank=str(tiny_potential_ckpt), dedup_rmsd=0)
    mol = predict_conformers("CCCCOCCCCO", rank_window=0.0, **settings)
    assert scored == [2] and mol.GetNumConformers() == 2
    calculator = MolfoldCalculator(str(tiny_potential_ckpt))
    for conformer in mol.GetConformers():
        atoms = Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], conformer.GetPositions())
        atoms.calc = calculator
        expected = atoms.get_potential_energy()
        assert conformer.GetDoubleProp("molfold_energy_eV") == pytest.approx(expected, abs=1e-4)
    predict_conformers("CCCCOCCCCO", rank_window=float("inf"), **settings)
    assert scored[1] > 2  # every distinct minimum


@pytest.mark.parametrize(
    "smiles, achiral",
    [
        ("OCCOCCO", True),
        ("C[C@H](N)C(=O)O", False),  # L-alanine: its mirror image is D-alanine
        ("O[C@H](C)[C@H](C)O", True),  # (2R,3S)-butane-2,3-diol: meso
        ("O[C@H](C)[C@@H](C)O", False),  # (2R,3R)
        ("C[C@H]1CC[C@@H](C)CC1", True),  # trans-1,4-dimethylcyclohexane: tags, no CIP labels
        ("C/C=C/C[C@@H](F)Cl", False),
    ],
)
def test_is_achiral_knows_a_meso_compound_from_an_enantiomer(smiles, achiral):
    from molfold.conformers.stereo import is_achiral

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert is_achiral(mol) is achiral
