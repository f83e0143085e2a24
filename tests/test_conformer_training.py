"""`molfold train model=rebind` end to end on the shipped GEOM-format set, and conformer data."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from rdkit import Chem

from molfold.cli import main
from molfold.data.datamodule import load_structures
from molfold.data.molgraph import ATOM_FEATURE_CATEGORIES, graph_to_mol
from molfold.data.transforms import MolecularGraph
from molfold.models.checkpoint import load_model
from molfold.models.rebind import ReBind

from .conftest import DATA

TINY = [
    "model=rebind",
    "data=geom",
    "model.d_model=32",
    "model.num_heads=4",
    "model.d_ffn=64",
    "model.num_encoder_layers=1",
    "model.num_decoder_layers=1",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def conformer_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rebind")
    assert main(["train", f"run_dir={run_dir}", *TINY, "ema_decay=0.5"]) == 0
    return run_dir


def test_training_writes_metrics_and_a_loadable_model(conformer_run, tmp_path):
    metrics = json.loads((conformer_run / "test_metrics.json").read_text())
    assert set(metrics) == {"d_mae", "d_rmse", "c_rmsd", "c_rmsd_stereo", "c_rmsd_mirror", "loss"}
    assert metrics["c_rmsd_mirror"] <= min(metrics["c_rmsd"], metrics["c_rmsd_stereo"])
    assert metrics["d_rmse"] >= metrics["d_mae"] > 0 and metrics["c_rmsd"] > 0
    split = np.load(conformer_run / "split.npz")
    assert [len(split[k]) for k in ("train", "val", "test")] == [19, 2, 3]  # 24 molecules
    model = load_model(conformer_run / "checkpoints" / "best.ckpt")
    assert isinstance(model, ReBind) and not model.training
    assert model.model_info["statistics"]["data"] == "geom"
    assert set(model.model_info["statistics"]["elements"]) <= {1, 6, 7, 8, 9, 16, 17}
    output = tmp_path / "out.sdf"
    ckpt = conformer_run / "checkpoints" / "best.ckpt"
    assert main(["predict", "smiles=CCO", f"output={output}", f"ckpt={ckpt}"]) == 0
    assert output.is_file()


def test_ema_is_honoured_for_conformer_models(conformer_run):
    """The checkpointed model holds the weight average, not the last weights."""
    checkpoint = torch.load(conformer_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["ema"]["num_updates"] == checkpoint["global_step"] > 0
    exported = checkpoint["molfold"]["state_dict"]
    raw = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    averaged = checkpoint["ema"]["shadow"]
    name = next(k for k in averaged if "weight" in k and averaged[k].numel() > 1)
    torch.testing.assert_close(exported[name], averaged[name])
    assert not torch.equal(exported[name], raw[name])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.equivariant={num_layers: 2}", "equivariant"),
        ("+model.no_such_key=1", "unknown key(s) model.no_such_key for model 'rebind'"),
        ("+task.energy_weight=1", "unknown key task.energy_weight"),
        ("task=potential", "model=rebind is a conformer model, not a potential model"),
        ("data=md17", "gives no bond_index, bond_type, formal_charge"),
    ],
)
def test_bad_conformer_configuration_gets_a_clear_error(tmp_path, capsys, override, message):
    assert main(["train", f"run_dir={tmp_path / 'run'}", *TINY, override]) == 2
    assert message in capsys.readouterr().err


def test_eval_reproduces_the_test_metrics(conformer_run, tmp_path):
    output = tmp_path / "eval.json"
    ckpt = conformer_run / "checkpoints" / "best.ckpt"
    assert main(["eval", f"ckpt={ckpt}", "data=geom", f"output={output}"]) == 0
    evaluated = json.loads(output.read_text())
    tested = json.loads((conformer_run / "test_metrics.json").read_text())
    assert evaluated == pytest.approx(tested, rel=1e-5)
    # split=test draws the same test split from the data config's seed, without split.npz
    assert main(["eval", f"ckpt={ckpt}", "data=geom", "split=test", f"output={output}"]) == 0
    assert json.loads(output.read_text()) == pytest.approx(tested, rel=1e-5)


def test_potential_models_refuse_conformer_data(tmp_path, capsys):
    assert main(["train", f"run_dir={tmp_path}", "data=qm9"]) == 2
    assert "model=rebind" in capsys.readouterr().err


def test_pickled_geom_needs_the_opt_in(tmp_path, capsys):
    folder = DATA / "geom_xtb" / "rdkit_folder"
    code = main(["train", f"run_dir={tmp_path / 'run'}", *TINY, f"data.path={folder}"])
    assert code == 2
    assert "allow_pickle" in capsys.readouterr().err
    run = tmp_path / "run2"
    args = ["train", f"run_dir={run}", *TINY, f"data.path={folder}", "data.allow_pickle=true"]
    assert main([*args, "trainer.max_epochs=1"]) == 0


@pytest.mark.skipif(
    importlib.util.find_spec("qm9pack") is None,
    reason="qm9pack is not installed: pip install 'molfold[qm9]'",
)
def qm9_graphs(cache_dir) -> list:
    """The first 300 QM9 molecules as a conformer task gets them."""
    values = {"format": "qm9", "max_structures": 300, "cache_dir": str(cache_dir)}
    return load_structures(values, [MolecularGraph()])


def test_qm9_conformer_graphs_keep_charges_and_bonds(tmp_path):
    graphs = qm9_graphs(tmp_path)
    by_name = {g.name: g for g in graphs}
    zwitterion = by_name["gdb_271"]  # [NH3+]CCC([O-])=O in QM9
    charges = [ATOM_FEATURE_CATEGORIES[3][k] for k in zwitterion.atom_features[:, 3].tolist()]
    assert sorted(c for c in charges if c) == [-1, 1]
    mol = graph_to_mol(zwitterion)
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.CanonSmiles("[NH3+]CCC([O-])=O")
    # tetrahedral stereocentres carry the chirality of the DFT geometry
    chiral = [g for g in graphs if (g.atom_features[:, 1] > 0).any()]
    assert len(chiral) > 10
    for graph in chiral[:10]:
        mol = graph_to_mol(graph)
        from_3d = Chem.Mol(mol)
        Chem.AssignStereochemistryFrom3D(from_3d)
        Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
        assert Chem.MolToSmiles(mol) == Chem.MolToSmiles(from_3d), graph.name
    # every bond of every molecule is at a bonding distance in the DFT geometry
    for graph in graphs:
        i, j = graph.bond_index
        lengths = (graph.pos[i] - graph.pos[j]).norm(dim=-1)
        assert lengths.max() < 1.9, graph.name
    # the cache gives back the same graphs
    again = qm9_graphs(tmp_path)  # from the cache of transformed structures
    assert len(again) == len(graphs)
    for a, b in zip(graphs[:20], again[:20]):
        assert torch.equal(a.atom_features, b.atom_features) and torch.equal(a.pos, b.pos)
        assert a.homo == b.homo and a.idx == b.idx
    # the same structures carry QM9's targets, in the loader's units (one source for every task)
    from molfold.data.sources.qm9 import load_qm9

    for graph, data in zip(again[:50], load_qm9(max_molecules=50, cache_dir=tmp_path)):
        assert graph.name == f"gdb_{int(data.idx)}" and torch.equal(graph.pos, data.pos.double())
        for target in ("mu", "homo", "U0", "U0_atom", "Cv"):
            assert torch.equal(graph[target], data[target]), (graph.name, target)
