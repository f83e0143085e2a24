"""Data-parallel training (Lightning DDP, gloo on CPU) matches single-process training.

Two processes with batch 4 and one process with batch 8 see the same global batches (the
datamodule deals out one seeded permutation per epoch), so after a few optimizer steps their
parameters agree to float64 round-off (tolerance 1e-9 relative: the gradient all-reduce sums in
another order), and the test metrics, summed over both ranks' shards without padding, agree too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from .common import TINY


def train(run_dir, processes: int, *overrides: str) -> subprocess.CompletedProcess:
    """``molfold train`` of TINY on ``processes`` CPU processes; ``overrides`` replace TINY's."""
    keys = {o.split("=", 1)[0] for o in overrides}
    settings = [o for o in TINY if o.split("=", 1)[0] not in keys]
    command = [sys.executable, "-m", "molfold.cli", "train", f"run_dir={run_dir}", *settings]
    command += [*overrides, "trainer.accelerator=cpu", f"trainer.devices={processes}"]
    if processes > 1:
        command.append("trainer=ddp")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    results = {}
    for processes, batch_size in ((1, 8), (2, 4)):
        result = train(
            root / f"p{processes}",
            processes,
            f"data.batch_size={batch_size}",
            "data.val_batch_size=3",
            "dtype=float64",
        )
        assert result.returncode == 0, result.stderr[-4000:]
        results[processes] = root / f"p{processes}"
    return results


def test_two_processes_give_the_parameters_of_one(runs):
    states = [torch.load(runs[p] / "checkpoints" / "last.ckpt", weights_only=True) for p in (1, 2)]
    assert states[0]["global_step"] == states[1]["global_step"] == 3  # 24 structures / 8
    for name, single in states[0]["state_dict"].items():
        torch.testing.assert_close(states[1]["state_dict"][name], single, rtol=1e-9, atol=1e-12)
    # and the optimizer did move them: three Adam steps with non-zero gradient moments
    adam = states[0]["optimizer_states"][0]["state"]
    assert all(float(v["step"]) == 3 for v in adam.values())
    assert any(float(v["exp_avg"].abs().max()) > 0 for v in adam.values())


def test_reported_test_metrics_are_equal(runs):
    metrics = [json.loads((runs[p] / "test_metrics.json").read_text()) for p in (1, 2)]
    assert metrics[0].keys() == metrics[1].keys()
    for key, value in metrics[0].items():
        assert metrics[1][key] == pytest.approx(value, rel=1e-8), key


def test_a_split_smaller_than_the_process_count_is_refused_by_every_rank(tmp_path):
    """Lightning would stop rank 1 with a raw error on its empty loader and leave rank 0 hanging
    in a collective; every rank sees the same split, so all refuse it with one message."""
    result = train(tmp_path / "run", 2, "data.n_val=1")
    assert result.returncode == 2
    assert result.stderr.count("the val split has 1 structures, fewer than the 2 processes") == 2
