"""A run killed with SIGKILL mid-training resumes from its last checkpoint; identical runs agree."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import torch

from molfold.cli import main

from .test_cli import TINY


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
