"""`molfold train model=equiformer` end to end, one epoch each, on small real data: QM9
properties (the task follows the data: a property model), MD17 energies and forces (a potential,
then NVE MD through the ASE calculator), OC20 S2EF from the raw files and IS2RE from the pickled
LMDB shipped in data/oc20_emt; `molfold eval` of a property checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from molfold.cli import main
from molfold.data.datamodule import load_structures
from molfold.data.sources import qm9
from molfold.models.checkpoint import load_model

from .common import nve_energy_error, run_md_script
from .conftest import DATA

QUIET = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
TINY_L2 = [
    "model.irreps_node=8x0e+4x1e+2x2e",
    "model.irreps_head=4x0e+2x1e+1x2e",
    "model.num_heads=2",
    "model.irreps_ffn=16x0e+8x1e+4x2e",
    "model.readout_irreps=16x0e",
    "model.num_layers=2",
    "model.num_basis=8",
    "model.radial_hidden=[8,8]",
]
TINY_L1 = [
    "model.irreps_node=8x0e+4x1e",
    "model.irreps_head=4x0e+2x1e",
    "model.irreps_pre_attention=8x0e+4x1e",
    "model.num_heads=2",
    "model.irreps_ffn=16x0e+8x1e",
    "model.readout_irreps=16x0e",
    "model.num_layers=1",
    "model.num_basis=8",
    "model.radial_hidden=[8,8]",
]
QM9_SUBSET = [
    "data.max_structures=60",
    "data.n_train=40",
    "data.n_val=10",
    "data.n_test=10",
    "data.batch_size=10",
]
needs_qm9pack = pytest.mark.skipif(qm9.qm9pack_dir() is None, reason="qm9pack is not installed")


def train(run_dir, *overrides: str) -> dict:
    assert main(["train", "model=equiformer", f"run_dir={run_dir}", *QUIET, *overrides]) == 0
    return json.loads((run_dir / "test_metrics.json").read_text())


@pytest.fixture(scope="module")
def qm9_run(tmp_path_factory):
    if qm9.qm9pack_dir() is None:
        pytest.skip("qm9pack is not installed")
    run_dir = tmp_path_factory.mktemp("qm9") / "run"
    train(run_dir, "data=qm9", "data.target=homo", *QM9_SUBSET, *TINY_L2)
    return run_dir


@needs_qm9pack
def test_qm9_property_run(qm9_run):
    config = yaml.safe_load((qm9_run / "config.yaml").read_text())
    assert config["task"]["name"] == "property"  # chosen from the data: QM9 with a target
    assert config["data"]["split_rng"] == "numpy" and config["data"]["split_seed"] == 1
    metrics = json.loads((qm9_run / "test_metrics.json").read_text())
    # HOMO energies span ~1-2 eV: an untrained model's error is tens to thousands of meV
    assert 1.0 < metrics["homo_mae"] < 5000.0 and metrics["homo_rmse"] >= metrics["homo_mae"]
    for name in ("parity.png", "learning_curve.png", "metrics.csv", "checkpoints/best.ckpt"):
        assert (qm9_run / name).is_file(), name
    model = load_model(qm9_run / "checkpoints" / "best.ckpt")
    assert model.names == ["homo"] and model.units == ["eV"]
    split = np.load(qm9_run / "split.npz")
    order = np.random.default_rng(1).permutation(60)  # Equiformer's (TorchMD-Net's) split
    np.testing.assert_array_equal(split["test"], np.sort(order[50:]))


@needs_qm9pack
def test_eval_of_a_property_checkpoint_reproduces_the_test_metrics(qm9_run, tmp_path, capsys):
    output = tmp_path / "metrics.json"
    ckpt = qm9_run / "checkpoints" / "best.ckpt"
    assert (
        main(["eval", f"ckpt={ckpt}", "data=qm9", "data.max_structures=60", f"output={output}"])
        == 0
    )
    assert "homo_mae" in capsys.readouterr().out
    evaluated = json.loads(output.read_text())
    trained = json.loads((qm9_run / "test_metrics.json").read_text())
    assert evaluated["homo_mae"] == pytest.approx(trained["homo_mae"], rel=1e-5)


@pytest.fixture(scope="module")
def md17_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("md17") / "run"
    train(
        run_dir,
        "data=md17",
        "data.max_structures=40",
        "data.n_train=24",
        "data.n_val=8",
        *TINY_L2,
    )
    return run_dir


def test_md17_potential_run(md17_run):
    config = yaml.safe_load((md17_run / "config.yaml").read_text())
    assert config["task"]["name"] == "potential" and config["task"]["forces_weight"] == 80.0
    assert config["model"]["radial_basis"] == "exp_normal"  # the MD17 preset
    metrics = json.loads((md17_run / "test_metrics.json").read_text())
    assert metrics["forces_mae"] > 0 and metrics["energy_mae"] > 0


def test_md17_checkpoint_drives_nve_md_with_bounded_drift(md17_run):
    """Velocity Verlet conserves the total energy of the trained model to O(dt^2): forces that
    were not the exact gradient of a smooth energy would drift."""
    from molfold import MolfoldCalculator

    atoms = run_md_script.read_structure(DATA / "aspirin_xtb_500K.npz", 0)
    calculator = MolfoldCalculator(md17_run / "checkpoints" / "best.ckpt")
    fine = nve_energy_error(calculator, atoms, timestep_fs=0.125, steps=80)
    coarse = nve_energy_error(calculator, atoms, timestep_fs=0.25, steps=40)
    assert fine < 2e-4
    assert 2.5 < coarse / fine < 5.5


def test_oc20_s2ef_run_from_raw_files(tmp_path):
    metrics = train(tmp_path / "run", "data=oc20", "data.max_structures=60", *TINY_L1)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["task"]["name"] == "potential" and config["task"]["forces_on"] == "free"
    assert config["model"]["tag_embedding"] is True  # the OC20 preset
    assert metrics["forces_mae"] > 0
    frames = load_structures({"format": "oc20", "path": config["data"]["path"]})
    split = np.load(tmp_path / "run" / "split.npz")
    systems = {name: {int(frames[int(i)].sid) for i in split[name]} for name in split.files[:3]}
    assert sum(len(split[name]) for name in ("train", "val", "test")) == 60
    assert not systems["train"] & systems["test"] and not systems["train"] & systems["val"]


def test_oc20_is2re_run_from_the_pickled_lmdb(tmp_path):
    metrics = train(
        tmp_path / "run",
        "data=oc20",
        f"data.path={DATA / 'oc20_emt' / 'is2re' / 'data.lmdb'}",
        "data.task=is2re",
        "data.allow_pickle=true",
        *TINY_L1,
    )
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["task"]["name"] == "property"
    assert metrics["relaxed_energy_mae"] > 0  # meV, the target's errors in the papers' unit


def test_oc20_is2re_refuses_pickles_without_the_opt_in(tmp_path, capsys):
    lmdb = DATA / "oc20_emt" / "is2re" / "data.lmdb"
    code = main(
        [
            "train",
            "model=equiformer",
            "data=oc20",
            f"data.path={lmdb}",
            "data.task=is2re",
            f"run_dir={tmp_path / 'run'}",
            *QUIET,
            *TINY_L1,
        ]
    )
    assert code == 2 and "allow_pickle" in capsys.readouterr().err


def test_oc20_is2re_with_the_is2rs_head_and_noisy_nodes(tmp_path):
    """The auxiliary head learns relaxed displacements (Angstrom) next to the relaxed energy."""
    metrics = train(
        tmp_path / "run",
        "data=oc20",
        f"data.path={DATA / 'oc20_emt' / 'is2re' / 'data.lmdb'}",
        "data.task=is2re",
        "data.allow_pickle=true",
        *TINY_L1,
        "model.readout_irreps=16x0e+4x1e",
        "+model.atom_vector_head=true",  # a property-model key, not in the shared yaml
        "task.atom_vectors_weight=15",
        "task.noisy_nodes_std=0.1",
    )
    # relaxations move atoms by tenths of an Angstrom: an untrained head errs by about that
    assert 0.001 < metrics["atom_vectors_mae"] < 5.0
    assert metrics["relaxed_energy_mae"] > 0
