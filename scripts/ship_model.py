"""Train a model that ships with molfold and write its weights: the step every
``scripts/train_*.py`` shares.

:func:`train_and_ship` runs ``molfold train`` with a recipe's overrides in a run directory
(resuming from its last checkpoint when there is one: a killed run continues where it stopped),
then writes the best checkpoint's (EMA) weights with
:func:`~molfold.models.checkpoint.save_model`; :func:`write_metrics` writes the JSON record that
goes beside them (``<output stem>_metrics.json``), with the versions of the packages used.
"""

from __future__ import annotations

import json
import platform
import time
from importlib.metadata import version
from pathlib import Path

from molfold.cli import compose
from molfold.io import atomic_write
from molfold.models.checkpoint import load_model, save_model


def train_and_ship(overrides: list[str], run_dir: Path, output: Path):
    """Train with ``overrides`` in ``run_dir`` and write the best weights to ``output``;
    returns ``(test metrics, wall seconds of this sitting, the shipped model)``."""
    from molfold.train.run import train

    resume = (run_dir / "checkpoints" / "last.ckpt").exists()
    config = compose("train", [*overrides, f"run_dir={run_dir}", f"resume={str(resume).lower()}"])
    start = time.time()
    metrics = train(config)
    wall = time.time() - start
    save_model(load_model(run_dir / "checkpoints" / "best.ckpt"), output)
    return metrics, wall, load_model(output)


def write_metrics(output: Path, record: dict) -> Path:
    """``record`` plus package versions as ``<output stem>_metrics.json``, atomically."""
    record = {
        **record,
        "versions": {
            name: version(name) for name in ("torch", "ase", "numpy", "lightning", "e3nn")
        },
        "python": platform.python_version(),
    }
    metrics_file = output.with_name(output.stem + "_metrics.json")
    atomic_write(metrics_file, json.dumps(record, indent=2) + "\n")
    print(f"wrote {output} ({output.stat().st_size:,} bytes) and {metrics_file}")
    return metrics_file
