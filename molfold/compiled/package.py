"""Self-contained compiled potentials: one AOTInductor package (``.pt2``) per model and device.

:func:`export_potential` traces a potential's energy-and-force graph
(:func:`~molfold.compiled.trace.trace_core`), exports it with free numbers of atoms and edges
(``torch.export``) and compiles it ahead of time into a shared library that AOTInductor packages
with the weights. What the rest of molfold needs to use it (species, per-species scale and shift,
r_max, dtype, the source checkpoint) goes into the package's metadata. The package runs without
the Python model code; :func:`load_package` wraps it in a
:class:`~molfold.compiled.potential.CompiledPotential`, which gives the same outputs as the eager
potential (tested per dtype in ``tests/test_compiled.py``).

A package is tied to the device kind it was compiled for (``cpu`` or ``cuda``) and, like any
AOTInductor artefact, to the PyTorch version that wrote it: :func:`load_package` refuses others
with a message that says which checkpoint to export again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from molfold._version import __version__
from molfold.compiled.potential import CompiledPotential
from molfold.errors import CheckpointError
from molfold.models.potential import Potential
from molfold.nn import centre_sums  # noqa: F401 - registers the custom ops a package calls

FORMAT = "molfold-compiled-potential/1"
"""Metadata key ``format`` of every package: what wrote it and how to read its metadata."""


def export_potential(
    potential: Potential, output: str | os.PathLike, source: str = "", device: str = "cpu"
) -> Path:
    """Write ``potential`` as an AOTInductor package at ``output`` (``.pt2``), for ``device``.

    The file appears only when complete (written next to it, then renamed). Returns its path.
    ConfigError for a model that cannot be compiled.
    """
    from molfold.compiled.trace import example_inputs, trace_core

    output = Path(output)
    device = torch.device(device)
    graph = trace_core(potential, device)
    atoms = torch.export.Dim("atoms", min=2)
    edges = torch.export.Dim("edges", min=2)
    exported = torch.export.export(
        graph,
        example_inputs(potential, device),
        dynamic_shapes=({0: edges}, {1: edges}, {0: atoms}),
    )
    metadata = {
        "format": FORMAT,
        "molfold_version": __version__,
        "torch_version": torch.__version__,
        "device": device.type,
        "dtype": str(potential.dtype).removeprefix("torch."),
        "species": json.dumps(potential.species),
        "scales": json.dumps(potential.scales.tolist()),
        "shifts": json.dumps(potential.shifts.tolist()),
        "r_max": repr(potential.r_max),
        "widest_edge_row": str(potential.model.widest_edge_row),
        "source": str(source),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".pt2", prefix=f".{output.name}.", dir=output.parent)
    os.close(handle)
    try:
        torch._inductor.aoti_compile_and_package(
            exported,
            package_path=partial,
            inductor_configs={"aot_inductor.metadata": metadata},
        )
        os.replace(partial, output)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return output


def load_package(path: str | os.PathLike, device: str | torch.device = "cpu") -> CompiledPotential:
    """The compiled potential in the package at ``path``, on ``device``.

    CheckpointError if the file is not a molfold package, was compiled for another device kind,
    or cannot be loaded by this PyTorch.
    """
    path = Path(path)
    device = torch.device(device)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such compiled model")
    try:
        core = torch._inductor.aoti_load_package(str(path))
        metadata = core.get_metadata()
    except Exception as error:  # noqa: BLE001 - a foreign or damaged package, any failure
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} cannot be loaded as a compiled model by torch {torch.__version__} "
            f"({reason}); export it again from its checkpoint with `molfold export`"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is an AOTInductor package but not a molfold potential")
    if metadata["device"] != device.type:
        raise CheckpointError(
            f"{path} was compiled for {metadata['device']}, not {device.type}; export the "
            f"checkpoint ({metadata.get('source') or 'the one it came from'}) with "
            f"device={device.type}"
        )
    return CompiledPotential(
        core,
        json.loads(metadata["species"]),
        torch.tensor(json.loads(metadata["scales"]), dtype=torch.float64),
        torch.tensor(json.loads(metadata["shifts"]), dtype=torch.float64),
        float(metadata["r_max"]),
        getattr(torch, metadata["dtype"]),
        int(metadata["widest_edge_row"]),
        backend="aotinductor",
    ).to(device)
