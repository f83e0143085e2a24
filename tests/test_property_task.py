"""Graph targets: QM9 target selection, the property task's loss and metrics in the papers'
units, the reference QM9 split, the choice of task from the model and the data, and an energy
model (Allegro) trained on a QM9 energy target."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from molfold.cli import main
from molfold.data import graph as G
from molfold.data.datamodule import data_fields, load_structures
from molfold.data.sources import qm9
from molfold.data.splits import random_split
from molfold.errors import ConfigError
from molfold.models.property import PropertyModel
from molfold.tasks.property import PropertySettings, PropertyTask
from molfold.tasks.selection import task_for_data

QM9PACK = qm9.qm9pack_dir()
needs_qm9pack = pytest.mark.skipif(QM9PACK is None, reason="qm9pack is not installed")

HARTREE_IN_EV = 27.21138602  # CODATA 2014, 2 R_inf h c / e, independently of molfold.units
QM9 = {"format": "qm9", "max_structures": 30, "n_train": 20, "n_val": 5}


def qm9pack_column(column: str, count: int) -> np.ndarray:
    """The first ``count`` values of a qm9pack CSV column (GDB order), as floats."""
    values = []
    with open(QM9PACK / "qm9_part1.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            values.append(float(row[column]))
            if len(values) == count:
                break
    return np.array(values)


@needs_qm9pack
def test_target_selection_attaches_the_column_in_molfold_units():
    graphs = load_structures({**QM9, "target": "HOMO"})
    homo = np.array([float(g[G.TARGET][0, 0]) for g in graphs])
    assert all(g[G.TARGET].shape == (1, 1) for g in graphs)
    np.testing.assert_allclose(homo, qm9pack_column("HOMO_au", 30) * HARTREE_IN_EV, rtol=1e-6)
    assert all(G.ENERGY not in g for g in graphs)  # HOMO is no energy a potential trains on


@needs_qm9pack
def test_an_energy_target_is_also_the_energy_of_a_potential():
    graphs = load_structures({**QM9, "target": "u0"})
    u0 = qm9pack_column("InternalEnergy_0K_au", 30) * HARTREE_IN_EV
    np.testing.assert_allclose([float(g[G.ENERGY][0]) for g in graphs], u0, rtol=1e-9)
    np.testing.assert_allclose([float(g[G.TARGET][0, 0]) for g in graphs], u0, rtol=1e-9)


def test_fields_and_task_follow_the_target():
    assert G.TARGET not in data_fields({"format": "qm9"})
    assert {G.TARGET, G.ENERGY} <= set(data_fields({"format": "qm9", "target": "U0"}))
    assert G.ENERGY not in data_fields({"format": "qm9", "target": ["homo", "lumo"]})
    assert task_for_data("allegro", {"format": "qm9", "target": "U0"}).name == "potential"
    assert task_for_data("rebind", {"format": "qm9"}).name == "conformer"


def test_unknown_target_names_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown QM9 target.*homo"):
        data_fields({"format": "qm9", "target": "homo_lumo"})


def test_reference_split_is_torchmd_nets_permutation():
    """Equiformer's QM9 split (datasets/pyg/qm9.py, torchmd_net_split): the first 110,000 of
    ``numpy.random.default_rng(1).permutation(130831)`` train, the next 10,000 validate."""
    split = random_split(130_831, 110_000, 10_000, None, seed=1, rng="numpy")
    assert [len(split[k]) for k in ("train", "val", "test")] == [110_000, 10_000, 10_831]
    order = np.random.default_rng(1).permutation(130_831)
    np.testing.assert_array_equal(split["val"], np.sort(order[110_000:120_000]))
    np.testing.assert_array_equal(split["test"], np.sort(order[120_000:]))


class ConstantNetwork(torch.nn.Module):
    """A property network whose standardised output is a learnable constant per target."""

    r_max = 5.0

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))

    def forward(self, data, atom_types):
        return {"graph": self.value.expand(int(data[G.BATCH].max()) + 1, -1)}


def batch_of(targets: list[list[float]]) -> Batch:
    graphs = [
        Data(
            z=torch.tensor([1, 8]),
            pos=torch.zeros(2, 3),
            cell=torch.zeros(1, 3, 3),
            edge_cell_shift=torch.zeros(0, 3),
            target=torch.tensor([row], dtype=torch.float64),
        )
        for row in targets
    ]
    return Batch.from_data_list(graphs)


def test_loss_is_l1_of_standardised_targets_and_metrics_in_mev():
    # homo in eV (std 0.5), mu in Debye (std 2): standardised output 0 predicts the means
    model = PropertyModel(
        ConstantNetwork([0.0, 0.0]), [1, 8], ["homo", "mu"], [-6.0, 3.0], [0.5, 2.0], ["eV", "D"]
    )
    task = PropertyTask(model, PropertySettings())
    batch = batch_of([[-6.5, 1.0], [-5.0, 3.0]])
    loss, _ = task.loss(task(batch), batch)
    # errors: homo 0.5, 1.0 eV -> 1.0, 2.0 std; mu 2.0, 0.0 D -> 1.0, 0.0 std
    assert float(loss) == pytest.approx((1.0 + 2.0 + 1.0 + 0.0) / 4)
    task.accumulate(task(batch), batch, "val")
    metrics = task.metrics(task.errors.reduced())
    assert metrics["homo_mae"] == pytest.approx(750.0)  # meV
    assert metrics["mu_mae"] == pytest.approx(1.0)  # Debye, as reported
    assert metrics["loss"] == pytest.approx(float(loss))
    assert task.units["homo_mae"] == "meV" and task.units["mu_mae"] == "D"


def test_unstandardised_training_uses_the_raw_errors():
    model = PropertyModel(ConstantNetwork([-6.0]), [1, 8], ["homo"], [0.0], [1.0], ["eV"])
    task = PropertyTask(model, PropertySettings(loss="mse"))
    batch = batch_of([[-6.5], [-5.0]])
    loss, _ = task.loss(task(batch), batch)
    assert float(loss) == pytest.approx((0.25 + 1.0) / 2)


@needs_qm9pack
def test_allegro_trains_on_a_qm9_energy_target(tmp_path):
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            "model=allegro",
            "data=qm9",
            "data.target=U0",
            "data.max_structures=40",
            "data.n_train=24",
            "data.n_val=8",
            "data.batch_size=8",
            "model.num_scalar_features=8",
            "model.num_tensor_features=4",
            "model.radial_chemical_embed_dim=8",
            "model.two_body_mlp_hidden=[8]",
            "model.allegro_mlp_hidden=[8]",
            "model.readout_mlp_hidden=[8]",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            f"run_dir={run_dir}",
        ]
    )
    assert code == 0
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["energy_mae"] > 0 and "forces_mae" not in metrics
    assert (run_dir / "parity.png").is_file()


@pytest.mark.parametrize(
    ("overrides", "task", "checks"),
    [
        (["data=qm9", "data.target=homo", "task.loss=mse"], "property", {"loss": "mse"}),
        (["data=md17", "task.loss=mae"], "potential", {"loss": "mae", "forces_weight": 80.0}),
        (["data=oc20", "data.task=is2re", "task.standardize=false"], "property", {}),
        (
            ["data=md17", "task=potential", "task.forces_weight=3"],
            "potential",
            {"forces_weight": 3},
        ),
    ],
)
def test_equiformer_task_follows_the_data_and_takes_its_keys(overrides, task, checks, capsys):
    import yaml

    assert main(["train", "--cfg", "model=equiformer", *overrides]) == 0
    section = yaml.safe_load(capsys.readouterr().out)["task"]
    assert section["name"] == task
    assert {key: section[key] for key in checks} == checks


def test_a_key_of_another_task_is_an_error(capsys):
    assert main(["train", "--cfg", "model=equiformer", "data=md17", "task.standardize=false"]) == 2
    assert "task.standardize" in capsys.readouterr().err
