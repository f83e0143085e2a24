"""Read-only LMDB environments: one per file per process, opened on first use.

py-lmdb >= 2 refuses to open a file that is already open in the same process (LMDB's locks
belong to the process and the file), and an environment must not be used across ``fork``. So
every reader of an LMDB file goes through :func:`environment`, which keeps one environment per
file for the current process: a DataLoader worker forked from a process that had files open
closes its inherited copies (checked with :func:`os.getpid`) and opens its own. The files are
opened ``readonly=True, lock=False, subdir=False, readahead=False, meminit=False``: no lock file
is written next to a dataset, and random access (a shuffled training set) does not read ahead.

LMDB trusts its pages. A file shorter than its header says (a truncated download) would crash
the process with SIGBUS on the first read past its end, so :func:`environment` compares the
file's size with the last page the header names, and refuses it with a :class:`DataError`.
Damage inside a page of the right size is reported by LMDB itself (``MDB_CORRUPTED``) or, where
it is not, shows up as undecodable values.

``lmdb`` (PyPI ``lmdb``, extra ``molfold[oc20]``) is imported on first use.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from molfold.errors import DataError, MissingFileError

INSTALL_HINT = "reading LMDB files needs the lmdb package: pip install 'molfold[oc20]'"

_environments: dict[str, Any] = {}
"""Resolved path -> the environment open in process :data:`_owner`."""
_owner: int | None = None
"""The process that opened :data:`_environments`."""


def _lmdb() -> Any:
    try:
        import lmdb
    except ImportError as error:
        raise DataError(INSTALL_HINT) from error
    return lmdb


def environment(path: str | os.PathLike) -> Any:
    """The read-only ``lmdb.Environment`` of ``path`` in this process, opened on first use.

    Raises :class:`MissingFileError` if ``path`` is not a file, :class:`DataError` naming it if
    it is not an LMDB file or is truncated.
    """
    _forget_inherited()
    key = os.path.realpath(path)
    env = _environments.get(key)
    if env is None:
        env = _open(Path(path))
        _environments[key] = env
    return env


def is_open(path: str | os.PathLike) -> bool:
    """Whether this process holds an environment of ``path`` (tests check laziness with it)."""
    return _owner == os.getpid() and os.path.realpath(path) in _environments


@contextmanager
def briefly(path: str | os.PathLike) -> Iterator[Any]:
    """The environment of ``path``, closed again on exit unless it was open before: a lazy
    reader counts its entries up front and opens the file for good only when indexed."""
    was_open = is_open(path)
    env = environment(path)
    try:
        yield env
    finally:
        if not was_open:
            _environments.pop(os.path.realpath(path)).close()


def close_all() -> None:
    """Close every environment this process opened."""
    _forget_inherited()
    for env in _environments.values():
        env.close()
    _environments.clear()


def _forget_inherited() -> None:
    """After a fork, close the parent's environments in this (child) process: LMDB forbids
    using them here, and py-lmdb would refuse to open their files again while they exist."""
    global _owner
    pid = os.getpid()
    if _owner == pid:
        return
    for env in _environments.values():
        with contextlib.suppress(Exception):  # the parent's handle: nothing to recover
            env.close()
    _environments.clear()
    _owner = pid


def _open(path: Path) -> Any:
    lmdb = _lmdb()
    if not path.is_file():
        raise MissingFileError(f"LMDB file {path} does not exist or is not a file")
    try:
        env = lmdb.open(
            str(path),
            subdir=False,
            readonly=True,
            lock=False,
            readahead=False,
            meminit=False,
            max_readers=1,
        )
    except lmdb.Error as error:
        raise DataError(
            f"{path}: not a readable LMDB file (corrupt or truncated?): "
            f"{type(error).__name__}: {error}"
        ) from error
    try:
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        size = path.stat().st_size
    except (lmdb.Error, OSError) as error:
        env.close()
        raise DataError(f"{path}: cannot read the LMDB header: {error}") from error
    if size < needed:
        env.close()
        raise DataError(
            f"{path}: truncated LMDB file: {size} bytes, but its header names pages up to "
            f"byte {needed}"
        )
    return env


def get(path: str | os.PathLike, key: bytes, env: Any = None) -> bytes | None:
    """The value stored under ``key`` in the LMDB file ``path`` (None if absent), read through
    ``env`` (default: :func:`environment`); a :class:`DataError` naming the file and key if
    LMDB reports damage."""
    env = environment(path) if env is None else env
    try:
        with env.begin(write=False) as txn:
            return txn.get(key)
    except _lmdb().Error as error:
        raise DataError(
            f"{path}: cannot read key {key.decode(errors='replace')!r} (corrupt file?): "
            f"{type(error).__name__}: {error}"
        ) from error


def entry_count(env: Any) -> int:
    """The number of keys of an open environment (from its header; no entry is read)."""
    return int(env.stat()["entries"])
