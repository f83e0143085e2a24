"""Batches for training and evaluation, sharded over DDP ranks without duplicates, resumable
mid-epoch.

Training uses one seeded permutation per epoch, of which rank r takes every world_size-th
structure (so a run on k processes with batch b sees the same global batches as one process with
batch k*b); validation and test structures are dealt out the same way with no padding (Lightning's
DistributedSampler would pad with duplicates), and metrics are summed across ranks, so no
structure counts twice. The training loader is resumable mid-epoch (:class:`ResumableDataLoader`):
a run restarted from a checkpoint taken inside an epoch trains on exactly the batches of that
epoch not yet trained on, in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader


class EpochPermutationSampler(Sampler[int]):
    """Rank ``rank``'s share of a seeded permutation of ``size`` items, new each epoch.

    With ``groups`` ([size], one label per item, ``data.batch_by``) the permutation keeps each
    group's items together: the groups in a random order, each group's items in a random order
    after one another, so that a batch holds several structures of one group (a loss on energies
    relative within a molecule needs them; :class:`~molfold.tasks.potential.PotentialSettings`).

    The permutation depends only on ``seed`` and the epoch (set by Lightning through
    :meth:`set_epoch`), so a resumed run or a run on another number of processes sees the same
    global order. The last incomplete round is dropped only when ``size`` is not a multiple of
    ``world_size`` (at most world_size - 1 structures per epoch). Iteration begins at item
    ``start`` of the rank's share (0 unless :class:`ResumableDataLoader` resumes an epoch);
    ``len`` is always the whole share.
    """

    def __init__(
        self,
        size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        groups: np.ndarray | None = None,
    ) -> None:
        self.size, self.rank, self.world_size, self.seed = size, rank, world_size, seed
        self.epoch = 0
        self.start = 0
        self.groups = None
        if groups is not None:
            _, self.groups = np.unique(np.asarray(groups), return_inverse=True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        if self.groups is not None:  # stable sort by the groups' random ranks keeps them together
            rank_of_group = torch.randperm(int(self.groups.max()) + 1, generator=generator)
            keys = rank_of_group[torch.from_numpy(self.groups)[order]]
            order = order[torch.sort(keys, stable=True).indices]
        usable = self.size - self.size % self.world_size
        return iter(order[self.rank : usable : self.world_size][self.start :].tolist())

    def __len__(self) -> int:
        return self.size // self.world_size


class ShardSampler(Sampler[int]):
    """Items rank, rank + world_size, ...: every item on exactly one rank, no padding."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableDataLoader(DataLoader):
    """Training batches that a checkpoint taken mid-epoch can resume, batch for batch.

    Lightning treats a loader with ``state_dict``/``load_state_dict`` as stateful: it stores
    :meth:`state_dict` in every checkpoint and, when it restarts from one taken inside an epoch,
    calls :meth:`load_state_dict` before the epoch goes on. The state is the epoch and the number
    of batches handed out in it. Lightning asks for a batch only when it trains on it (it
    prefetches nothing from a loader with a length), so at a checkpoint written after step k of
    an epoch that number is k; the next iteration of the same epoch then begins with batch k + 1
    of the same permutation, skipped in the sampler, so nothing is loaded twice. Iteration
    starts at the first request for a batch, after Lightning has called ``set_epoch``.

    Parameters
    ----------
    dataset : the training structures
    batch_size : structures per batch
    sampler : the epoch's order; its ``start`` is set here
    **kwargs : further :class:`torch_geometric.loader.DataLoader` arguments (``num_workers``)
    """

    def __init__(
        self, dataset: list[Data], batch_size: int, sampler: EpochPermutationSampler, **kwargs
    ) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.epoch, self.batches_yielded = 0, 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches) to skip once

    def __iter__(self) -> Iterator[Data]:
        return self._batches()

    def _batches(self) -> Iterator[Data]:
        sampler = self.sampler
        skip = 0
        if self._resume_at is not None and self._resume_at[0] == sampler.epoch:
            skip = self._resume_at[1]
        self._resume_at = None
        sampler.start = skip * self.batch_size
        self.epoch, self.batches_yielded = sampler.epoch, skip
        for batch in super().__iter__():
            self.batches_yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches_yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Skip ``state["batches"]`` batches when epoch ``state["epoch"]`` is iterated next."""
        self._resume_at = (int(state["epoch"]), int(state["batches"]))


def make_loader(
    structures: list[Data],
    name: str,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    trainer: L.Trainer | None = None,
    groups: np.ndarray | None = None,
) -> DataLoader:
    """Batches of ``batch_size`` structures of one split (``train``, ``val`` or ``test``) for
    this process.

    Training batches follow :class:`EpochPermutationSampler` (``seed``) and resume mid-epoch
    (:class:`ResumableDataLoader`); validation and test batches follow :class:`ShardSampler`.
    ``trainer`` (None outside Lightning) gives the rank and world size; ``groups`` (one label
    per structure) keeps each group's training structures together (``data.batch_by``).
    """
    rank, world_size = 0, 1
    if trainer is not None:
        rank, world_size = trainer.global_rank, trainer.world_size
    if name == "train":
        sampler = EpochPermutationSampler(len(structures), rank, world_size, seed, groups)
        return ResumableDataLoader(structures, batch_size, sampler, num_workers=num_workers)
    sampler = ShardSampler(len(structures), rank, world_size)
    return DataLoader(structures, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
