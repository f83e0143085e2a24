"""Atomic file writes (a kill at any moment leaves either the old file or the new one, never a
truncated mix) and the folder of molfold's caches.

Every file molfold writes for a user (checkpoints, splits, statistics, configs, metrics, SDF,
plots, caches, downloads) goes through :func:`atomic_write`: the content is written to a
temporary file in the target's folder, flushed and ``fsync``-ed, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows when both are on one file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMPORARY_PREFIX = "."
TEMPORARY_MARK = ".tmp"


def atomic_write(
    path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], object]
) -> Path:
    """Write ``content`` to ``path`` atomically and return the path.

    ``content`` is text (UTF-8), bytes, or a function that writes into the binary file object it
    is given (``lambda f: torch.save(obj, f)``, ``lambda f: np.savez(f, **arrays)``). Parent
    folders are created. The temporary file, ``.<name>.tmp<pid>`` next to the target, is
    removed if writing fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMPORARY_PREFIX}{path.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            if isinstance(content, str):
                file.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                file.write(content)
            else:
                content(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete temporary files that a killed :func:`atomic_write` left in ``folder``."""
    for stale in Path(folder).glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_MARK}*"):
        stale.unlink(missing_ok=True)


def cache_root() -> Path:
    """Folder of molfold's caches (processed datasets, transformed structures):
    ``$MOLFOLD_CACHE_DIR``, default ``~/.cache/molfold``."""
    return Path(os.environ.get("MOLFOLD_CACHE_DIR", Path.home() / ".cache" / "molfold"))
