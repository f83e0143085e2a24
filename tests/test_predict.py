"""`molfold predict` and `predict_conformers`: SDF output, bad input, refinement, shipped model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdkit import Chem
from torch_geometric.data import Batch

from molfold.cli import main
from molfold.conformers.command import read_smiles_file
from molfold.conformers.predict import DEFAULT_MODEL
from molfold.data.molgraph import InvalidMoleculeError, smiles_to_graph
from molfold.errors import ConfigError, DataError, UnknownElementError
from molfold.models.checkpoint import save_model
from molfold.models.registry import build_model
from molfold.shipped import shipped_data

from .conftest import DATA

TINY = dict(d_model=32, num_heads=4, d_ffn=64, num_encoder_layers=1, num_decoder_layers=1)
SMILES = {"paracetamol": "CC(=O)Nc1ccc(O)cc1", "ethanol": "CCO", "pyridine": "c1ccncc1"}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    network = build_model("rebind", TINY, {"data": "test", "elements": [1, 6, 7, 8]})
    path = tmp_path_factory.mktemp("model") / "rebind.ckpt"
    save_model(network, path)
    return path


def _same_graph(mol, smiles: str) -> bool:
    return Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.CanonSmiles(smiles)


def test_predict_file_writes_valid_sdf_and_reports_bad_lines(tiny_ckpt, tmp_path, capsys):
    lines = [f"{s} {name}" for name, s in SMILES.items()]
    lines.insert(1, "C1CC(broken ring_and_paren")
    lines.append("C[Sn](C)(C)C tetramethyltin")  # tin: no Lennard-Jones parameters
    lines.insert(2, "# a comment")
    source = tmp_path / "in.smi"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out.sdf"
    args = [f"input={source}", f"output={output}", f"ckpt={tiny_ckpt}", "num_conformers=2"]
    args += ["sampler=model", "dedup_rmsd=0"]  # keep both predictions, however close
    code = main(["predict", *args, "refine=none"])
    assert code == 1  # two lines failed ...
    err = capsys.readouterr().err
    assert f"{source}:2: invalid SMILES" in err  # ... named with its line number
    assert f"{source}:6: elements [50]" in err
    records = [m for m in Chem.SDMolSupplier(str(output), removeHs=False)]
    assert len(records) == 2 * len(SMILES)  # ... and every other molecule was written
    for mol in records:
        name = mol.GetProp("_Name")
        assert _same_graph(mol, SMILES[name])
        assert mol.GetProp("input_smiles") == SMILES[name]
        assert mol.GetProp("molfold_model").startswith("rebind")
        assert mol.GetProp("molfold_refine") == "none"
        assert any(a.GetAtomicNum() == 1 for a in mol.GetAtoms())  # hydrogens kept
        assert mol.GetConformer().Is3D()
    first, second = records[0].GetConformer(), records[1].GetConformer()
    # two predictions of one molecule differ (random eigenvector signs)
    assert abs(first.GetPositions() - second.GetPositions()).max() > 1e-3


def test_predict_one_smiles_with_mmff_refinement(tiny_ckpt, tmp_path):
    output = tmp_path / "one.sdf"
    code = main(
        [
            "predict",
            "smiles=CC(=O)Nc1ccc(O)cc1",
            "name=paracetamol",
            f"output={output}",
            f"ckpt={tiny_ckpt}",
            "sampler=model",
            "refine=mmff",
        ]
    )
    assert code == 0
    (mol,) = Chem.SDMolSupplier(str(output), removeHs=False)
    assert mol.GetProp("_Name") == "paracetamol" and mol.GetProp("molfold_refine") == "mmff"
    # MMFF leaves C-H bonds near 1.09 A whatever the model predicted
    conformer = mol.GetConformer()
    for bond in mol.GetBonds():
        atoms = {bond.GetBeginAtom().GetSymbol(), bond.GetEndAtom().GetSymbol()}
        if atoms == {"C", "H"}:
            length = (
                conformer.GetAtomPosition(bond.GetBeginAtomIdx())
                - conformer.GetAtomPosition(bond.GetEndAtomIdx())
            ).Length()
            assert 1.07 < length < 1.11


def test_python_api_and_errors(tiny_ckpt):
    from molfold import predict_conformers

    mols = predict_conformers(
        list(SMILES.values()),
        ckpt=tiny_ckpt,
        sampler="model",
        num_conformers=3,
        refine="none",
        dedup_rmsd=0,
    )
    assert [m.GetNumConformers() for m in mols] == [3, 3, 3]
    assert all(_same_graph(m, s) for m, s in zip(mols, SMILES.values()))
    with pytest.raises(InvalidMoleculeError, match="invalid SMILES"):
        predict_conformers("C1CC", ckpt=tiny_ckpt)
    with pytest.raises(ConfigError, match="refine"):
        predict_conformers("CCO", ckpt=tiny_ckpt, refine="uff-please")
    with pytest.raises(ConfigError, match="num_conformers"):
        predict_conformers("CCO", ckpt=tiny_ckpt, num_conformers=0)
    # an element without Lennard-Jones parameters is an unknown element, not an invalid SMILES
    with pytest.raises(UnknownElementError, match="Lennard-Jones") as caught:
        predict_conformers("C[Te]C", ckpt=tiny_ckpt, refine="none")
    assert not isinstance(caught.value, InvalidMoleculeError)
    for bad in (None, 3, ["CCO", None]):
        with pytest.raises(ConfigError, match="smiles must be a SMILES string"):
            predict_conformers(bad, ckpt=tiny_ckpt)


def test_predict_rejects_unknown_keys(tiny_ckpt, tmp_path, capsys):
    args = ["smiles=CCO", f"output={tmp_path / 'x.sdf'}", f"ckpt={tiny_ckpt}"]
    assert main(["predict", *args, "+refine_steps=3"]) == 2
    assert "unknown key refine_steps" in capsys.readouterr().err


def test_predict_needs_exactly_one_input(tiny_ckpt, tmp_path, capsys):
    assert main(["predict", f"output={tmp_path / 'x.sdf'}", f"ckpt={tiny_ckpt}"]) == 2
    assert "exactly one of smiles" in capsys.readouterr().err
    missing = tmp_path / "missing.smi"
    assert main(["predict", f"input={missing}", f"output={tmp_path / 'x.sdf'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.sdf").exists()


def test_shipped_model_is_trained_and_predicts_usable_geometry():
    from molfold import predict_conformers
    from molfold.conformers.metrics import distance_errors, metrics_from_sums
    from molfold.conformers.predict import load_conformer_model
    from molfold.data.datamodule import load_structures
    from molfold.data.transforms import MolecularGraph

    assert Path(shipped_data(DEFAULT_MODEL)).is_file()
    model = load_conformer_model()
    statistics = model.model_info["statistics"]
    assert statistics["data"] == "qm9" and statistics["elements"] == [1, 6, 7, 8, 9]
    # trained, not random: far closer to the GFN2-xTB ground states of the shipped drug-like set
    # than an untrained model (an untrained one is off by more than 2 A, see the benchmark)
    graphs = [
        g
        for g in load_structures(
            {"format": "geom", "path": str(DATA / "geom_xtb")}, [MolecularGraph()]
        )
        if set(g.z.tolist()) <= {1, 6, 7, 8}
    ]
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        pos = model(batch)["pos"].double()
    assert metrics_from_sums(distance_errors(pos, batch.pos, batch.batch))["d_mae"] < 1.5

    mol = predict_conformers("CC(=O)Nc1ccc(O)cc1", sampler="model", num_samples=1)  # + MMFF94
    assert mol.GetConformer().GetBoolProp("refine_converged")
    conformer = mol.GetConformer()
    lengths = [
        (
            conformer.GetAtomPosition(b.GetBeginAtomIdx())
            - conformer.GetAtomPosition(b.GetEndAtomIdx())
        ).Length()
        for b in mol.GetBonds()
    ]
    assert min(lengths) > 0.9 and max(lengths) < 1.6  # bonded atoms at bonding distances


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=st.binary(max_size=512))
def test_garbage_smiles_files_give_molfold_errors(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("smi") / "garbage.smi"
    path.write_bytes(blob)
    try:
        molecules = read_smiles_file(path)
    except DataError as error:
        assert str(path) in str(error)
        return
    for item in molecules:  # every line either parses or names itself in the error
        try:
            smiles_to_graph(item.smiles, item.name, item.where)
        except InvalidMoleculeError as error:
            assert item.where in str(error)


def test_xtb_and_potential_refinement(tiny_ckpt, tiny_potential_ckpt):
    from rdkit.Chem import AllChem

    from molfold import predict_conformers
    from molfold.conformers.refine import make_refiner

    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=3)
    assert make_refiner("xtb")(mol, 0).converged is True
    conformer = mol.GetConformer()
    expected = {"CC": 1.52, "CO": 1.42, "CH": 1.10, "HO": 0.97}  # GFN2-xTB minimum, +- 0.03
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        length = (conformer.GetAtomPosition(i) - conformer.GetAtomPosition(j)).Length()
        key = "".join(sorted(a.GetSymbol() for a in (bond.GetBeginAtom(), bond.GetEndAtom())))
        assert length == pytest.approx(expected[key], abs=0.03), key

    # through the predictor: each conformer records whether its relaxation converged
    refined = predict_conformers(
        "CCO", ckpt=tiny_ckpt, refine="xtb", num_conformers=2, num_samples=2
    )
    assert all(c.HasProp("refine_converged") for c in refined.GetConformers())

    path = tiny_potential_ckpt
    # the untrained conformer model puts atoms on top of each other, and the potential's
    # calculator refuses such a structure by name
    with pytest.raises(DataError, match="apart"):
        predict_conformers("CCO", ckpt=tiny_ckpt, sampler="model", refine=str(path))
    with pytest.raises(ConfigError, match="conformer model"):
        predict_conformers("CCO", ckpt=tiny_ckpt, refine=str(tiny_ckpt))


def test_a_refining_checkpoint_predicts_from_etkdg_mmff_starts(tmp_path):
    """A ``start="etkdg"`` model refines one ETKDG + MMFF conformer per sample (seed + k); built,
    its refiner returns its start, so each prediction is that start, up to a rigid motion."""
    from rdkit.Chem import rdMolAlign

    from molfold import predict_conformers
    from molfold.conformers.predict import PredictOptions
    from molfold.conformers.starts import etkdg_mmff_start

    torch.manual_seed(0)
    hparams = {**TINY, "decoder": "equivariant", "start": "etkdg"}
    network = build_model("rebind", hparams, {"data": "test", "elements": [1, 6, 7, 8]})
    save_model(network, tmp_path / "refiner.ckpt")
    smiles = "C[C@@H](N)C(=O)Nc1ccc(O)cc1"
    options = dict(num_conformers=2, num_samples=2, refine="none", rank="none", dedup_rmsd=0)
    mol = predict_conformers(smiles, ckpt=tmp_path / "refiner.ckpt", sampler="model", **options)
    assert mol.GetNumConformers() == 2 and _same_graph(mol, smiles)
    seed = PredictOptions().seed
    for k, conformer in enumerate(mol.GetConformers()):
        start = Chem.Mol(mol, confId=conformer.GetId())
        expected, _ = etkdg_mmff_start(smiles_to_graph(smiles)[1], seed + k)
        for i, xyz in enumerate(expected.tolist()):
            start.GetConformer().SetAtomPosition(i, xyz)
        rmsd = rdMolAlign.AlignMol(Chem.Mol(mol, confId=conformer.GetId()), start)
        assert rmsd < 1e-3, (k, rmsd)
    first, second = (Chem.Mol(mol, confId=c.GetId()) for c in mol.GetConformers())
    assert rdMolAlign.AlignMol(first, second) > 0.05  # two seeds, two starts
