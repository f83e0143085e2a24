"""Lightning DataModule for structures with energies and forces: load, split, batch, statistics.

Splits follow the MD17 tradition: ``n_train`` and ``n_val`` structures drawn at random from
``split_seed``, the rest (or ``n_test`` of them) for testing. The split is written to
``<run_dir>/split.npz`` (indices into the dataset file) and reused when that file exists, so a
resumed or re-evaluated run keeps its test set.

With several processes (DDP), only the primary process (global rank 0) draws the split and fits
the training-set statistics; it writes them to ``split.npz`` and ``statistics.json``, and every
other process waits for and reads those files, so all ranks train with the same numbers.
Batches are sharded without duplicates: training uses one seeded permutation per epoch, of which
rank r takes every world_size-th structure (so a run on k processes with batch b sees the same
global batches as one process with batch k*b); validation and test structures are dealt out the
same way with no padding, and metrics are summed across ranks, so no structure counts twice.

The training loader is resumable mid-epoch (:class:`ResumableDataLoader`): a run restarted from a
checkpoint taken inside an epoch trains on exactly the batches of that epoch not yet trained on,
in the same order.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molfold.data.statistics import fit_statistics, species_of
from molfold.errors import ConfigError, DataError, MissingFileError

SHIPPED_DATA = [
    Path(__file__).resolve().parents[2] / "data",  # source checkout
    Path(__file__).resolve().parents[1] / "shipped_data",  # installed wheel
]


def shipped_data(name: str) -> str:
    """Path of a dataset file or folder that ships with molfold (``data/`` of the repository)."""
    for folder in SHIPPED_DATA:
        if (folder / name).exists():
            return str(folder / name)
    raise DataError(f"no shipped dataset named {name!r} in {[str(f) for f in SHIPPED_DATA]}")


def load_structures(data_config: dict[str, Any], r_max: float) -> list[Data]:
    """Graphs of every structure in the file that ``data_config`` names, in file order."""
    fmt, path = data_config.get("format"), data_config.get("path")
    if fmt in ("qm9", "geom"):
        raise ConfigError(
            f"data={fmt} holds ground-state conformers without energies and forces: train a "
            "conformer model on it (model=rebind), or a potential on md17 or ase data"
        )
    if path is None:
        raise ConfigError("data.path is not set: give the dataset file, e.g. data.path=aspirin.npz")
    if not Path(path).exists():
        raise MissingFileError(f"data.path {path} does not exist")
    if fmt == "md17":
        from molfold.data.md17 import load_md17

        graphs = load_md17(path, r_max, max_frames=data_config.get("max_frames"))
    elif fmt == "ase":
        from molfold.data.ase_files import load_ase

        graphs = load_ase(
            path,
            r_max,
            energy_key=data_config.get("energy_key", "energy"),
            forces_key=data_config.get("forces_key", "forces"),
            stress_key=data_config.get("stress_key"),
            index=data_config.get("index", ":"),
            energy_unit=data_config.get("energy_unit", "eV"),
            length_unit=data_config.get("length_unit", "Angstrom"),
        )
        if data_config.get("max_frames"):
            graphs = graphs[: int(data_config["max_frames"])]
    else:
        raise ConfigError(f"unknown data.format {fmt!r}; use 'md17' or 'ase'")
    if not graphs:
        raise DataError(f"{path} holds no structures")
    return graphs


def random_split(
    num_structures: int, n_train: int, n_val: int, n_test: int | None, seed: int
) -> dict[str, np.ndarray]:
    """Disjoint random train/val/test indices; test is the rest when ``n_test`` is None."""
    if min(n_train, n_val, n_test if n_test is not None else 0) < 0 or n_train == 0:
        raise ConfigError(f"bad split sizes n_train={n_train}, n_val={n_val}, n_test={n_test}")
    n_test_eff = num_structures - n_train - n_val if n_test is None else n_test
    if n_train + n_val + max(n_test_eff, 0) > num_structures or n_test_eff < 0:
        raise ConfigError(
            f"split asks for {n_train} train + {n_val} val + {max(n_test_eff, 0)} test structures, "
            f"but the dataset has {num_structures}"
        )
    order = np.random.default_rng(seed).permutation(num_structures)
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val : n_train + n_val + n_test_eff]),
    }


def save_split(split: dict[str, np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **split)
    os.replace(tmp, path)


def load_split(path: Path, num_structures: int) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as file:
        split = {name: file[name] for name in ("train", "val", "test")}
    largest = max((int(v.max()) for v in split.values() if len(v)), default=-1)
    if largest >= num_structures:
        raise DataError(
            f"split {path} refers to structure {largest}, but the dataset has {num_structures}"
        )
    return split


def is_primary_process() -> bool:
    """True in the process of global rank 0 (or when not distributed).

    Read from the variables that Lightning's launcher, torchrun and SLURM set, so it works before
    the process group exists.
    """
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return int(os.environ[variable]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def wait_for(path: Path, timeout_s: float = 1800.0) -> None:
    """Block until the primary process has written ``path``."""
    start = time.monotonic()
    while not path.exists():
        if time.monotonic() - start > timeout_s:
            raise DataError(f"waited {timeout_s:.0f} s for rank 0 to write {path}")
        time.sleep(0.5)


def _write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class EpochPermutationSampler(Sampler[int]):
    """Rank ``rank``'s share of a seeded permutation of ``size`` items, new each epoch.

    The permutation depends only on ``seed`` and the epoch (set by Lightning through
    :meth:`set_epoch`), so a resumed run or a run on another number of processes sees the same
    global order. The last incomplete round is dropped only when ``size`` is not a multiple of
    ``world_size`` (at most world_size - 1 structures per epoch). Iteration begins at item
    ``start`` of the rank's share (0 unless :class:`ResumableDataLoader` resumes an epoch);
    ``len`` is always the whole share.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.size, self.rank, self.world_size, self.seed = size, rank, world_size, seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator)
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
    config: dict[str, Any],
    seed: int = 0,
    trainer: L.Trainer | None = None,
) -> DataLoader:
    """Batches of one split (``train``, ``val`` or ``test``) for this process.

    Training batches follow :class:`EpochPermutationSampler` (``seed``) and resume mid-epoch
    (:class:`ResumableDataLoader`); validation and test batches follow :class:`ShardSampler`.
    ``config`` is the ``data`` config group (``batch_size``, ``val_batch_size``,
    ``num_workers``); ``trainer`` (None outside Lightning) gives the rank and world size.
    """
    rank, world_size = 0, 1
    if trainer is not None:
        rank, world_size = trainer.global_rank, trainer.world_size
    num_workers = int(config.get("num_workers", 0))
    if name == "train":
        sampler = EpochPermutationSampler(len(structures), rank, world_size, seed)
        return ResumableDataLoader(
            structures, int(config["batch_size"]), sampler, num_workers=num_workers
        )
    sampler = ShardSampler(len(structures), rank, world_size)
    return DataLoader(
        structures,
        batch_size=int(config["val_batch_size"]),
        sampler=sampler,
        num_workers=num_workers,
    )


