"""`molfold train` / `molfold eval` end to end on a slice of the shipped aspirin data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from molfold.cli import main
from molfold.models.checkpoint import load_model

from .common import TINY, nve_energy_error, run_md_script
from .conftest import DATA


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    assert main(["train", f"run_dir={run_dir}", *TINY]) == 0
    return run_dir


def test_train_writes_a_complete_run_directory(trained_run, capsys):
    for name in (
        "config.yaml",
        "versions.json",
        "split.npz",
        "metrics.csv",
        "test_metrics.json",
        "parity.png",
        "learning_curve.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "test_metrics.json").read_text())
    assert {"energy_mae", "forces_mae", "forces_rmse"} <= set(metrics)
    assert metrics["forces_rmse"] >= metrics["forces_mae"] > 0


def test_split_is_disjoint_and_complete(trained_run):
    import numpy as np

    split = np.load(trained_run / "split.npz")
    train, val, test = (set(split[k].tolist()) for k in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (24, 8, 8)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(40))


def test_checkpoint_loads_without_config_and_in_the_calculator(trained_run, ethanol):

    from molfold import MolfoldCalculator

    potential = load_model(trained_run / "checkpoints" / "best.ckpt")
    assert potential.species == [1, 6, 8]
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["molfold"]["hparams"]["num_scalar_features"] == 16
    atoms = ethanol.copy()
    atoms.calc = MolfoldCalculator(trained_run / "checkpoints" / "best.ckpt")
    assert atoms.get_forces().shape == (9, 3)


def test_eval_reproduces_the_test_metrics(trained_run, tmp_path, capsys):
    output = tmp_path / "metrics.json"
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    assert (
        main(
            [
                "eval",
                f"ckpt={ckpt}",
                f"data.path={DATA / 'aspirin_xtb_500K.npz'}",
                "data.max_structures=40",
                f"output={output}",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "forces_mae" in table and "meV/A" in table
    evaluated = json.loads(output.read_text())
    trained = json.loads((trained_run / "test_metrics.json").read_text())
    for key in ("energy_mae", "forces_mae", "forces_rmse"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-4)


def test_eval_split_test_draws_the_training_split_for_potentials(trained_run, tmp_path):
    """`split=test` (no split.npz needed) gives the test split the data config draws; it used to
    be a raw FileNotFoundError for potentials."""
    output = tmp_path / "metrics.json"
    sizes = [o for o in TINY if o.startswith(("data.path", "data.max_structures", "data.n_"))]
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    assert main(["eval", f"ckpt={ckpt}", "split=test", *sizes, f"output={output}"]) == 0
    trained = json.loads((trained_run / "test_metrics.json").read_text())
    assert json.loads(output.read_text()) == pytest.approx(trained, rel=1e-4)


def test_existing_run_is_not_overwritten(trained_run, capsys):
    assert main(["train", f"run_dir={trained_run}", *TINY]) == 2
    assert "resume=true" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.not_an_argument=1", "not a Lightning Trainer argument"),
        ("model.no_such_key=3", "no_such_key"),
        ("model=no_such_model", "no_such_model"),
        ("data.path=/nonexistent/file.npz", "does not exist"),
        ("data.n_train=100000", "split asks for"),
        ("dtype=float16", "dtype"),
        ("model.l_max=-1", "l_max must be >= 0"),
        ("model.latent_update=sideways", "latent_update must be one of"),
        ("ema_decay=1.5", "ema_decay must be in [0, 1)"),
        ("checkpoint_every_n_steps=-1", "checkpoint_every_n_steps must be >= 1"),
        ("optim.scheduler=foo", "optim.scheduler='foo' is not one of"),
        ("optim.lr=abc", "optim.lr must be a number, got 'abc'"),
        ("optim.name=sgd", "name must be one of adam, adamw"),
        ("data.batch_size=0", "batch_size and val_batch_size must be >= 1"),
        ("+data.source_units=eV", "unknown key(s) data.source_units"),
        ("+data.max_frames=3", "unknown key(s) data.max_frames"),
        ("+optim.warmup_fraction=0.1", "unknown key optim.warmup_fraction"),
        ("+optim.scheduler.warmup_fraction=0.1", "unknown key optim.scheduler.warmup_fraction"),
        ("+loss.energy_weight=2", "unknown key(s) loss"),
        ("+task.c_rmsd=true", "unknown key task.c_rmsd"),
        ("task=conformer", "model=allegro is a potential model, not a conformer model"),
        ("task.energy_shifts=median", "energy_shifts must be mean_per_atom or least_squares"),
        ("data=qm9", "gives no energy"),
    ],
)
def test_bad_configuration_gets_a_clear_error(tmp_path, capsys, override, message):
    assert main(["train", f"run_dir={tmp_path / 'run'}", *TINY, override]) == 2
    assert message in capsys.readouterr().err


def test_config_errors_are_found_before_anything_is_written(tmp_path, capsys):
    for override in ("+data.foo=1", "+task.bar=2", "optim.lr=-1", "data=geom"):
        assert main(["train", f"run_dir={tmp_path / 'run'}", *TINY, override]) == 2
        assert not (tmp_path / "run").exists(), override
    assert "optim: need lr > 0" in capsys.readouterr().err


def test_scheduler_choice_swaps_the_whole_section(capsys):
    """`optim.scheduler=cosine` leaves no plateau key behind, and its own keys can be set."""
    assert main(["train", "--cfg", "optim.scheduler=cosine", "optim.scheduler.min_lr=1e-5"]) == 0
    scheduler = yaml.safe_load(capsys.readouterr().out)["optim"]["scheduler"]
    assert scheduler == {
        "name": "cosine",
        "min_lr": 1e-5,
        "warmup_fraction": 0.0,
        "warmup_lr": 1e-6,
    }


def test_any_trainer_argument_can_be_set(tmp_path, capsys):
    assert (
        main(["train", "--cfg", "trainer.max_time=00:00:01:00", "trainer.precision=64-true"]) == 0
    )
    printed = capsys.readouterr().out
    assert "max_time: 00:00:01:00" in printed and "precision: 64-true" in printed


def test_nve_md_with_the_trained_model_conserves_energy(trained_run):
    """NVE through the calculator with the checkpoint of `molfold train` (float32 weights).

    An aspirin frame of the shipped data (500 K geometry), 300 K velocities, 25 fs of velocity
    Verlet. Bound: max |E_tot(t) - E_tot(0)| < 2e-4 eV/atom at dt = 0.125 fs. Velocity Verlet
    keeps E_tot within ~(omega dt)^2 kT of its start, so the error must also fall as dt^2
    (ratio 4 from dt = 0.25 to 0.125 fs; measured 3.97, identical in float64): forces that were
    not the exact gradient of the energy, or float32 round-off, would not scale that way.
    """
    from molfold import MolfoldCalculator

    atoms = run_md_script.read_structure(DATA / "aspirin_xtb_500K.npz", 0)
    calculator = MolfoldCalculator(trained_run / "checkpoints" / "best.ckpt")
    fine = nve_energy_error(calculator, atoms, timestep_fs=0.125, steps=200)
    coarse = nve_energy_error(calculator, atoms, timestep_fs=0.25, steps=100)
    assert fine < 2e-4
    assert 3.0 < coarse / fine < 5.0


def test_resume_continues_the_run_and_keeps_its_history(tmp_path):
    import csv

    run_dir = tmp_path / "run"
    assert main(["train", f"run_dir={run_dir}", *TINY]) == 0
    resumed = [o if o != "trainer.max_epochs=1" else "trainer.max_epochs=2" for o in TINY]
    assert main(["train", f"run_dir={run_dir}", *resumed, "resume=true"]) == 0
    with open(run_dir / "metrics.csv") as file:
        epochs = [row["epoch"] for row in csv.DictReader(file) if row.get("val/loss")]
    assert epochs == ["0", "1"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 6)  # two epochs of 24 / 8 batches


def test_train_on_extxyz_with_custom_keys_and_units(tmp_path):
    """`data=ase`: frames written as extxyz with REF_ keys in kcal/mol give the same targets."""
    from ase import Atoms, units
    from ase.io import write

    from molfold.data.sources.md17 import read_md17

    arrays = read_md17(DATA / "aspirin_xtb_500K.npz")
    kcal = units.mol / units.kcal  # eV -> kcal/mol
    frames = []
    for k in range(40):
        atoms = Atoms(numbers=arrays["z"], positions=arrays["pos"][k])
        atoms.info["REF_energy"] = arrays["energy"][k] * kcal
        atoms.arrays["REF_forces"] = arrays["forces"][k] * kcal
        frames.append(atoms)
    path = tmp_path / "aspirin.extxyz"
    write(path, frames, format="extxyz")
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith(("data.path", "data.max_structures"))]
    assert (
        main(
            [
                "train",
                f"run_dir={run_dir}",
                "data=ase",
                f"data.path={path}",
                "data.energy_key=REF_energy",
                "data.forces_key=REF_forces",
                "data.energy_unit=kcal/mol",
                *overrides,
            ]
        )
        == 0
    )
    statistics = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["molfold"][
        "statistics"
    ]
    assert statistics["species"] == [1, 6, 8]
    train = np.load(run_dir / "split.npz")["train"]
    expected_rms = np.sqrt(np.mean(arrays["forces"][train] ** 2))
    assert statistics["energy_scale"] == pytest.approx(expected_rms, rel=1e-6)
