"""``molfold train`` and ``molfold eval``: one :func:`train` and one :func:`evaluate` for every
model kind.

The config (a plain dict, composed by :mod:`molfold.cli`) names a model (``model.name``, looked
up in :mod:`molfold.models.registry`), a task (``task.name``, :mod:`molfold.tasks`), a data
source (``data.format``, :mod:`molfold.data.sources`), an optimizer and a Lightning trainer;
each section is checked against its schema before anything runs. A run directory holds::

    config.yaml               the composed config, as run
    versions.json             molfold, torch, e3nn, lightning, torch-geometric versions
    split.npz                 train/val/test indices, with the data fingerprint they belong to
    statistics.json           training-set statistics the model was built with
    checkpoints/best.ckpt     lowest validation loss (EMA weights for inference)
    checkpoints/last.ckpt     latest epoch end or every checkpoint_every_n_steps steps (resume)
    metrics.csv  tensorboard/ per-epoch metrics
    test_metrics.json         test-set metrics of best.ckpt, also printed as a table
    parity.png, learning_curve.png
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from molfold.config import parse
from molfold.errors import ConfigError
from molfold.io import atomic_write, remove_stale_temporaries

RUN_DIR_VARIABLE = "MOLFOLD_RUN_DIR"
"""Set by the primary process, so that the processes Lightning launches for DDP use its run dir."""
SECTIONS = ("model", "data", "task", "optim", "trainer")


@dataclass(frozen=True)
class RunConfig:
    """The top-level keys of ``molfold train`` (the sections are checked by their owners)."""

    run_dir: str | None = None
    resume: bool = False
    seed: int = 0
    dtype: str = "float32"
    checkpoint_every_n_steps: int | None = 200
    ema_decay: float | None = 0.99
    compile: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.checkpoint_every_n_steps is not None and self.checkpoint_every_n_steps < 1:
            raise ValueError(
                "checkpoint_every_n_steps must be >= 1 or null, got "
                f"{self.checkpoint_every_n_steps}"
            )
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or null, got {self.ema_decay}")


def resolve_statistics(hparams: dict[str, Any], statistics: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` with every ``${statistics:NAME}`` replaced by the training-set value."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    def value(name: str) -> Any:
        if name not in statistics:
            raise ConfigError(
                f"${{statistics:{name}}}: no such statistic; there are {', '.join(statistics)}"
            )
        return statistics[name]

    OmegaConf.register_new_resolver("statistics", value, replace=True)
    try:
        return OmegaConf.to_container(OmegaConf.create(hparams), resolve=True)
    except OmegaConfBaseException as error:
        cause = error.__cause__ if isinstance(error.__cause__, ConfigError) else error
        raise ConfigError(f"model: {cause}") from None


def _versions() -> dict[str, str]:
    import e3nn
    import lightning
    import torch
    import torch_geometric

    from molfold._version import __version__

    return {
        "molfold": __version__,
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "lightning": lightning.__version__,
        "torch_geometric": torch_geometric.__version__,
    }


def _run_dir(run: RunConfig, model_name: str) -> Path:
    if run.run_dir:
        return Path(run.run_dir)
    if RUN_DIR_VARIABLE in os.environ:
        return Path(os.environ[RUN_DIR_VARIABLE])
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError("set run_dir=PATH when launching several processes (torchrun, SLURM)")
    return Path("runs") / f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(config: dict[str, Any], run: RunConfig) -> Path:
    """Create (or, with ``resume``, reopen) the run directory and write config and versions
    (primary process only); return the run directory."""
    from molfold.data.datamodule import is_primary_process

    run_dir = _run_dir(run, config["model"]["name"])
    last = run_dir / "checkpoints" / "last.ckpt"
    if is_primary_process():
        if last.exists() and not run.resume:
            raise ConfigError(
                f"{run_dir} already holds a run; continue it with resume=true or choose another "
                "run_dir"
            )
        if run.resume and not last.exists():
            raise ConfigError(f"resume=true, but {last} does not exist")
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir / "checkpoints")  # left by a kill during a write
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)
        atomic_write(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        atomic_write(run_dir / "versions.json", json.dumps(_versions(), indent=2))
    return run_dir


def build_trainer(config: dict[str, Any], run: RunConfig, run_dir: Path):
    """The Lightning trainer of a training run: CSV and TensorBoard logs, best/last checkpoints
    (atomic, mid-epoch every ``checkpoint_every_n_steps``)."""
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
    if run.checkpoint_every_n_steps:  # last.ckpt mid-epoch too; both callbacks write that file
        callbacks += [
            StepCheckpoint(run_dir / "checkpoints", run.checkpoint_every_n_steps),
            ResumedEpochSchedulers(),
        ]
    options = dict(config.get("trainer") or {})
    if run.dtype == "float64":
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


def _parse_sections(config: dict[str, Any]):
    """Check every key of a ``molfold train`` config; return the parsed pieces."""
    from molfold.data.datamodule import check_fields, parse_data_config
    from molfold.models.registry import model_entry
    from molfold.tasks.base import task_class
    from molfold.tasks.optim import OptimConfig

    unknown = sorted(set(config) - set(SECTIONS) - set(RunConfig.__dataclass_fields__))
    if unknown:
        valid = sorted([*SECTIONS, *RunConfig.__dataclass_fields__])
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    run = parse(RunConfig, {k: v for k, v in config.items() if k not in SECTIONS}, "")
    model = dict(config.get("model") or {})
    task_values = dict(config.get("task") or {})
    task = task_class(task_values.get("name"))
    try:
        entry = model_entry(model.pop("name", None), task.model_kind)
    except ConfigError as error:
        raise ConfigError(f"{error}; task={task.name} trains {task.model_kind} models") from None
    settings = parse(task.settings_class, task_values, "task")
    optim = OptimConfig.from_dict(config.get("optim"))
    parse_data_config(config.get("data") or {})
    check_fields(task.required_fields, config.get("data") or {}, task.name)
    return run, entry, model, task, settings, optim


def data_transforms(task_cls, entry, hparams: dict[str, Any]) -> list:
    """What the task and then the model need attached to each structure."""
    return task_cls.transforms(hparams) + entry.transforms(hparams)


def train(config: dict[str, Any]) -> dict[str, float]:
    """Train, test the best checkpoint, write figures and metrics; return the test metrics."""
    import lightning as L

    from molfold.data.datamodule import DataModule
    from molfold.models.registry import build_model
    from molfold.train.plots import learning_curves

    run, entry, hparams, task_cls, settings, optim = _parse_sections(config)
    run_dir = prepare_run_dir(config, run)
    L.seed_everything(run.seed, workers=True, verbose=False)
    transforms = data_transforms(task_cls, entry, hparams)
    datamodule = DataModule(config["data"], task_cls, settings, transforms, run_dir, run.seed)
    datamodule.setup()
    statistics = datamodule.statistics
    hparams = resolve_statistics(hparams, statistics)
    model = build_model(entry.name, hparams, statistics, run.dtype, entry.kind)
    task = task_cls(model, settings, optim, run.ema_decay)
    if run.compile:
        task.compile_model()
    trainer = build_trainer(config, run, run_dir)
    items = task_cls.items
    last = run_dir / "checkpoints" / "last.ckpt"
    if trainer.is_global_zero:
        sizes = " / ".join(f"{len(datamodule.split[k])} {k}" for k in ("train", "val", "test"))
        source = config["data"].get("path") or config["data"].get("format")
        print(f"molfold train: {sizes} {items} from {source}")
        print(f"run directory: {run_dir}")
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if run.resume else None)
    best = trainer.checkpoint_callback.best_model_path or str(last)
    trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics = task.test_metrics
    if trainer.is_global_zero:
        title = f"Test metrics ({len(datamodule.split['test'])} {items}, {Path(best).name})"
        report_metrics(metrics, title, run_dir / "test_metrics.json", task.units)
        task.figures(task.gathered_test_predictions(), run_dir)
        if (run_dir / "metrics.csv").exists():
            learning_curves(
                run_dir / "metrics.csv", run_dir / "learning_curve.png", task_cls.curves
            )
    return metrics


@dataclass(frozen=True)
class EvalConfig:
    """The keys of ``molfold eval`` besides ``data``."""

    ckpt: str
    split: str = "auto"
    output: str | None = None
    device: str = "cpu"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def evaluation_indices(
    settings: EvalConfig, data_config: dict[str, Any], num: int
) -> tuple[np.ndarray, str]:
    """Indices of the structures ``molfold eval`` evaluates, and their description.

    ``split``: ``all`` every structure; ``test`` the test split this data config draws (its sizes
    and ``split_seed``); a path the test indices of that ``split.npz``; ``auto`` the test split of
    the checkpoint's run if its ``split.npz`` is there, else all.
    """
    from molfold.data.splits import load_split, random_split

    if settings.split == "all":
        return np.arange(num), "all structures"
    if settings.split == "test":
        c = data_config
        if c.get("split_by") is not None:
            raise ConfigError(
                "split=test cannot redraw a split by data.split_by: use split=auto or the run's "
                "split.npz"
            )
        split = random_split(
            num,
            c.get("n_train"),
            c.get("n_val"),
            c.get("n_test"),
            c.get("split_seed", 0),
            c.get("split_rng", "torch"),
        )
        return split["test"], f"test split of split_seed={c.get('split_seed', 0)}"
    path = Path(settings.split)
    if settings.split == "auto":
        path = Path(settings.ckpt).resolve().parent.parent / "split.npz"
        if not path.exists():
            return np.arange(num), "all structures"
    elif not path.is_file():
        raise ConfigError(f"split={settings.split}: use auto, all, test or a split.npz file")
    return load_split(path, num)[0]["test"], f"test split of {path}"


def evaluate(config: dict[str, Any]) -> dict[str, float]:
    """Metrics of a checkpoint on a dataset, printed as a table and optionally written as JSON."""
    import lightning as L

    from molfold.data.datamodule import check_fields, load_structures, select
    from molfold.data.loaders import make_loader
    from molfold.models.checkpoint import load_model, torch_device
    from molfold.models.registry import model_entry
    from molfold.tasks.base import task_for_kind

    settings = parse(EvalConfig, {k: v for k, v in config.items() if k != "data"}, "")
    device = torch_device(settings.device)
    model = load_model(settings.ckpt, device)
    info = model.model_info
    task_cls = task_for_kind(info["kind"])
    config = {**config, "data": dict(config["data"])}
    if info["kind"] == "property" and "target" in config["data"] and not config["data"]["target"]:
        config["data"]["target"] = list(model.names)  # data=qm9: the targets the model learnt
    check_fields(task_cls.required_fields, config["data"], task_cls.name)
    entry = model_entry(info["name"], info["kind"])
    transforms = data_transforms(task_cls, entry, info["hparams"])
    structures = load_structures(config["data"], transforms)
    indices, description = evaluation_indices(settings, config["data"], len(structures))
    loader = make_loader(select(structures, indices), "test", settings.batch_size)
    task = task_cls(model, task_cls.settings_class())
    accelerator = "gpu" if device.type == "cuda" else device.type
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner for an eval
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=[device.index or 0] if device.type == "cuda" else 1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        inference_mode=False,
        precision="64-true" if info["dtype"] == "float64" else "32-true",
    )
    trainer.test(task, dataloaders=loader, verbose=False)
    source = config["data"].get("path") or config["data"].get("format")
    title = (
        f"{Path(settings.ckpt).name} on {source} ({len(indices)} {task_cls.items}, {description})"
    )
    report_metrics(task.test_metrics, title, settings.output, task.units)
    return task.test_metrics


def report_metrics(
    metrics: dict[str, float], title: str, output: str | Path | None, units: dict[str, str]
) -> None:
    """Print ``metrics`` as a table and, if ``output`` is given, write them there as JSON."""
    from molfold.tasks.metrics import format_table

    print(format_table(metrics, title, units))
    if output:
        atomic_write(output, json.dumps(metrics, indent=2))