class SplitDataModule(L.LightningDataModule):
    """What every molfold datamodule shares: a list of graphs (``items``, set by ``setup``), its
    train/val/test ``split`` and resumable, sharded loaders over each part (:func:`make_loader`).

    Parameters
    ----------
    data_config : the ``data`` config group (batch sizes, workers, ...)
    run_dir : where ``split.npz`` (and anything else the subclass shares) is written or read
    seed : seed of the training order
    """

    def __init__(self, data_config: dict[str, Any], run_dir: str | Path, seed: int = 0) -> None:
        super().__init__()
        self.config = dict(data_config)
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.items: list[Data] | None = None
        self.split: dict[str, np.ndarray] = {}

    def subset(self, name: str) -> list[Data]:
        assert self.items is not None, "call setup() first"
        return [self.items[i] for i in self.split[name]]

    def _loader(self, name: str) -> DataLoader:
        return make_loader(self.subset(name), name, self.config, self.seed, self.trainer)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class AtomicDataModule(SplitDataModule):
    """Loads a dataset file, splits it, and serves batches of atomic graphs.

    Parameters
    ----------
    data_config : the ``data`` config group (format, path, split sizes, batch sizes, keys)
    r_max : cutoff radius of the model, Angstrom
    run_dir : where ``split.npz`` and ``statistics.json`` are written or read
    seed : seed of the training order
    """

    def __init__(
        self, data_config: dict[str, Any], r_max: float, run_dir: str | Path, seed: int = 0
    ) -> None:
        super().__init__(data_config, run_dir, seed)
        self.r_max = r_max
        self.statistics: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.items is not None:
            return
        self.items = load_structures(self.config, self.r_max)
        split_file = self.run_dir / "split.npz"
        statistics_file = self.run_dir / "statistics.json"
        primary = is_primary_process()
        if not split_file.exists() and primary:
            split = random_split(
                len(self.items),
                int(self.config["n_train"]),
                int(self.config["n_val"]),
                self.config.get("n_test"),
                int(self.config.get("split_seed", 0)),
            )
            save_split(split, split_file)
        if not primary:
            wait_for(statistics_file)
        self.split = load_split(split_file, len(self.items))
        if primary:
            self.statistics = fit_statistics(self.subset("train"))
            _write_json(self.statistics, statistics_file)
        else:
            self.statistics = json.loads(statistics_file.read_text())
        unknown = set(species_of(self.items)) - set(self.statistics["species"])
        if unknown:
            raise DataError(
                f"elements {sorted(unknown)} appear in val/test but not in training data"
            )
