"""``molfold train`` and ``molfold eval``: from a config dict to a run directory.

A run directory holds::

    config.yaml               the composed config, as run
    versions.json             molfold, torch, e3nn, lightning versions
    split.npz                 train/val/test indices into the dataset file
    checkpoints/best.ckpt     lowest validation loss (EMA weights for inference)
    checkpoints/last.ckpt     latest epoch end or every checkpoint_every_n_steps steps (resume)
    metrics.csv               Lightning CSV log, one row per logging step/epoch
    tensorboard/              TensorBoard events
    test_metrics.json         test-set errors of best.ckpt
    parity.png, learning_curve.png
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from molfold.errors import ConfigError
from molfold.train.metrics import format_table


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import e3nn
    import lightning
    import torch_geometric

    import molfold

    return {
        "molfold": molfold.__version__,
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "lightning": lightning.__version__,
        "torch_geometric": torch_geometric.__version__,
    }


RUN_DIR_VARIABLE = "MOLFOLD_RUN_DIR"
"""Set by the primary process, so that the processes Lightning launches for DDP use its run dir."""


def _run_dir(config: dict[str, Any]) -> Path:
    if config.get("run_dir"):
        return Path(config["run_dir"])
    if RUN_DIR_VARIABLE in os.environ:
        return Path(os.environ[RUN_DIR_VARIABLE])
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError("set run_dir=PATH when launching several processes (torchrun, SLURM)")
    return Path("runs") / f"{config['model']['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_task(config: dict[str, Any], statistics: dict[str, Any]):
    """The potential, scaled by training-set statistics, inside its Lightning task."""
    from molfold.models.registry import build_potential
    from molfold.train.losses import LossWeights
    from molfold.train.tasks import PotentialTask

    hparams = {k: v for k, v in config["model"].items() if k != "name"}
    if hparams.get("avg_num_neighbors", "auto") == "auto":
        hparams["avg_num_neighbors"] = statistics["avg_num_neighbors"]
    potential = build_potential(
        config["model"]["name"],
        statistics["species"],
        hparams,
        scales=statistics["energy_scale"],
        shifts=statistics["energy_shifts"],
        dtype=config.get("dtype", "float32"),
    )
    loss = config["loss"]
    try:
        weights = LossWeights(
            loss["energy_weight"], loss["forces_weight"], loss.get("stress_weight", 0.0)
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return PotentialTask(potential, weights, config["optim"], config.get("ema_decay"), statistics)


def build_trainer(config: dict[str, Any], run_dir: Path):
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from molfold.train.checkpoint_io import AtomicCheckpointIO
    from molfold.train.csv_logger import AppendingCSVLogger
    from molfold.train.step_checkpoint import ResumedEpochSchedulers, StepCheckpoint

    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/loss",
        mode="min",
        save_last=True,
        enable_version_counter=False,
    )
    callbacks = [checkpoints]  # first: trainer.checkpoint_callback is the best-model one
    every_n_steps = config.get("checkpoint_every_n_steps")
    if every_n_steps:  # last.ckpt mid-epoch as well; both callbacks write that one file
        callbacks += [
            StepCheckpoint(run_dir / "checkpoints", int(every_n_steps)),
            ResumedEpochSchedulers(),
        ]
    options = dict(config["trainer"])
    if config.get("dtype") == "float64":
        options.setdefault("precision", "64-true")
    try:
        return L.Trainer(
            default_root_dir=run_dir,
            logger=[
                AppendingCSVLogger(run_dir, name="", version=""),
                TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False),
            ],
            callbacks=[*callbacks, LearningRateMonitor("epoch")],
            plugins=[AtomicCheckpointIO()],
            inference_mode=False,  # forces need gradients during validation and test
            use_distributed_sampler=False,  # the datamodule shards batches itself, no duplicates
            num_sanity_val_steps=0,
            **options,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad trainer settings: {error}") from error


def prepare_run_dir(config: dict[str, Any]) -> Path:
    """Create (or, with ``resume``, reopen) the run directory and write config and versions
    (primary process only); return the run directory."""
    from molfold.data.datamodule import is_primary_process

    run_dir = _run_dir(config)
    primary = is_primary_process()
    last = run_dir / "checkpoints" / "last.ckpt"
    if primary:
        if last.exists() and not config.get("resume"):
            raise ConfigError(
                f"{run_dir} already holds a run; continue it with resume=true or choose another "
                "run_dir"
            )
        if config.get("resume") and not last.exists():
            raise ConfigError(f"resume=true, but {last} does not exist")
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob("checkpoints/.*.tmp*"):  # left by a kill during a write
            stale.unlink()
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)
        _write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        _write_text(run_dir / "versions.json", json.dumps(_versions(), indent=2))
    return run_dir


def train(config: dict[str, Any]) -> dict[str, float]:
    """Train, test the best checkpoint, write plots and metrics; return the test metrics."""
    import lightning as L

    from molfold.data.datamodule import AtomicDataModule
    from molfold.models.registry import CONFORMER_MODELS
    from molfold.train.plots import learning_curves, parity_plot

    if config["model"]["name"] in CONFORMER_MODELS:
        from molfold.train.conformer_run import train_conformers

        return train_conformers(config)
    run_dir = prepare_run_dir(config)
    seed = int(config.get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = AtomicDataModule(config["data"], float(config["model"]["r_max"]), run_dir, seed)
    datamodule.setup()
    task = build_task(config, datamodule.statistics)
    trainer = build_trainer(config, run_dir)
    metrics, best = fit_and_test(trainer, task, datamodule, config, run_dir, "structures")
    if trainer.is_global_zero:
        predictions = {k: torch.cat(v).numpy() for k, v in task.test_predictions.items()}
        parity_plot(
            predictions["energy"],
            predictions["energy_ref"],
            predictions["forces"],
            predictions["forces_ref"],
            run_dir / "parity.png",
        )
        if (run_dir / "metrics.csv").exists():
            learning_curves(run_dir / "metrics.csv", run_dir / "learning_curve.png")
    return metrics


def fit_and_test(
    trainer, task, datamodule, config: dict[str, Any], run_dir: Path, what: str, units=None
) -> tuple[dict[str, float], str]:
    """Fit (resuming from ``last.ckpt`` with ``resume=true``), test the best checkpoint, print
    the test table and write ``test_metrics.json``; return the metrics and the best checkpoint.

    ``what`` names the split's items in messages ("structures", "molecules"); ``units`` maps
    metric names to units for the table.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if trainer.is_global_zero:
        sizes = " / ".join(f"{len(datamodule.split[k])} {k}" for k in ("train", "val", "test"))
        source = config["data"].get("path") or config["data"].get("format")
        print(f"molfold train: {sizes} {what} from {source}")
        print(f"run directory: {run_dir}")
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if config.get("resume") else None)
    best = trainer.checkpoint_callback.best_model_path or str(last)
    trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics = task.test_metrics
    if trainer.is_global_zero:
        title = f"Test metrics ({len(datamodule.split['test'])} {what}, {Path(best).name})"
        print(format_table(metrics, title, units))
        _write_text(run_dir / "test_metrics.json", json.dumps(metrics, indent=2))
    return metrics, best


