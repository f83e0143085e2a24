"""Lightning task for conformer models (ReBind): distance-matrix L1 loss, D-MAE / D-RMSE / C-RMSD.

The loss averages the L1 distance-matrix errors of the intermediate and the final conformation
(ReBind Sec. 3.4). Validation reports D-MAE (``val/loss``, which picks the best checkpoint, as
the paper's ``metric_for_best_model=mae``) and D-RMSE from exact sums; the test adds C-RMSD of
the raw prediction (as the papers) and after mirror-image correction (``c_rmsd_stereo``,
:mod:`molfold.conformers.stereo`).
Optimiser as the paper: AdamW, betas (0.9, 0.99), a linear decay after a linear warm-up over
``warmup_fraction`` of all steps; gradient clipping is a trainer setting.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from molfold.conformers.metrics import distance_errors, distance_l1_loss, metrics_from_sums
from molfold.models.rebind import INTERMEDIATE_POS
from molfold.models.registry import conformer_payload


class ConformerTask(L.LightningModule):
    """Train a conformer model on ground-state coordinates.

    Parameters
    ----------
    model : maps a batch of 2D graphs to ``pos`` and ``pos_intermediate`` [N, 3]
    optim : ``lr``, ``weight_decay``, ``betas``, ``warmup_fraction``
    compute_c_rmsd : also compute C-RMSD (RDKit, heavy atoms) on the test split
    training_data : stored in checkpoints (``data`` name, ``elements`` seen in training)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optim: dict[str, Any],
        compute_c_rmsd: bool = True,
        training_data: dict | None = None,
    ):
        super().__init__()
        self.training_data = training_data or {}
        self.model = model
        self.optim = dict(optim)
        self.compute_c_rmsd = compute_c_rmsd
        self.sums: torch.Tensor | None = None
        self.c_rmsd: list[tuple[float, float]] = []  # (as predicted, mirror-corrected)
        self.test_metrics: dict[str, float] = {}

    def forward(self, batch) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        out = self(batch)
        target = batch.pos.to(out["pos"])
        final = distance_l1_loss(out["pos"], target, batch.batch)
        intermediate = distance_l1_loss(out[INTERMEDIATE_POS], target, batch.batch)
        loss = 0.5 * (final + intermediate)
        size = batch.num_graphs
        self.log("train/loss", loss, batch_size=size, prog_bar=True, on_epoch=True)
        self.log("train/d_mae_intermediate", intermediate, batch_size=size)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=float(self.optim["lr"]),
            betas=tuple(self.optim.get("betas", (0.9, 0.99))),
            weight_decay=float(self.optim.get("weight_decay", 0.0)),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(float(self.optim.get("warmup_fraction", 0.1)) * total))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # --- evaluation -----------------------------------------------------------------------
    def _accumulate(self, batch) -> dict[str, torch.Tensor]:
        out = self(batch)
        sums = distance_errors(out["pos"], batch.pos, batch.batch)
        self.sums = sums if self.sums is None else self.sums + sums
        return out

    def _metrics(self, stage: str) -> dict[str, float]:
        sums = self.sums if self.sums is not None else torch.zeros(3, dtype=torch.float64)
        sums = sums.to(self.device)
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        metrics = metrics_from_sums(sums)
        self.sums = None
        self.log(f"{stage}/loss", metrics["d_mae"], prog_bar=True)
        self.log(f"{stage}/d_rmse", metrics["d_rmse"])
        return metrics

    def validation_step(self, batch, batch_index: int) -> None:
        self._accumulate(batch)

    def on_validation_epoch_end(self) -> None:
        self._metrics("val")

    def on_test_epoch_start(self) -> None:
        self.sums, self.c_rmsd = None, []

    def test_step(self, batch, batch_index: int) -> None:
        out = self._accumulate(batch)
        if not self.compute_c_rmsd:
            return
        from molfold.conformers.metrics import c_rmsd_pair

        for m, graph in enumerate(batch.to_data_list()):
            predicted = out["pos"][batch.batch == m].detach().cpu().double()
            self.c_rmsd.append(c_rmsd_pair(graph, predicted))

    def on_test_epoch_end(self) -> None:
        metrics = self._metrics("test")
        values = torch.tensor(self.c_rmsd, dtype=torch.float64, device=self.device).reshape(-1, 2)
        stats = torch.cat([values.sum(0), values.new_tensor([float(len(values))])])
        if self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        if stats[2] > 0:
            metrics["c_rmsd"] = float(stats[0] / stats[2])
            metrics["c_rmsd_stereo"] = float(stats[1] / stats[2])
        self.test_metrics = metrics

    # --- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["molfold"] = conformer_payload(self.model, self.training_data)
