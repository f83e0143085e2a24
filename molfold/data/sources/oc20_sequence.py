"""The lazy sequence every OC20 layout is read as: files of counted structures, read on demand.

OC20's S2EF training set alone is 134 million structures, so a loader that returned a list
would read hundreds of GB before the first step. :class:`OC20Sequence` knows how many
structures each file holds (counted when it is made, without reading one) and reads a
structure only when it is indexed, as a new graph each time. It holds no open file: it pickles
to its paths and counts, so a DataLoader worker (forked or spawned) gets a copy that opens the
files it needs itself (LMDB environments through :mod:`molfold.data.sources.lmdb_envs`, one per
file per process); what a reader caches per process (the last raw file decoded) is dropped
from the pickle.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch_geometric.data import Data


class OC20Sequence(Sequence):
    """Structures of ``files`` in order, ``counts[k]`` in ``files[k]``, at most ``limit``.

    Subclasses implement :meth:`read` (structure ``index`` of file ``k``). Attributes whose name
    starts with ``_cache`` are per-process caches and are not pickled.
    """

    def __init__(self, files: Sequence[Path], counts: Sequence[int], limit: int | None) -> None:
        self.files = [Path(f) for f in files]
        self.counts = [int(n) for n in counts]
        self.ends = np.cumsum(self.counts, dtype=np.int64).tolist()
        total = self.ends[-1] if self.ends else 0
        self.length = total if limit is None else min(total, int(limit))

    def read(self, k: int, index: int) -> Data:
        """Structure ``index`` (0-based) of ``files[k]``, as a new graph."""
        raise NotImplementedError

    def locate(self, index: int) -> tuple[int, int]:
        """(file, index within the file) of structure ``index`` of the sequence."""
        k = bisect.bisect_right(self.ends, index)
        return k, index - (self.ends[k - 1] if k else 0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        index = operator.index(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"structure {index} out of range for {self.length} structures")
        return self.read(*self.locate(index))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cache")}

    def __repr__(self) -> str:
        where = str(self.files[0].parent if len(self.files) > 1 else self.files[0])
        return (
            f"{type(self).__name__}({where!r}, {len(self.files)} files, {self.length} structures)"
        )
