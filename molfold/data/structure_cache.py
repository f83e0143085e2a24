"""The cache of transformed structures: costly transforms run once per dataset.

A transform with a ``cache_version`` (:class:`molfold.data.transforms.MolecularGraph`: RDKit
featurisation, about two minutes for QM9) has its output saved under
``$MOLFOLD_CACHE_DIR/transformed/`` (default ``~/.cache/molfold``), collated into plain tensors
and lists (torch-geometric's ``InMemoryDataset.collate``), written atomically and read back with
``torch.load(weights_only=True)``. A cache that cannot be read is rebuilt, never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from molfold._version import __version__
from molfold.data.sources import source
from molfold.data.splits import files_digest
from molfold.io import atomic_write, cache_root


def cache_file(config: Any, options: Any, transforms: list) -> Path | None:
    """Where the structures of a parsed ``data`` section, transformed by ``transforms``, are
    cached; None when no transform asks for it. The key covers the section's keys that select
    structures (defaults filled in), the data files' fingerprint (for a source without a path,
    such as qm9pack, the source's own identity of its files) and each transform with its
    version."""
    if not any(getattr(t, "cache_version", None) is not None for t in transforms):
        return None
    selection = {k: v for k, v in dataclasses.asdict(config).items() if k not in LOADER_KEYS}
    record = {
        "data": selection,
        "options": dataclasses.asdict(options),
        "files": files_digest(config.path) if config.path else None,
        "source": _source_identity(config, options),
        "transforms": [repr(t) for t in transforms],
        "molfold": __version__,
    }
    key = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    return cache_root() / "transformed" / f"{config.format}-{key[:16]}.pt"


def _source_identity(config: Any, options: Any) -> str | None:
    identity = source(config.format).identity
    return identity(config.path, options, config.max_structures) if identity else None


LOADER_KEYS = ("name", "n_train", "n_val", "n_test", "split_seed", "batch_size")
LOADER_KEYS += ("val_batch_size", "num_workers")
"""Keys of a ``data`` section that do not change its structures."""


def write_structures(structures: list[Data], path: Path) -> None:
    from torch_geometric.data import InMemoryDataset

    data, slices = InMemoryDataset.collate(structures)
    packed = {"data": data.to_dict(), "slices": slices, "count": len(structures)}
    atomic_write(path, lambda file: torch.save(packed, file))


def read_structures(path: Path) -> list[Data] | None:
    """The structures cached in ``path``, or None if the file is unreadable (then rebuilt)."""
    try:
        packed = torch.load(path, weights_only=True)
        data, slices, count = Data.from_dict(packed["data"]), packed["slices"], packed["count"]
        columns = {}
        for key, bounds in slices.items():
            value = data[key]
            if isinstance(value, torch.Tensor):
                dim = data.__cat_dim__(key, value)
                columns[key] = torch.tensor_split(value, bounds[1:-1].tolist(), dim=dim)
            else:  # strings and other per-structure values, one per structure
                columns[key] = value
        return [Data(**{key: column[k] for key, column in columns.items()}) for k in range(count)]
    except Exception:  # a corrupt or foreign cache is rebuilt, not trusted
        return None
