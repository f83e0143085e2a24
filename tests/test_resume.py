"""A run killed mid-training resumes from its last checkpoint; identical runs agree."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import molfold.train.run as run
from molfold.cli import main

from .common import TINY


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if o != "trainer.max_epochs=1"] + ["trainer.max_epochs=200"]
    command = [sys.executable, "-m", "molfold.cli", "train", f"run_dir={run_dir}", *overrides]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # at an arbitrary point of a later epoch
    process.wait()
    assert process.returncode == -signal.SIGKILL

    # nothing half-written: every checkpoint in the folder loads
    for path in (run_dir / "checkpoints").iterdir():
        if path.suffix == ".ckpt":
            torch.load(path, weights_only=True)
    killed_at = torch.load(last, weights_only=True)["epoch"]
    (run_dir / "checkpoints" / ".last.ckpt.tmp999").write_bytes(b"half a checkpoint")

    finish = killed_at + 2
    resumed = [o for o in overrides if not o.startswith("trainer.max_epochs")]
    assert (
        main(
            ["train", f"run_dir={run_dir}", *resumed, f"trainer.max_epochs={finish}", "resume=true"]
        )
        == 0
    )
    with open(run_dir / "metrics.csv") as file:
        epochs = sorted({int(row["epoch"]) for row in csv.DictReader(file) if row.get("val/loss")})
    assert epochs == list(range(finish))  # history kept, no epoch lost or repeated in the log
    assert torch.load(last, weights_only=True)["epoch"] == finish - 1
    assert not list((run_dir / "checkpoints").glob(".*.tmp*"))  # stale partial writes removed
    assert json.loads((run_dir / "test_metrics.json").read_text())["forces_mae"] > 0


def test_identical_runs_give_identical_metrics(tmp_path):
    for name in ("a", "b"):
        assert main(["train", f"run_dir={tmp_path / name}", *TINY]) == 0
    a, b = (json.loads((tmp_path / n / "test_metrics.json").read_text()) for n in ("a", "b"))
    assert a == b


class _Stopped(Exception):
    """Stands for a kill: raised by :class:`_StopAt`, after which nothing more is written."""


class _StopAt(Callback):
    """Raise in ``hook`` once ``global_step`` reaches ``step`` (the last checkpoint is then the
    step checkpoint of that step; the batch after it is fetched but not trained)."""

    def __init__(self, hook: str, step: int) -> None:
        def stop(trainer, *args) -> None:
            if trainer.global_step == step:
                raise _Stopped

        setattr(self, hook, stop)


# 24 training structures in batches of 8: 3 steps per epoch, a step checkpoint every 2 steps
STEPWISE = [o for o in TINY if o != "trainer.max_epochs=1"] + [
    "trainer.max_epochs=3",
    "checkpoint_every_n_steps=2",
    "dtype=float64",
]


@pytest.mark.parametrize(
    "hook, step, scheduler",
    [
        ("on_train_batch_start", 4, "plateau"),  # right after step 4 (epoch 1) and its save
        ("on_train_batch_start", 5, "plateau"),  # after step 5, lost: the last save is step 4's
        ("on_train_batch_start", 5, "cosine"),  # step-wise schedules resume exactly too
        ("on_train_batch_start", 5, "linear_warmup"),
    ],
)
def test_run_stopped_mid_epoch_resumes_as_if_never_stopped(
    tmp_path, monkeypatch, hook, step, scheduler
):
    """Parameters, optimizer, scheduler and EMA state and test metrics equal (float64, to 1e-12)
    those of an uninterrupted run with the same seed."""
    build_trainer = run.build_trainer
    stop_at: list[Callback] = []

    def with_stop(config, settings, run_dir):
        trainer = build_trainer(config, settings, run_dir)
        trainer.callbacks[:0] = stop_at
        return trainer

    monkeypatch.setattr(run, "build_trainer", with_stop)
    stepwise = [*STEPWISE, f"optim.scheduler={scheduler}"]
    assert main(["train", f"run_dir={tmp_path / 'whole'}", *stepwise]) == 0
    stop_at.append(_StopAt(hook, step))
    with pytest.raises(_Stopped):
        main(["train", f"run_dir={tmp_path / 'stopped'}", *stepwise])
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 4 and saved["epoch"] == 1  # mid-epoch
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 1}
    ]
    stop_at.clear()
    assert main(["train", f"run_dir={tmp_path / 'stopped'}", *stepwise, "resume=true"]) == 0

    whole, resumed = (
        torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        for name in ("whole", "stopped")
    )
    assert resumed["global_step"] == whole["global_step"] == 9
    tolerance = {"rtol": 0.0, "atol": 1e-12}
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "ema"):
        _assert_same(resumed[key], whole[key], key, tolerance)
    metrics = [
        json.loads((tmp_path / name / "test_metrics.json").read_text())
        for name in ("whole", "stopped")
    ]
    torch.testing.assert_close(metrics[1], metrics[0], **tolerance)


def _assert_same(resumed, whole, where: str, tolerance: dict) -> None:
    """Tensors equal to ``tolerance``, everything else exactly, in nested dicts and lists."""
    if isinstance(whole, dict):
        assert resumed.keys() == whole.keys(), where
        for key in whole:
            _assert_same(resumed[key], whole[key], f"{where}.{key}", tolerance)
    elif isinstance(whole, list | tuple):
        assert len(resumed) == len(whole), where
        for index, (a, b) in enumerate(zip(resumed, whole)):
            _assert_same(a, b, f"{where}[{index}]", tolerance)
    elif isinstance(whole, torch.Tensor):
        torch.testing.assert_close(resumed, whole, **tolerance, msg=where)
    else:
        assert resumed == whole, where


def test_run_of_molfold_0_1_0_resumes(tmp_path):
    """molfold 0.1.0 stored the potential as `potential.*` in Lightning's state dict."""
    run_dir = tmp_path / "run"
    assert main(["train", f"run_dir={run_dir}", *TINY]) == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["state_dict"] = {
        "potential." + k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()
    }
    torch.save(checkpoint, last)
    more = [o for o in TINY if o != "trainer.max_epochs=1"] + ["trainer.max_epochs=2"]
    assert main(["train", f"run_dir={run_dir}", *more, "resume=true"]) == 0
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 2 * checkpoint["global_step"] > 0  # one more epoch
    assert all(k.startswith("model.") for k in resumed["state_dict"])
