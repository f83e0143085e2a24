"""The one DataModule: a source (:mod:`molfold.data.sources`), a split, statistics and loaders.

``DataModule(config, task, run_dir)``:

1. checks that the ``data`` config's source gives the fields the task trains on, then loads
   every structure, as graphs in molfold units, with what the task's model needs attached
   (the task's and the model's transforms: the radius graph of a potential, the 2D molecular
   graph and Laplacian eigenvectors of ReBind);
2. draws the split (:func:`molfold.data.splits.random_split`) or reuses the one saved in the run
   directory, refusing one drawn from other data or with other sizes;
3. fits the task's training-set statistics (:meth:`Task.fit_statistics`);
4. serves sharded, resumable batches (:mod:`molfold.data.loaders`).

With several processes (DDP), only the primary process (global rank 0) draws the split and fits
the statistics; it writes ``split.npz`` and ``statistics.json``, and the other ranks wait for
them. ``statistics.json`` names the split it was fitted on, so a rank never takes a file left by
an earlier run with another split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from tqdm import tqdm

from molfold.config import parse
from molfold.data.loaders import make_loader
from molfold.data.sources import source
from molfold.data.splits import (
    SPLIT_RNGS,
    data_fingerprint,
    random_split,
    save_split,
    saved_split,
    split_request,
)
from molfold.data.statistics import PROGRESS_MIN_STRUCTURES
from molfold.data.structure_cache import cache_file, read_structures, write_structures
from molfold.data.transform_pool import transform_structures
from molfold.errors import ConfigError, DataError, MissingFileError
from molfold.io import atomic_write

Size = int | float | None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The keys every ``data`` config has; a format's own keys are its source's options."""

    format: str
    name: str | None = None
    path: str | None = None
    max_structures: int | None = None
    """Read only the first N structures of the source (quick runs)."""
    n_train: Size = None
    n_val: Size = None
    n_test: Size = None
    split_seed: int = 0
    split_rng: str = "torch"
    """``torch`` or ``numpy`` (TorchMD-Net's and Equiformer's QM9 split):
    :func:`molfold.data.splits.permutation`."""
    split_by: str | None = None
    """A graph field whose values are split rather than the structures (OC20: ``sid``, the
    system, so no system's frames train and test at once): :func:`molfold.data.splits
    .random_split`."""
    batch_by: str | None = None
    """A graph field whose values stay together in training batches: each value's structures
    follow one another in the epoch's order (:class:`molfold.data.loaders
    .EpochPermutationSampler`), for a loss relative within a group (a molecule's conformers:
    ``task.energy_reference=group``)."""
    batch_size: int = 5
    val_batch_size: int = 50
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.val_batch_size < 1:
            raise ValueError(
                f"batch_size and val_batch_size must be >= 1, got {self.batch_size}, "
                f"{self.val_batch_size}"
            )
        if self.split_rng not in SPLIT_RNGS:
            raise ValueError(f"split_rng must be one of {', '.join(SPLIT_RNGS)}")
        if self.num_workers < 0 or (self.max_structures is not None and self.max_structures < 1):
            raise ValueError("num_workers must be >= 0 and max_structures null or >= 1")


def parse_data_config(values: dict[str, Any]) -> tuple[DataConfig, Any]:
    """The shared keys and the format's options of a ``data`` section."""
    values = dict(values)
    options_class = source(values.get("format")).options
    shared = {f.name for f in dataclasses.fields(DataConfig)}
    own = {f.name for f in dataclasses.fields(options_class)}
    unknown = sorted(set(values) - shared - own)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'data.{k}' for k in unknown)} for data.format="
            f"{values['format']}; valid keys: {', '.join(sorted(shared | own))}"
        )
    config = parse(DataConfig, {k: v for k, v in values.items() if k in shared}, "data")
    options = parse(options_class, {k: v for k, v in values.items() if k in own}, "data")
    return config, options


