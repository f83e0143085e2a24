"""Shared fixtures: float64 context, small structures and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture(autouse=True, scope="session")
def molfold_cache(tmp_path_factory):
    """molfold's caches (processed QM9, transformed structures) in a folder of the test run,
    not the user's ~/.cache/molfold."""
    folder = tmp_path_factory.mktemp("molfold_cache")
    previous = os.environ.get("MOLFOLD_CACHE_DIR")
    os.environ["MOLFOLD_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["MOLFOLD_CACHE_DIR"]
    else:
        os.environ["MOLFOLD_CACHE_DIR"] = previous


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype, restoring the previous default after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture
def triclinic_cu():
    """A small, rattled, sheared Cu cell: neighbours appear through several periodic images."""
    atoms = bulk("Cu", "fcc", a=3.6)
    cell = np.asarray(atoms.cell) + np.array([[0.0, 0.3, 0.1], [0.2, 0.0, -0.2], [0.1, 0.4, 0.0]])
    atoms.set_cell(cell, scale_atoms=True)
    atoms = atoms * (2, 1, 1)
    atoms.rattle(0.1, seed=2)
    return atoms


@pytest.fixture
def tiny_potential_ckpt(tmp_path):
    """A small untrained Allegro potential for H, C, O, saved as a checkpoint."""
    from molfold.models.checkpoint import save_model
    from molfold.models.registry import build_model

    torch.manual_seed(0)
    hparams = dict(num_layers=1, num_scalar_features=8, num_tensor_features=4, l_max=1)
    hparams.update(radial_chemical_embed_dim=8, two_body_mlp_hidden=[8])
    hparams.update(allegro_mlp_hidden=[8], readout_mlp_hidden=[8], avg_num_neighbors=5.0)
    path = tmp_path / "potential.ckpt"
    save_model(build_model("allegro", hparams, {"species": [1, 6, 8]}), path)
    return path
