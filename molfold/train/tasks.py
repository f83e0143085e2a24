"""Lightning tasks: the only place where models meet the training loop.

:class:`PotentialTask` trains a :class:`~molfold.models.potential.Potential` on energies and
forces (and stress), with EMA weights for validation, testing and export, and epoch metrics in
meV units computed from exact sums (so they reduce correctly across processes).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from molfold.data import graph as G
from molfold.models.potential import Potential
from molfold.models.registry import checkpoint_payload
from molfold.train.ema import ExponentialMovingAverage
from molfold.train.losses import LossWeights, potential_loss
from molfold.train.metrics import ErrorAccumulator


class PotentialTask(L.LightningModule):
    """Energy and force training of a potential.

    Parameters
    ----------
    potential : the model, already scaled and shifted by training-set statistics
    loss_weights : weights of the per-atom energy, force and stress terms
    optim : ``lr``, ``weight_decay``, ``scheduler`` (``plateau`` | ``cosine`` | ``none``) and its
        ``factor``, ``patience``, ``min_lr``
    ema_decay : decay of the weight average, or None for none
    statistics : training-set statistics, stored in checkpoints for the record
    """

    def __init__(
        self,
        potential: Potential,
        loss_weights: LossWeights,
        optim: dict[str, Any],
        ema_decay: float | None = 0.99,
        statistics: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.potential = potential
        self.loss_weights = loss_weights
        self.optim = dict(optim)
        self.statistics = statistics or {}
        self.ema = ExponentialMovingAverage(potential, ema_decay) if ema_decay else None
        self.errors = ErrorAccumulator()
        self.test_predictions: dict[str, list[torch.Tensor]] = {}

    def forward(self, batch) -> dict[str, torch.Tensor]:
        return self.potential(
            batch,
            compute_forces=True,
            compute_stress=self.loss_weights.stress > 0 and G.STRESS in batch,
        )

    # --- training -------------------------------------------------------------------------
    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        loss, terms = potential_loss(self(batch), batch, self.loss_weights)
        self.log("train/loss", loss, batch_size=batch.num_graphs, prog_bar=True, on_epoch=True)
        for name, value in terms.items():
            self.log(f"train/{name}_mse", value, batch_size=batch.num_graphs)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """Step, then update the EMA: inside the step, so that a checkpoint written by a callback
        at the end of this batch already holds the updated average (callbacks' batch-end hooks
        run before the module's own)."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.potential.parameters(),
            lr=float(self.optim["lr"]),
            weight_decay=float(self.optim.get("weight_decay", 0.0)),
        )
        kind = self.optim.get("scheduler", "plateau")
        if kind == "none":
            return optimizer
        if kind == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                factor=float(self.optim.get("factor", 0.5)),
                patience=int(self.optim.get("patience", 10)),
                min_lr=float(self.optim.get("min_lr", 1e-6)),
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
            }
        if kind == "cosine":
            steps = self.trainer.estimated_stepping_batches
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, int(steps)), eta_min=float(self.optim.get("min_lr", 1e-6))
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
        raise ValueError(f"unknown scheduler {kind!r}; use plateau, cosine or none")

    # --- evaluation (EMA weights) ---------------------------------------------------------
    def _evaluation_step(self, batch) -> dict[str, torch.Tensor]:
        with torch.enable_grad():
            prediction = self(batch)
        self.errors.add_batch(prediction, batch)
        return prediction

    def _evaluation_metrics(self, stage: str) -> dict[str, float]:
        reduce = None
        if self.trainer.world_size > 1:
            reduce = lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
        metrics = self.errors.compute(reduce)
        metrics["loss"] = self.loss_weights.combine(self.errors.mean_squares)
        self.errors.reset()
        for name, value in metrics.items():
            self.log(
                f"{stage}/{name}", value, prog_bar=name in ("loss", "forces_mae"), sync_dist=False
            )
        return metrics

    def on_validation_epoch_start(self) -> None:
        self.errors.reset()
        if self.ema is not None:
            self.ema.swap()

    def validation_step(self, batch, batch_index: int) -> None:
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._evaluation_metrics("val")
        if self.ema is not None:
            self.ema.swap()

    def on_test_epoch_start(self) -> None:
        self.errors.reset()
        self.test_predictions = {
            "energy": [],
            "energy_ref": [],
            "forces": [],
            "forces_ref": [],
            "natoms": [],
        }
        if self.ema is not None:
            self.ema.swap()

    def test_step(self, batch, batch_index: int) -> None:
        prediction = self._evaluation_step(batch)
        self.test_predictions["energy"].append(prediction[G.ENERGY].detach().cpu())
        self.test_predictions["energy_ref"].append(batch[G.ENERGY].reshape(-1).cpu())
        self.test_predictions["forces"].append(prediction[G.FORCES].detach().cpu())
        self.test_predictions["forces_ref"].append(batch[G.FORCES].cpu())
        self.test_predictions["natoms"].append(torch.bincount(batch[G.BATCH]).cpu())

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._evaluation_metrics("test")
        if self.trainer.world_size > 1:  # every rank tested its own shard: gather them all
            shards = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shards, self.test_predictions)
            self.test_predictions = {
                k: [t for shard in shards for t in shard[k]] for k in shards[0]
            }
        if self.ema is not None:
            self.ema.swap()

    # --- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the exportable model (EMA weights) and the EMA state for resuming."""
        payload = checkpoint_payload(self.potential, self.statistics)
        if self.ema is not None:
            payload["state_dict"] = {k: v.cpu() for k, v in self.ema.averaged_state_dict().items()}
            checkpoint["ema"] = self.ema.state_dict()
        checkpoint["molfold"] = payload

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
