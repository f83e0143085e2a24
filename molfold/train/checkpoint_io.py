"""Lightning checkpoint I/O that writes atomically: a kill never leaves a truncated checkpoint."""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from molfold.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, then rename over the target; load without
    unpickling code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(path, lambda file: torch.save(checkpoint, file))

    def load_checkpoint(
        self, path, map_location=None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Load with ``weights_only=True``: a checkpoint holds tensors and plain values only."""
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