class LazyStructures(Sequence):
    """The structures of a lazy source (too many to hold in memory, OC20) with ``transforms``
    applied to each when it is read; ``indices`` selects a subset (a split) without reading."""

    def __init__(
        self, base: Sequence, transforms: list, name: str, indices: Sequence[int] | None = None
    ) -> None:
        self.base, self.transforms, self.name = base, list(transforms), name
        self.indices = range(len(base)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Data:
        index = int(self.indices[k])
        data = self.base[index]
        for transform in self.transforms:
            data = transform(data, f"{self.name} structure {index}")
        return data

    def subset(self, indices: Sequence[int]) -> LazyStructures:
        return LazyStructures(
            self.base, self.transforms, self.name, [self.indices[i] for i in indices]
        )


def untransformed(structures: Sequence[Data]) -> Sequence[Data]:
    """The structures as their source gives them: a lazy source's without its transforms (a
    check of the elements need not build radius graphs), a list as it is."""
    if isinstance(structures, LazyStructures):
        return LazyStructures(structures.base, [], structures.name, structures.indices)
    return structures


def group_labels(structures: Sequence[Data], field: str, key: str = "data.split_by") -> np.ndarray:
    """The value of the per-structure field ``field`` ([1]) of every structure, read without the
    transforms of a lazy source; DataError naming a structure without it (and ``key``, the
    setting that asked for it)."""
    base = structures.base if isinstance(structures, LazyStructures) else structures
    indices = structures.indices if isinstance(structures, LazyStructures) else range(len(base))
    labels = []
    for index in tqdm(indices, desc=f"reading {field}", unit="structure", disable=None):
        data = base[int(index)]
        if field not in data or data[field].numel() != 1:
            raise DataError(f"structure {index} has no single {field!r} field ({key}={field})")
        labels.append(int(data[field].reshape(-1)[0]))
    return np.asarray(labels)


def select(structures: Sequence[Data], indices: Sequence[int]) -> Sequence[Data]:
    """The structures at ``indices``: a list, or a lazy view of a lazy source."""
    if isinstance(structures, LazyStructures):
        return structures.subset(indices)
    return [structures[i] for i in indices]


def load_structures(
    values: dict[str, Any], transforms: list | None = None
) -> list[Data] | LazyStructures:
    """Every structure of the ``data`` section's source (at most ``max_structures``), with
    ``transforms`` applied (:mod:`molfold.data.transforms`).

    When a transform has a ``cache_version`` (it is costly), the transformed structures are
    cached (:mod:`molfold.data.structure_cache`). A lazy source gives
    :class:`LazyStructures`, which reads and transforms a structure when it is indexed.
    """
    config, options = parse_data_config(values)
    if config.path is not None and not Path(config.path).exists():
        raise MissingFileError(f"data.path {config.path} does not exist")
    transforms = list(transforms or [])
    cache = cache_file(config, options, transforms)
    if cache is not None and cache.is_file():
        structures = read_structures(cache)
        if structures is not None:
            return structures
    structures = source(config.format).load(config.path, options, config.max_structures)
    name = config.path or config.format
    if not len(structures):
        raise DataError(f"{name} holds no structures")
    if not isinstance(structures, list):
        return LazyStructures(structures, transforms, name)
    if transforms:
        progress = len(structures) >= PROGRESS_MIN_STRUCTURES
        structures = transform_structures(structures, transforms, name, progress=progress)
    if cache is not None:
        write_structures(structures, cache)
    return structures


def data_fields(values: dict[str, Any]) -> tuple[str, ...]:
    """The graph fields every structure of the ``data`` section's source carries."""
    _, options = parse_data_config(values)
    return source(values.get("format")).fields(options)


def check_fields(fields: tuple[str, ...], values: dict[str, Any], task: str) -> None:
    """ConfigError, before anything is read, if the ``data`` section's source does not give a
    field that ``task`` trains on; the message names the models that fit the data."""
    from molfold.models.registry import registered_models
    from molfold.tasks.base import registered_tasks

    provides = data_fields(values)
    missing = [name for name in fields if name not in provides]
    if not missing:
        return
    fitting = {
        cls.model_kind
        for cls in registered_tasks().values()
        if set(cls.required_fields) <= set(provides)
    }
    models = sorted({e.name for e in registered_models() if e.kind in fitting})
    hint = f"; models that fit it: {', '.join(f'model={m}' for m in models)}" if models else ""
    if "target" in missing:
        hint += "; name the target(s) with data.target" if "target" in values else ""
    raise ConfigError(
        f"data.format={values.get('format')} gives no {', '.join(missing)}, which task {task!r} "
        f"needs{hint}"
    )


def is_primary_process() -> bool:
    """True in the process of global rank 0 (or when not distributed).

    Read from the variables that Lightning's launcher, torchrun and SLURM set, so it works before
    the process group exists.
    """
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return int(os.environ[variable]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def wait_for(ready, what: Path, timeout_s: float = 1800.0) -> None:
    """Block until ``ready()`` is true (the primary process has written ``what``)."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout_s:
            raise DataError(f"waited {timeout_s:.0f} s for rank 0 to write {what}")
        time.sleep(0.5)


def _split_id(split: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(split):
        digest.update(name.encode() + np.ascontiguousarray(split[name], dtype=np.int64).tobytes())
    return digest.hexdigest()


class DataModule(L.LightningDataModule):
    """Structures of one source, their split, the task's statistics, and loaders.

    Parameters
    ----------
    data_config : the ``data`` config section (plain dict)
    task : the task class (:class:`molfold.tasks.base.Task` subclass) whose model trains here
    task_settings : the parsed ``task`` section (passed to the task's statistics)
    transforms : what the task and the model need attached to each structure
    run_dir : where ``split.npz`` and ``statistics.json`` are written or read
    seed : seed of the training order
    """

    def __init__(
        self,
        data_config: dict[str, Any],
        task: type,
        task_settings: Any,
        transforms: list,
        run_dir: str | Path,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.values = dict(data_config)
        self.config, _ = parse_data_config(self.values)
        self.task, self.task_settings = task, task_settings
        self.transforms = list(transforms)
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.items: list[Data] | None = None
        self.split: dict[str, np.ndarray] = {}
        self.statistics: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.items is not None:
            return
        check_fields(self.task.required_fields, self.values, self.task.name)
        self.items = load_structures(self.values, self.transforms)
        split_file = self.run_dir / "split.npz"
        statistics_file = self.run_dir / "statistics.json"
        fingerprint = data_fingerprint(self.config.path, len(self.items))
        request = split_request(self.values)
        primary = is_primary_process()
        if primary:
            split = saved_split(split_file, fingerprint, request)
            if split is None:
                c = self.config
                groups = None if c.split_by is None else group_labels(self.items, c.split_by)
                split = random_split(
                    len(self.items), c.n_train, c.n_val, c.n_test, c.split_seed, c.split_rng, groups
                )
                save_split(split, split_file, fingerprint, request)
        else:
            wait_for(split_file.exists, split_file)
            split = saved_split(split_file, fingerprint, request)
        self.split = split
        split_id = _split_id(split)
        if primary:
            self.statistics = {
                "data": self.config.name or self.config.format,
                **self.task.fit_statistics(
                    self.subset("train"), self.task_settings, self.target_units()
                ),
            }
            record = {"split": split_id, "statistics": self.statistics}
            atomic_write(statistics_file, json.dumps(record, indent=2))
        else:

            def fitted_on_this_split() -> bool:
                if not statistics_file.exists():
                    return False
                return json.loads(statistics_file.read_text()).get("split") == split_id

            wait_for(fitted_on_this_split, statistics_file)
            self.statistics = json.loads(statistics_file.read_text())["statistics"]
        self.task.check_statistics(self.statistics, untransformed(self.items))

    def target_units(self) -> list[tuple[str, str]]:
        """Name and unit of each graph target the source gives (none for most)."""
        _, options = parse_data_config(self.values)
        return source(self.config.format).target_units(options)

    def subset(self, name: str) -> Sequence[Data]:
        assert self.items is not None, "call setup() first"
        return select(self.items, self.split[name])

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches each process takes per epoch."""
        per_rank = len(self.split["train"]) // world_size
        return math.ceil(per_rank / self.config.batch_size)

    def _loader(self, name: str) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if len(self.split[name]) < world_size:
            raise ConfigError(
                f"the {name} split has {len(self.split[name])} structures, fewer than the "
                f"{world_size} processes, and every process needs at least one: enlarge it "
                "(data.n_train / n_val / n_test) or use fewer devices"
            )
        size = self.config.batch_size if name == "train" else self.config.val_batch_size
        structures = self.subset(name)
        groups = None
        if name == "train" and self.config.batch_by is not None:
            groups = group_labels(structures, self.config.batch_by, "data.batch_by")
        return make_loader(
            structures, name, size, self.config.num_workers, self.seed, self.trainer, groups
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
