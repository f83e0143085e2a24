"""Unpickling published datasets without letting the files run code.

A pickle is a program: each global it names (``module.name``) is imported and may be called, so
``pickle.loads`` of a hostile file runs whatever it asks for (``os.system`` through
``__reduce__``). molfold reads pickles only where a published dataset stores them (GEOM's
``rdkit_folder``, OC20's LMDBs), only when the user opts in (``allow_pickle``), and even then
through :class:`RestrictedUnpickler`, which resolves nothing but the globals of an explicit table
and refuses every other one with a :class:`~molfold.errors.DataError` naming it, before anything
is called.

A table maps ``(module, name)`` to what the global stands for: :data:`IMPORT` (the real object,
imported as usual) or a local replacement (a stand-in class, a checked wrapper of a function).
:data:`NUMPY_GLOBALS` and :data:`CONTAINER_GLOBALS` are the entries that plain data needs.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Collection, Mapping
from typing import Any

from molfold.errors import DataError

IMPORT = object()
"""Table value: resolve the global by importing it, as :class:`pickle.Unpickler` does."""

GlobalTable = Mapping[tuple[str, str], Any]

NUMPY_SCALARS: GlobalTable = {
    ("numpy.core.multiarray", "scalar"): IMPORT,  # NumPy < 2
    ("numpy._core.multiarray", "scalar"): IMPORT,  # NumPy >= 2
    ("numpy", "dtype"): IMPORT,
}
"""NumPy scalars (``np.float64(1.0)``, ``np.int64(3)``) and their dtypes."""

NUMPY_GLOBALS: GlobalTable = {
    **NUMPY_SCALARS,
    ("numpy.core.multiarray", "_reconstruct"): IMPORT,
    ("numpy._core.multiarray", "_reconstruct"): IMPORT,
    ("numpy.core.numeric", "_frombuffer"): IMPORT,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): IMPORT,
    ("numpy", "ndarray"): IMPORT,
}
"""NumPy scalars and arrays (an object array holds only what the rest of the table allows)."""

CONTAINER_GLOBALS: GlobalTable = {
    ("builtins", "set"): IMPORT,
    ("builtins", "frozenset"): IMPORT,
    ("collections", "OrderedDict"): IMPORT,
}
"""Containers that are not pickle opcodes of their own."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to what protocol 2 uses it for: bytes as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DataError(f"refusing to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


PROTOCOL2_BYTES: GlobalTable = {("_codecs", "encode"): _latin1_bytes}
"""Pickle protocol 2 (Python 2 compatible) writes ``bytes`` as ``_codecs.encode(text, 'latin1')``;
the replacement accepts no other codec."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of ``allowed``.

    Parameters
    ----------
    file : binary file holding the pickle
    allowed : ``(module, name) -> IMPORT or replacement``; a collection of ``(module, name)``
        pairs means :data:`IMPORT` for each
    what : the kind of file, for the refusal (``"a GEOM file"``)
    fallback : ``(module, name) -> replacement or None`` for globals not in ``allowed``, e.g.
        every module path a class has had across library versions

    Raises
    ------
    :class:`DataError` ``"refusing to unpickle module.name: not part of <what>"`` for any other
    global, before it is imported or called. Pickles cannot import or call anything but
    globals, so nothing outside the table ever runs (persistent ids are refused too).
    """

    def __init__(
        self,
        file: io.BufferedIOBase,
        allowed: GlobalTable | Collection[tuple[str, str]],
        what: str,
        fallback: Callable[[str, str], Any] | None = None,
    ) -> None:
        super().__init__(file)
        self._allowed = allowed if isinstance(allowed, Mapping) else dict.fromkeys(allowed, IMPORT)
        self._what = what
        self._fallback = fallback

    def find_class(self, module: str, name: str) -> Any:
        target = self._allowed.get((module, name))
        if target is None and self._fallback is not None:
            target = self._fallback(module, name)
        if target is None:
            raise DataError(f"refusing to unpickle {module}.{name}: not part of {self._what}")
        return super().find_class(module, name) if target is IMPORT else target

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"refusing to unpickle a persistent id: not part of {self._what}")


def restricted_loads(
    data: bytes,
    allowed: GlobalTable | Collection[tuple[str, str]],
    what: str,
    where: str,
    fallback: Callable[[str, str], Any] | None = None,
) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; every failure is a
    :class:`DataError` naming ``where`` (a refused global, or damaged bytes)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed, what, fallback).load()
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    except Exception as error:  # noqa: BLE001 - unpickling damaged bytes can raise anything
        raise DataError(
            f"{where}: not a readable pickle (corrupt or truncated?): "
            f"{type(error).__name__}: {error}"
        ) from error
