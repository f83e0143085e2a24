"""The task base class: what training every kind of model shares.

A task is the Lightning module around a model (:mod:`molfold.models.registry`). This class owns
the training loop's mechanics; a subclass adds only its loss and its metrics:

* the optimizer and learning-rate schedule (:mod:`molfold.tasks.optim`);
* the exponential moving average of the weights (:mod:`molfold.tasks.ema`), which is what gets
  validated, tested and exported, updated inside the optimizer step so that a checkpoint written
  at the end of a batch already holds that step's average;
* metrics as exact sums over the whole split (:class:`~molfold.tasks.metrics.ErrorSums`),
  reduced across DDP ranks by summation, so k processes report what one would;
* test predictions gathered from every rank, for the parity plot;
* the checkpoint entry that :func:`molfold.models.checkpoint.load_model` reads.

Subclasses set :attr:`model_kind` and :attr:`required_fields`, and implement :meth:`loss`,
:meth:`accumulate` and :meth:`metrics` (and, for figures, :meth:`test_outputs` and
:meth:`figures`). Their settings come from the ``task`` config section as the dataclass named by
:attr:`settings_class`.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from molfold.data.statistics import species_of
from molfold.data.transforms import RadiusGraph
from molfold.errors import ConfigError, DataError
from molfold.models.checkpoint import checkpoint_payload
from molfold.tasks.ema import ExponentialMovingAverage
from molfold.tasks.metrics import ErrorSums
from molfold.tasks.optim import OptimConfig, configure_optimizer

LEGACY_PREFIX = "potential."


class Task(L.LightningModule):
    """Training, validation and test of ``model``.

    Parameters
    ----------
    model : a model built by :func:`~molfold.models.registry.build_model` of kind
        :attr:`model_kind`
    settings : the parsed ``task`` section (an instance of :attr:`settings_class`)
    optim : the parsed ``optim`` section
    ema_decay : decay of the weight average, or None for none
    """

    name: ClassVar[str]
    model_kind: ClassVar[str]
    settings_class: ClassVar[type]
    required_fields: ClassVar[tuple[str, ...]] = ()
    """Graph fields every structure must carry (checked when the data is loaded)."""
    items: ClassVar[str] = "structures"
    """What the split's items are called in messages."""
    units: ClassVar[dict[str, str]] = {}
    """Metric name -> unit, for tables."""
    curves: ClassVar[tuple] = ((), (), ("", ""))
    """Learning-curve panels: (left metric keys, right metric keys, (left label, right label))."""
    gradients_in_evaluation: ClassVar[bool] = False
    """Whether validation and test need autograd (forces are derivatives)."""

    def __init__(
        self,
        model: nn.Module,
        settings: Any,
        optim: OptimConfig | None = None,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        self.optim = optim or OptimConfig()
        self.ema = ExponentialMovingAverage(model, ema_decay) if ema_decay else None
        self.errors = ErrorSums()
        self.test_predictions: dict[str, list[torch.Tensor]] = {}
        self.test_metrics: dict[str, float] = {}

    # --- what a subclass supplies -----------------------------------------------------------
    @classmethod
    def fit_statistics(
        cls, graphs: Sequence, settings: Any = None, targets: Sequence[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        """Training-set statistics the model is built with (stored in its checkpoint);
        ``targets``: name and unit of each column of the structures' ``target`` field."""
        return {}

    @classmethod
    def check_statistics(cls, statistics: dict[str, Any], graphs: list) -> None:
        """Raise DataError if ``graphs`` (the whole dataset) cannot be used with ``statistics``."""

    @classmethod
    def transforms(cls, model_hparams: dict[str, Any]) -> list:
        """What the model needs attached to each structure (:mod:`molfold.data.transforms`)."""
        return []

    def loss(self, outputs: dict, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of a batch and its named terms."""
        raise NotImplementedError

    def accumulate(self, outputs: dict, batch, stage: str) -> None:
        """Add the batch's errors to :attr:`errors` (``stage``: ``val`` or ``test``)."""
        raise NotImplementedError

    def metrics(self, sums: dict[str, tuple[float, float, float]]) -> dict[str, float]:
        """Metrics from the reduced sums; must include ``loss`` (it picks the best checkpoint)."""
        raise NotImplementedError

    def test_outputs(self, outputs: dict, batch) -> dict[str, torch.Tensor]:
        """Per-batch tensors kept for :meth:`figures` (CPU); none by default."""
        return {}

    def figures(self, predictions: dict[str, torch.Tensor], run_dir: Path) -> None:
        """Write test-set figures (parity plots) from the gathered :meth:`test_outputs`."""

    def compile_model(self) -> None:
        """Train through a compiled model (``compile=true``); only potentials can, for now."""
        raise ConfigError(
            f"compile=true compiles potentials for training (Allegro); task={self.name} "
            "trains eagerly"
        )

    # --- training ---------------------------------------------------------------------------
    def forward(self, batch) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        loss, terms = self.loss(self(batch), batch)
        size = batch.num_graphs
        self.log("train/loss", loss, batch_size=size, prog_bar=True, on_epoch=True)
        if self._writes_step_logs():  # step values reach the logger only then; log() is slow
            for name, value in terms.items():
                self.log(f"train/{name}", value, batch_size=size)
        return loss

    def _writes_step_logs(self) -> bool:
        """Whether the logger records this step's values (every ``log_every_n_steps``)."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def optimizer_step(self, *args, **kwargs) -> None:
        """Step, then update the EMA: callbacks' batch-end hooks (the step checkpoint) run before
        the module's own, so the update must happen here to be in that checkpoint."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    def configure_optimizers(self):
        return configure_optimizer(self.model.parameters(), self.optim, self._total_steps)

    def _total_steps(self) -> int:
        """Optimizer steps of the whole run, from the split size, batch size and epochs.

        Not Lightning's ``estimated_stepping_batches``: asking for it here builds the training
        loader before a checkpoint's loader state is restored, so a run resumed mid-epoch
        would start that epoch over (this made cosine schedules resume inexactly).
        """
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        batches = trainer.datamodule.batches_per_epoch(trainer.world_size)
        return math.ceil(batches / trainer.accumulate_grad_batches) * max(1, trainer.max_epochs)

    # --- evaluation (EMA weights) -----------------------------------------------------------
    def _start_evaluation(self) -> None:
        self.errors.reset()
        if self.ema is not None:
            self.ema.swap()

    def _evaluate_batch(self, batch, stage: str) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(self.gradients_in_evaluation):
            outputs = self(batch)
        self.accumulate(outputs, batch, stage)
        return outputs

    def _finish_evaluation(self, stage: str) -> dict[str, float]:
        reduce = None
        if self.trainer.world_size > 1:
            device = self.device

            def reduce(tensor: torch.Tensor) -> torch.Tensor:
                return self.trainer.strategy.reduce(tensor.to(device), reduce_op="sum")

        metrics = self.metrics(self.errors.reduced(reduce))
        self.errors.reset()
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", sync_dist=False)
        if self.ema is not None:
            self.ema.swap()
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch, batch_index: int) -> None:
        self._evaluate_batch(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()
        self.test_predictions = {}

    def test_step(self, batch, batch_index: int) -> None:
        outputs = self._evaluate_batch(batch, "test")
        for name, value in self.test_outputs(outputs, batch).items():
            self.test_predictions.setdefault(name, []).append(value.detach().cpu())

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._finish_evaluation("test")
        if self.trainer.world_size > 1:  # every rank tested its own shard: gather them all
            shards = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shards, self.test_predictions)
            names = sorted({name for shard in shards for name in shard})
            self.test_predictions = {
                name: [t for shard in shards for t in shard.get(name, [])] for name in names
            }

    def gathered_test_predictions(self) -> dict[str, torch.Tensor]:
        """The test outputs of every rank, concatenated."""
        return {name: torch.cat(parts) for name, parts in self.test_predictions.items() if parts}

    # --- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the exportable model (with the EMA weights) and the EMA state for resuming."""
        weights = None
        if self.ema is not None:
            weights = self.ema.averaged_state_dict()
            checkpoint["ema"] = self.ema.state_dict()
        checkpoint["molfold"] = checkpoint_payload(self.model, weights)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the EMA; a run of molfold 0.1.0 named its potential ``potential``, not
        ``model``, so its checkpoints resume after renaming the keys."""
        state = checkpoint.get("state_dict", {})
        if any(key.startswith(LEGACY_PREFIX) for key in state):
            checkpoint["state_dict"] = {
                "model." + k.removeprefix(LEGACY_PREFIX) if k.startswith(LEGACY_PREFIX) else k: v
                for k, v in state.items()
            }
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])


class StructureTask(Task):
    """A task on 3D structures (potentials, property models): the radius graph at the model's
    ``r_max`` attached to each structure, and no element in validation or test that training
    did not have."""

    @classmethod
    def check_statistics(cls, statistics: dict[str, Any], graphs: Sequence) -> None:
        unknown = set(species_of(graphs)) - set(statistics["species"])
        if unknown:
            raise DataError(f"elements {sorted(unknown)} appear in val/test but not in training")

    @classmethod
    def transforms(cls, model_hparams: dict[str, Any]) -> list:
        return [RadiusGraph(float(model_hparams["r_max"]))]


def registered_tasks() -> dict[str, type[Task]]:
    """Every task class in :mod:`molfold.tasks` by its ``name``."""
    import molfold.tasks as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    found: dict[str, type[Task]] = {}
    pending = list(Task.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "name" in cls.__dict__:
            found[cls.name] = cls
    return found


def task_class(name: str | None) -> type[Task]:
    """The task registered as ``name``, or a ConfigError listing the tasks there are."""
    tasks = registered_tasks()
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(sorted(tasks))}")
    return tasks[name]


def task_for_kind(kind: str) -> type[Task]:
    """The task that trains and evaluates models of ``kind``."""
    for cls in registered_tasks().values():
        if cls.model_kind == kind:
            return cls
    raise ConfigError(f"no task evaluates models of kind {kind!r}")
