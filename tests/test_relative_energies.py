"""Energies relative within a molecule: group-keeping training batches and the group-relative
energy loss (``data.batch_by=group``, ``task.energy_reference=group``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molfold.cli import main
from molfold.data.loaders import EpochPermutationSampler
from molfold.tasks.potential import PotentialSettings, relative_within_groups

from .conftest import DATA

GROUPS = np.repeat([4, 0, 7, 2, 9], [3, 1, 5, 2, 4])  # 5 molecules, 15 frames, in file order


def _runs(labels: np.ndarray) -> int:
    """How many maximal runs of equal consecutive labels ``labels`` has."""
    return 1 + int(np.count_nonzero(labels[1:] != labels[:-1]))


def test_group_batches_hold_each_molecules_frames_one_after_another():
    sampler = EpochPermutationSampler(len(GROUPS), seed=5, groups=GROUPS)
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = np.array(list(sampler))
        assert sorted(order.tolist()) == list(range(len(GROUPS)))  # every frame once
        assert _runs(GROUPS[order]) == 5  # each molecule's frames in one stretch
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch
    assert not np.array_equal(GROUPS[orders[0]], np.sort(GROUPS))  # molecules shuffled
    plain = EpochPermutationSampler(len(GROUPS), seed=5)
    assert _runs(GROUPS[np.array(list(plain))]) > 5  # without groups, molecules interleave


def test_group_batches_split_over_ranks_without_duplicates():
    shares = []
    for rank in (0, 1):
        sampler = EpochPermutationSampler(len(GROUPS), rank, 2, seed=1, groups=GROUPS)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler) == 7
    assert not set(shares[0]) & set(shares[1])


def test_relative_errors_ignore_a_constant_offset_per_molecule():
    """Predictions off by a different constant for each molecule, plus small errors: what is
    left is each small error minus its molecule's mean, and a molecule alone in the batch
    drops out."""
    group = torch.tensor([3, 3, 3, 8, 1, 1], dtype=torch.long)
    offset = torch.tensor([5.0, 5.0, 5.0, -2.0, 0.7, 0.7], dtype=torch.float64)
    small = torch.tensor([0.01, -0.02, 0.04, 0.5, 0.03, -0.01], dtype=torch.float64)
    atoms = torch.tensor([9, 9, 9, 4, 12, 12], dtype=torch.float64)
    error, kept_atoms = relative_within_groups(offset + small, atoms, group)
    expected = [0.0, -0.03, 0.03, 0.02, -0.02]  # molecule 3: mean 0.01; molecule 1: mean 0.01
    np.testing.assert_allclose(error.numpy(), expected, atol=1e-12)
    np.testing.assert_array_equal(kept_atoms.numpy(), [9, 9, 9, 12, 12])
    error, _ = relative_within_groups(small[3:4], atoms[3:4], group[3:4])
    assert error.numel() == 0  # nothing to compare with: no energy term for this batch


def test_unknown_energy_reference_is_refused():
    with pytest.raises(ValueError, match="energy_reference"):
        PotentialSettings(energy_reference="molecule")


DRUGLIKE_TINY = [
    "model=allegro",
    "data=ase",
    "preset=allegro_druglike_xtb",
    f"data.path={DATA / 'druglike_xtb_frames' / 'chunk_000.extxyz.gz'}",
    "data.max_structures=60",
    "data.n_train=2",
    "data.n_val=1",
    "data.n_test=1",
    "compile=false",
    "model.num_scalar_features=8",
    "model.num_tensor_features=4",
    "model.radial_chemical_embed_dim=8",
    "model.two_body_mlp_hidden=[8]",
    "model.allegro_mlp_hidden=[8]",
    "model.readout_mlp_hidden=[8]",
    "trainer.max_steps=2",
]


def test_druglike_recipe_trains_on_relative_energies(tmp_path, capsys):
    """The shipped recipe's settings train end to end (the energy metrics are then relative
    within each molecule), and the same run without group batches is refused with a message
    naming the missing setting."""
    assert main(["train", f"run_dir={tmp_path / 'ok'}", *DRUGLIKE_TINY]) == 0
    assert main(["train", f"run_dir={tmp_path / 'bad'}", *DRUGLIKE_TINY, "data.batch_by=null"]) == 2
    assert "data.batch_by=group" in capsys.readouterr().err