def _evaluation_indices(config: dict[str, Any], num_structures: int) -> tuple[np.ndarray, str]:
    from molfold.data.datamodule import load_split

    split = config.get("split", "auto")
    if split == "all":
        return np.arange(num_structures), "all structures"
    if split == "auto":
        candidate = Path(config["ckpt"]).resolve().parent.parent / "split.npz"
        if not candidate.exists():
            return np.arange(num_structures), "all structures"
        split = candidate
    return load_split(Path(split), num_structures)["test"], f"test split of {split}"


def evaluate(config: dict[str, Any]) -> dict[str, float]:
    """Metrics of a checkpoint on a dataset file, printed as a table and optionally as JSON."""
    from torch_geometric.loader import DataLoader
    from tqdm import tqdm

    from molfold.data.datamodule import load_structures
    from molfold.models.registry import CONFORMER_MODELS, load_model
    from molfold.train.metrics import ErrorAccumulator

    potential = load_model(config["ckpt"], device=config.get("device", "cpu"))
    if potential.config["model"] in CONFORMER_MODELS:
        from molfold.train.conformer_run import evaluate_conformers

        return evaluate_conformers(config, potential)
    structures = load_structures(config["data"], potential.r_max)
    indices, description = _evaluation_indices(config, len(structures))
    loader = DataLoader(
        [structures[i] for i in indices], batch_size=int(config.get("batch_size", 32))
    )
    errors = ErrorAccumulator()
    for batch in tqdm(loader, desc="evaluating", unit="batch"):
        batch = batch.to(config.get("device", "cpu"))
        errors.add_batch(potential(batch), batch)
    metrics = errors.compute()
    source = f"{config['data']['path']} ({len(indices)} structures, {description})"
    report_metrics(metrics, f"{Path(config['ckpt']).name} on {source}", config.get("output"))
    return metrics


def report_metrics(metrics: dict[str, float], title: str, output: str | None, units=None) -> None:
    """Print ``metrics`` as a table and, if ``output`` is given, write them there as JSON."""
    print(format_table(metrics, title, units))
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_text(path, json.dumps(metrics, indent=2))
