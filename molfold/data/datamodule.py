"""Lightning DataModule for structures with energies and forces: load, split, batch, statistics.

Splits follow the MD17 tradition: ``n_train`` and ``n_val`` structures drawn at random from
``split_seed``, the rest (or ``n_test`` of them) for testing. The split is written to
``<run_dir>/split.npz`` (indices into the dataset file) and reused when that file exists, so a
resumed or re-evaluated run keeps its test set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molfold.data.statistics import fit_statistics, species_of
from molfold.errors import ConfigError, DataError

SHIPPED_DATA = [
    Path(__file__).resolve().parents[2] / "data",  # source checkout
    Path(__file__).resolve().parents[1] / "shipped_data",  # installed wheel
]


def shipped_data(name: str) -> str:
    """Path of a dataset file that ships with molfold (``data/`` of the repository)."""
    for folder in SHIPPED_DATA:
        if (folder / name).is_file():
            return str(folder / name)
    raise DataError(f"no shipped dataset named {name!r} in {[str(f) for f in SHIPPED_DATA]}")


def load_structures(data_config: dict[str, Any], r_max: float) -> list[Data]:
    """Graphs of every structure in the file that ``data_config`` names, in file order."""
    fmt, path = data_config.get("format"), data_config.get("path")
    if path is None:
        raise ConfigError("data.path is not set: give the dataset file, e.g. data.path=aspirin.npz")
    if not Path(path).exists():
        raise DataError(f"data.path {path} does not exist")
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


class AtomicDataModule(L.LightningDataModule):
    """Loads a dataset file, splits it, and serves batches of atomic graphs.

    Parameters
    ----------
    data_config : the ``data`` config group (format, path, split sizes, batch sizes, keys)
    r_max : cutoff radius of the model, Angstrom
    run_dir : where ``split.npz`` is written or read
    """

    def __init__(self, data_config: dict[str, Any], r_max: float, run_dir: str | Path) -> None:
        super().__init__()
        self.config = dict(data_config)
        self.r_max = r_max
        self.run_dir = Path(run_dir)
        self.structures: list[Data] | None = None
        self.split: dict[str, np.ndarray] = {}
        self.statistics: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.structures is not None:
            return
        self.structures = load_structures(self.config, self.r_max)
        split_file = self.run_dir / "split.npz"
        if split_file.exists():
            self.split = load_split(split_file, len(self.structures))
        else:
            self.split = random_split(
                len(self.structures),
                int(self.config["n_train"]),
                int(self.config["n_val"]),
                self.config.get("n_test"),
                int(self.config.get("split_seed", 0)),
            )
            save_split(self.split, split_file)
        train = self.subset("train")
        self.statistics = fit_statistics(train)
        unknown = set(species_of(self.structures)) - set(self.statistics["species"])
        if unknown:
            raise DataError(
                f"elements {sorted(unknown)} appear in val/test but not in training data"
            )

    def subset(self, name: str) -> list[Data]:
        assert self.structures is not None, "call setup() first"
        return [self.structures[i] for i in self.split[name]]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        batch_size = self.config["batch_size"] if name == "train" else self.config["val_batch_size"]
        return DataLoader(
            self.subset(name),
            batch_size=int(batch_size),
            shuffle=shuffle,
            num_workers=int(self.config.get("num_workers", 0)),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
