"""Train / validation / test splits: one seeded function, saved with a fingerprint of the data.

:func:`random_split` draws every split in molfold (MD17, ASE files, QM9, GEOM, ...): one seeded
permutation, of which the first ``n_train`` items train, the next ``n_val`` validate and the next
``n_test`` (or all the rest) test. The permutation is ``torch.randperm`` with a ``torch.Generator``
seeded by ``split_seed`` (``split_rng: torch``, the default), or
``numpy.random.default_rng(split_seed).permutation`` (``split_rng: numpy``), the split of TorchMD-
Net and of Equiformer's QM9 (seed 1), so that the same molecules test. With ``split_by`` a field
(OC20's ``sid``), the permutation is of the field's distinct values and each split takes every
structure of its values (``groups``). Each size is a count (an integer) or a fraction of
the dataset (a number below 1, rounded); the data configs hold the papers' sizes (MD17: 950 / 50 as
the Allegro example; QM9: 110,000 / 10,000 / rest as GTMGC and ReBind; GEOM: 80 / 10 / 10 %).

A run saves its split to ``<run_dir>/split.npz`` together with what it was drawn from
(:func:`data_fingerprint`: the source path, the number of structures and a hash of the files'
names, sizes and modification times) and the requested sizes and seed. :func:`saved_split` gives
the saved split back only when all of these match the current config, so a run directory reused
with other data or other sizes is refused instead of silently training on the old split.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from molfold.errors import ConfigError, DataError
from molfold.io import atomic_write

SPLIT_NAMES = ("train", "val", "test")
Size = int | float | None


def _count(size: Size, total: int, name: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or size < 0:
        raise ConfigError(f"data.{name} must be >= 0 (a count, or a fraction below 1), got {size}")
    if isinstance(size, float) and size < 1:
        return round(size * total)
    if float(size) != int(size):
        raise ConfigError(f"data.{name} must be a whole count or a fraction below 1, got {size}")
    return int(size)


SPLIT_RNGS = ("torch", "numpy")


def permutation(num_structures: int, seed: int, rng: str = "torch") -> np.ndarray:
    """A seeded permutation of ``range(num_structures)`` (see the module docstring)."""
    if rng == "numpy":
        return np.random.default_rng(int(seed)).permutation(num_structures)
    if rng != "torch":
        raise ConfigError(f"data.split_rng must be one of {', '.join(SPLIT_RNGS)}, got {rng!r}")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(num_structures, generator=generator).numpy()


def random_split(
    num_structures: int,
    n_train: Size,
    n_val: Size,
    n_test: Size = None,
    seed: int = 0,
    rng: str = "torch",
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Disjoint, sorted train/val/test indices (see the module docstring).

    ``n_test`` None takes every structure left; ``n_train`` must be set and positive. With
    ``groups`` [num_structures] (OC20's ``sid``), the sizes count the distinct groups, and each
    split holds every structure of its groups: no system's frames train and test at once, as
    OC20's own validation splits hold unseen systems.
    """
    if groups is not None:
        labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
        by_group = random_split(len(labels), n_train, n_val, n_test, seed, rng)
        return {name: np.flatnonzero(np.isin(inverse, chosen)) for name, chosen in by_group.items()}
    train = _count(n_train, num_structures, "n_train")
    val = _count(n_val, num_structures, "n_val") or 0
    if train is None or train == 0:
        raise ConfigError(f"data.n_train must be set and > 0, got {n_train}")
    test = _count(n_test, num_structures, "n_test")
    rest = num_structures - train - val
    if rest < 0 or (test is not None and test > rest):
        wanted = f"{train} train + {val} val" + (f" + {test} test" if test is not None else "")
        raise ConfigError(
            f"split asks for {wanted} structures, but the dataset has {num_structures}: set "
            "data.n_train / data.n_val / data.n_test (counts, or fractions below 1)"
        )
    test = rest if test is None else test
    order = permutation(num_structures, seed, rng)
    bounds = np.cumsum([0, train, val, test])
    return {name: np.sort(order[bounds[k] : bounds[k + 1]]) for k, name in enumerate(SPLIT_NAMES)}


def files_digest(path: str | os.PathLike | None) -> str:
    """SHA-256 of the names, sizes and modification times of the file ``path`` (or of every file
    under the folder ``path``); that of nothing for None or a missing path."""
    digest = hashlib.sha256()
    if path is not None and Path(path).exists():
        root = Path(path).resolve()
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            status = file.stat()
            name = file.name if file == root else str(file.relative_to(root))
            digest.update(f"{name}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def data_fingerprint(path: str | os.PathLike | None, num_structures: int) -> dict[str, Any]:
    """What identifies a dataset: its resolved path, its number of structures and
    :func:`files_digest` of its files."""
    return {
        "path": str(Path(path).resolve()) if path is not None else None,
        "num_structures": int(num_structures),
        "files_sha256": files_digest(path),
    }


def split_request(data_config: dict[str, Any]) -> dict[str, Any]:
    """The sizes and seed a data config asks for (stored with the split)."""
    request = {key: data_config.get(key) for key in ("n_train", "n_val", "n_test", "split_seed")}
    for key, default in (("split_rng", "torch"), ("split_by", None)):
        if data_config.get(key, default) != default:  # splits saved before it keep matching
            request[key] = data_config[key]
    return request


def save_split(split: dict[str, np.ndarray], path: Path, fingerprint: dict, request: dict) -> None:
    """Write ``split`` with the fingerprint and request it was drawn for, atomically."""
    record = json.dumps({"data": fingerprint, "request": request}, sort_keys=True)
    arrays = {**split, "record": np.array(record)}
    atomic_write(path, lambda file: np.savez(file, **arrays))


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict | None]:
    try:
        with np.load(path, allow_pickle=False) as file:
            split = {name: file[name] for name in SPLIT_NAMES}
            record = json.loads(str(file["record"])) if "record" in file else None
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"cannot read split file {path}: {error}") from None
    return split, record


def load_split(path: Path, num_structures: int) -> tuple[dict[str, np.ndarray], dict | None]:
    """The split saved in ``path`` and its record (None for files written before records)."""
    split, record = _read(path)
    largest = max((int(v.max()) for v in split.values() if len(v)), default=-1)
    if largest >= num_structures:
        raise DataError(
            f"split {path} refers to structure {largest}, but the dataset has {num_structures}"
        )
    return split, record


def saved_split(path: Path, fingerprint: dict, request: dict) -> dict[str, np.ndarray] | None:
    """The split in ``path`` if it exists and was drawn from this data with this request; None if
    there is none; ConfigError naming what differs otherwise."""
    if not path.exists():
        return None
    split, record = _read(path)
    if record is None:  # written by molfold before splits carried records: trusted as before
        return load_split(path, fingerprint["num_structures"])[0]
    differences = [
        f"{key}: {record['data'].get(key)!r} then, {fingerprint[key]!r} now"
        for key in ("num_structures", "files_sha256")
        if record["data"].get(key) != fingerprint[key]
    ]
    differences += [
        f"data.{key}: {record['request'].get(key)!r} then, {request[key]!r} now"
        for key in request
        if record["request"].get(key) != request[key]
    ]
    if differences:
        raise ConfigError(
            f"{path} holds the split of another dataset or other sizes ({'; '.join(differences)}; "
            f"drawn from {record['data'].get('path')}): use a new run_dir for new data or sizes"
        )
    return split
