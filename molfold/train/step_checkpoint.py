"""Mid-epoch checkpoints: ``last.ckpt`` every N optimizer steps, and an exact resume from it.

The training loader resumes its epoch by itself
(:class:`molfold.data.datamodule.ResumableDataLoader`); these two callbacks cover the rest.

* :class:`StepCheckpoint` writes ``last.ckpt`` (and nothing else) after every N-th step, next to
  the best-model :class:`~lightning.pytorch.callbacks.ModelCheckpoint`, which also writes
  ``last.ckpt`` after each validation: one file, always the latest state.
* :class:`ResumedEpochSchedulers` lets the epoch-interval learning-rate schedulers step at the
  end of an epoch resumed mid-way, which Lightning skips (``FitLoop.on_advance_end`` steps them
  only when not restarting, because a plateau scheduler's metric is not in the checkpoint; after a
  mid-epoch resume the epoch's validation has run again, so the metric is there).
"""

from __future__ import annotations

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` after every ``every_n_train_steps``-th optimizer step.

    The last step of an epoch is skipped: the epoch-end checkpoint follows right after
    validation, whereas a restart from a checkpoint taken between the last step and validation
    would skip that epoch's validation (Lightning counts the epoch as done). Nothing is written
    when training ends (``ModelCheckpoint.on_train_end`` would write ``last.ckpt`` again if this
    callback has not saved since the run started).
    """

    def __init__(self, dirpath, every_n_train_steps: int) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer, pl_module) -> None:
        pass


class ResumedEpochSchedulers(Callback):
    """Step the epoch-interval schedulers at the end of an epoch resumed mid-way, as an
    uninterrupted run does, once every plateau scheduler's metric has been logged in this run."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        loop = trainer.fit_loop
        monitors = [c.monitor for c in trainer.lr_scheduler_configs if c.reduce_on_plateau]
        if loop.restarting and all(m in trainer.callback_metrics for m in monitors):
            loop.restarting = False  # read next by FitLoop.on_advance_end, to step the schedulers
