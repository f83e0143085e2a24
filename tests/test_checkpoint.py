"""One checkpoint format for every model kind: versions, old formats, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from molfold import __version__
from molfold.calculator import MolfoldCalculator
from molfold.errors import CheckpointError, ConfigError
from molfold.models.checkpoint import FORMAT_VERSION, load_model, read_checkpoint, save_model
from molfold.models.registry import build_model, registered_models
from molfold.shipped import shipped_data

from .common import SMALL as COMMON_SMALL

SMALL = dict(
    COMMON_SMALL,
    r_max=4.0,
    num_scalar_features=8,
    num_tensor_features=4,
    radial_chemical_embed_dim=8,
    avg_num_neighbors=5.0,
)
STATISTICS = {"species": [1, 6, 8], "energy_scale": 0.5, "energy_shifts": [-13.6, -1029.0, -2041.0]}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("allegro", SMALL, STATISTICS, "float64")
    path = tmp_path / "model.pt"
    save_model(model, path)
    return model, path


def test_every_model_registers_its_kind():
    kinds = {(entry.name, entry.kind) for entry in registered_models()}
    assert {("allegro", "potential"), ("rebind", "conformer")} <= kinds


def test_checkpoint_records_versions_and_rebuilds_the_model(saved, ethanol):
    model, path = saved
    payload = read_checkpoint(path)
    assert payload["format_version"] == FORMAT_VERSION == 4
    assert payload["molfold_version"] == __version__
    assert (payload["name"], payload["kind"], payload["dtype"]) == (
        "allegro",
        "potential",
        "float64",
    )
    loaded = load_model(path)
    assert loaded.species == [1, 6, 8] and not loaded.training
    torch.testing.assert_close(loaded.shifts, torch.tensor(STATISTICS["energy_shifts"]).double())
    ethanol.calc = MolfoldCalculator(model)
    expected = ethanol.get_forces()
    ethanol.calc = MolfoldCalculator(path)
    assert abs(ethanol.get_forces() - expected).max() == 0.0


def test_newer_format_gets_a_clear_error(saved, tmp_path):
    _, path = saved
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["molfold"]["format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.pt"
    torch.save(checkpoint, newer)
    with pytest.raises(CheckpointError, match=f"format {FORMAT_VERSION + 1}.*upgrade molfold"):
        load_model(newer)


@pytest.mark.parametrize("key", ["name", "state_dict", "hparams"])
def test_incomplete_checkpoint_gets_a_clear_error(saved, tmp_path, key):
    _, path = saved
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["molfold"][key]
    broken = tmp_path / "broken.pt"
    torch.save(checkpoint, broken)
    with pytest.raises(CheckpointError, match=f"no \\['{key}'\\] entry"):
        load_model(broken)


def path_weights_channel_major(state_dict: dict) -> dict:
    """``state_dict`` with Allegro's tensor-product path weights in the [channels, paths] layout
    of checkpoint formats < 4 (and of the reference code)."""
    return {
        key: value.t().contiguous() if key.endswith("tensor_product.weight") else value
        for key, value in state_dict.items()
    }


def test_format_3_checkpoint_gets_its_path_weights_transposed(saved, tmp_path, ethanol):
    model, path = saved
    payload = torch.load(path, weights_only=True)
    state = payload["molfold"]["state_dict"]
    assert any(state[k].shape[0] != state[k].shape[1] for k in state if "tensor_product" in k)
    payload["molfold"]["state_dict"] = path_weights_channel_major(state)
    payload["molfold"]["format_version"] = 3
    old = tmp_path / "format3.pt"
    torch.save(payload, old)
    ethanol.calc = MolfoldCalculator(model, compile=False)
    expected = ethanol.get_forces()
    ethanol.calc = MolfoldCalculator(old, compile=False)
    assert abs(ethanol.get_forces() - expected).max() == 0.0


def test_format_1_potential_checkpoint_still_loads(saved, tmp_path, ethanol):
    """A checkpoint as molfold wrote it before the one-stack rewrite (no format_version)."""
    model, _ = saved
    old = tmp_path / "old.pt"
    old_state = path_weights_channel_major(model.state_dict())
    payload = {
        "model": "allegro",
        "hparams": SMALL,
        "species": [1, 6, 8],
        "state_dict": old_state,
        "dtype": "float64",
        "version": "0.1.0",
        "statistics": {"avg_num_neighbors": 5.0},
    }
    torch.save({"molfold": payload}, old)
    loaded = load_model(old)
    assert loaded.model_info["kind"] == "potential" and loaded.species == [1, 6, 8]
    # format < 3 stored Allegro's channel weights channel-major: the same weights, reordered
    upgraded = copy.deepcopy(model)
    upgraded.load_state_dict(model.model.upgrade_state_dict(old_state, "model.", 1))
    ethanol.calc = MolfoldCalculator(upgraded, compile=False)
    expected = ethanol.get_potential_energy()
    ethanol.calc = MolfoldCalculator(loaded, compile=False)
    assert ethanol.get_potential_energy() == expected


def test_shipped_format_1_conformer_checkpoint_still_loads():
    path = shipped_data("rebind_qm9.pt")
    assert "format_version" not in torch.load(path, weights_only=True)["molfold"]
    model = load_model(path)
    assert model.model_info["kind"] == "conformer"
    assert model.model_info["statistics"]["elements"] == [1, 6, 7, 8, 9]


def test_calculator_refuses_a_conformer_model_by_name():
    with pytest.raises(ConfigError, match="needs a potential.*conformer model \\(rebind\\)"):
        MolfoldCalculator(shipped_data("rebind_qm9.pt"))


@pytest.mark.parametrize("device, message", [("gpu", "unknown device 'gpu'"), ("cuda", "no CUDA")])
def test_bad_device_gets_a_clear_error(saved, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _, path = saved
    with pytest.raises(ConfigError, match=message):
        MolfoldCalculator(path, device=device)
    with pytest.raises(ConfigError, match=message):
        load_model(path, device)


@pytest.mark.parametrize("factor", [0, -1.0, float("nan"), "x"])
def test_unit_factors_must_be_positive(saved, factor):
    _, path = saved
    for key in ("length_units_to_A", "energy_units_to_eV"):
        with pytest.raises(ConfigError, match="must be a positive number"):
            MolfoldCalculator(path, **{key: factor})
