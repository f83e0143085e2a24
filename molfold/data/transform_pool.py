"""Apply a source's transforms to every structure, in worker processes where they are costly.

A costly transform (one with ``cache_version``, :mod:`molfold.data.transforms`) such as the
ETKDG + MMFF start of a conformer refiner takes tens of milliseconds per molecule: an hour for
QM9 on one core. :func:`transform_structures` spreads such work over the machine's cores in
chunks and returns the structures in their order, exactly as one process would make them (each
transform is a function of its structure alone). Chunks travel between processes as plain
pickles made here and read here, never through torch's shared-memory tensor passing (whose file
descriptors run out on large datasets), each structure's tensors copied out of the dataset-wide
tensors a source may slice them from.
"""

from __future__ import annotations

import math
import os
import pickle
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context

import torch
from torch_geometric.data import Data
from tqdm import tqdm

PARALLEL_MIN_STRUCTURES = 2000
"""Fewer structures than this are transformed in this process: starting workers costs seconds."""
CHUNK_SIZE = 256
"""The most structures per task sent to a worker."""

Transform = Callable[[Data, str], Data]


def _where(data: Data, name: str, k: int) -> str:
    """The structure's name in error messages: its frame where it has one."""
    return f"{name} frame {int(data.frame)}" if "frame" in data else f"{name} structure {k}"


def _apply(transforms: Sequence[Transform], structures: list[Data], name: str, first: int):
    for k, data in enumerate(structures, first):
        for transform in transforms:
            data = transform(data, _where(data, name, k))
        structures[k - first] = data
    return structures


def _compact(data: Data) -> Data:
    """``data`` with every tensor in storage of its own: a source's structures can be views into
    one tensor of the whole dataset, which pickling a view would copy whole."""
    compact = Data()
    for key, value in data:
        compact[key] = value.clone() if torch.is_tensor(value) else value
    return compact


def _apply_chunk(transforms: bytes, chunk: bytes, name: str, first: int) -> bytes:
    """Worker side: a pickled chunk in, its transformed structures pickled out."""
    return pickle.dumps(_apply(pickle.loads(transforms), pickle.loads(chunk), name, first))


def default_processes() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def transform_structures(
    structures: list[Data],
    transforms: Sequence[Transform],
    name: str,
    processes: int | None = None,
    progress: bool = True,
    parallel_min: int = PARALLEL_MIN_STRUCTURES,
) -> list[Data]:
    """``structures`` with every transform applied in order, named ``name`` in error messages.

    Costly transforms on at least ``parallel_min`` structures run in
    ``processes`` worker processes (default: every core this process may use); the rest here.
    A transform's error (a :class:`molfold.errors.MolfoldError` naming the structure) is raised
    here as it was raised there.
    """
    transforms = list(transforms)
    costly = any(getattr(t, "cache_version", None) is not None for t in transforms)
    processes = default_processes() if processes is None else processes
    desc = "+".join(type(t).__name__ for t in transforms)
    bar = tqdm(total=len(structures), desc=desc, unit="structure", disable=not progress)
    if not costly or processes < 2 or len(structures) < max(parallel_min, 2):
        with bar:
            done = []
            for k, data in enumerate(structures):
                done.extend(_apply(transforms, [data], name, k))
                bar.update()
        return done
    payload = pickle.dumps(transforms)
    size = min(CHUNK_SIZE, math.ceil(len(structures) / (4 * processes)))
    in_flight: deque[Future] = deque()
    done = []

    def collect() -> None:
        chunk = pickle.loads(in_flight.popleft().result())  # made by _apply_chunk above
        done.extend(chunk)
        bar.update(len(chunk))

    with bar, ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        for first in range(0, len(structures), size):  # a few chunks ahead of the workers
            chunk = pickle.dumps([_compact(d) for d in structures[first : first + size]])
            in_flight.append(pool.submit(_apply_chunk, payload, chunk, name, first))
            if len(in_flight) > 2 * processes:
                collect()
        while in_flight:
            collect()
    return done
