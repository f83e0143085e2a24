"""OC20's pickled torch-geometric ``Data`` objects, read without torch-geometric or its code.

Each value of an OC20 LMDB (``preprocess_ef.py`` in fairchem) is ``pickle.dumps`` of a
``torch_geometric.data.Data``, written by whichever PyG version the dataset was made with:

==========  =====================================================  ===========================
PyG         the pickled object's ``__dict__``                      globals named
==========  =====================================================  ===========================
1.x         the attributes themselves (``pos``, ``y``, ...)        ``...data.data.Data``
2.0         ``{'_store': GlobalStorage}``, attributes in its       ``...data.storage.
            ``_mapping``                                           GlobalStorage``
>= 2.1      as 2.0, plus ``_edge_attr_cls``/``_tensor_attr_cls``   ``...data.data.DataEdgeAttr``,
                                                                   ``DataTensorAttr``
==========  =====================================================  ===========================

Unpickling such an object with the PyG of another era fails or silently misplaces the
attributes; fairchem repairs old objects after unpickling them with the installed PyG
(``pyg2_data_transform``). molfold instead never imports PyG's classes from a pickle:
:class:`~molfold.data.sources.restricted_pickle.RestrictedUnpickler` maps every PyG class, at
any module path, onto the local stand-ins below, so any version's layout unpickles the same way
and :func:`pyg_attributes` reads the attributes out of it.

Tensors inside are ``torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(b), ...)``.
The real ``_load_from_bytes`` calls ``torch.load(..., weights_only=False)``, a second unpickler
with no restriction at all; here it is replaced by :func:`_storage_from_bytes`, which calls
``torch.load(..., weights_only=True)`` (torch's own restricted unpickler), and
``_rebuild_tensor_v2`` by :func:`_rebuild_tensor`, which accepts only a storage and drops
backward hooks. NumPy scalars and arrays and plain containers are allowed; every other global is
refused, naming it.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from molfold.data.sources.restricted_pickle import (
    CONTAINER_GLOBALS,
    NUMPY_GLOBALS,
    NUMPY_SCALARS,
    PROTOCOL2_BYTES,
    restricted_loads,
)
from molfold.errors import DataError

WHAT = "an OC20 LMDB entry (torch-geometric Data of tensors, NumPy values and containers)"

PICKLE_HINT = (
    "OC20 LMDBs store pickles, and unpickling can run arbitrary code: molfold reads them only "
    "if you trust the files and opt in with data.allow_pickle=true (allow_pickle=True in "
    "Python); even then it unpickles nothing but torch-geometric Data, tensors, NumPy values "
    "and plain containers"
)


class PygData:
    """Stand-in for ``torch_geometric.data.Data`` of any PyG version: keeps the pickled state."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


class PygStorage:
    """Stand-in for PyG >= 2.0 storages (``GlobalStorage`` ...): keeps their ``_mapping``."""

    def __setstate__(self, state: Any) -> None:
        mapping = state.get("_mapping") if isinstance(state, dict) else None
        self.__dict__["mapping"] = mapping


class PygPlaceholder:
    """Stand-in for classes PyG >= 2.1 pickles only as references (``DataEdgeAttr``, ...)."""


PYG_STAND_INS = {
    "Data": PygData,
    "GlobalStorage": PygStorage,
    "BaseStorage": PygStorage,
    "NodeStorage": PygStorage,
    "EdgeStorage": PygStorage,
    "DataEdgeAttr": PygPlaceholder,
    "DataTensorAttr": PygPlaceholder,
    "EdgeAttr": PygPlaceholder,
    "TensorAttr": PygPlaceholder,
}
"""PyG class name -> stand-in, for any module under ``torch_geometric`` (classes moved between
``torch_geometric.data.data``, ``.storage`` and others across versions)."""


def _pyg_stand_in(module: str, name: str) -> type | None:
    if module == "torch_geometric" or module.startswith("torch_geometric."):
        return PYG_STAND_INS.get(name)
    return None


def _storage_from_bytes(stored: bytes) -> Any:
    """``torch.storage._load_from_bytes`` through torch's restricted unpickler."""
    if not isinstance(stored, bytes):
        raise DataError(f"a tensor storage must be bytes, got {type(stored).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about protocols it did not write
            storage = torch.load(io.BytesIO(stored), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        reason = str(error).rsplit("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0]
        raise DataError(
            f"a tensor storage holds more than tensor data; torch's restricted loader refused "
            f"it ({reason})"
        ) from None
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise DataError(f"a tensor storage unpickled as {type(storage).__name__}")
    return storage


def _rebuild_tensor(
    storage: Any,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` (and the older ``_rebuild_tensor``) for a storage
    only, without gradients, hooks or metadata (the tensor's view of the storage is checked by
    torch)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise DataError(f"a tensor must be built from a storage, got {type(storage).__name__}")
    size, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
    return torch._utils._rebuild_tensor_v2(
        storage, int(storage_offset), size, stride, False, OrderedDict()
    )


OC20_GLOBALS = {
    **NUMPY_GLOBALS,
    **CONTAINER_GLOBALS,
    **PROTOCOL2_BYTES,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
}
"""The globals an OC20 LMDB entry may name, besides the PyG classes (:data:`PYG_STAND_INS`)."""


def unpickle_entry(stored: bytes, where: str) -> dict[str, Any]:
    """The attributes of one pickled PyG ``Data`` (any version), as stored: name -> tensor,
    NumPy value, number, ... (None values dropped). A :class:`DataError` names ``where`` if the
    bytes are damaged, name a global outside :data:`OC20_GLOBALS`, or hold no ``Data``."""
    obj = restricted_loads(stored, OC20_GLOBALS, WHAT, where, fallback=_pyg_stand_in)
    return pyg_attributes(obj, where)


def pyg_attributes(obj: Any, where: str) -> dict[str, Any]:
    """The attributes of an unpickled :class:`PygData` in any of the layouts of the module
    docstring (private names, those starting with ``_``, and None values dropped)."""
    if not isinstance(obj, PygData) or not isinstance(obj.__dict__.get("state"), dict):
        raise DataError(f"{where}: expected a pickled torch-geometric Data, got {type(obj)}")
    state = obj.__dict__["state"]
    store = state.get("_store")
    if isinstance(store, PygStorage):
        mapping = store.__dict__.get("mapping")
        if not isinstance(mapping, dict):
            raise DataError(f"{where}: the pickled Data's storage holds no attribute mapping")
    else:
        mapping = state
    return {
        key: value
        for key, value in mapping.items()
        if isinstance(key, str) and not key.startswith("_") and value is not None
    }


def unpickle_count(stored: bytes, where: str) -> int:
    """The pickled ``length`` of an S2EF LMDB (an int; no global but NumPy scalars allowed)."""
    count = restricted_loads(stored, NUMPY_SCALARS, "an LMDB length (an integer)", where)
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise DataError(f"{where}: 'length' must be a non-negative integer, got {count!r}")
    return int(count)
