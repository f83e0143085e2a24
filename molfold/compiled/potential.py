"""A potential whose per-call work runs as one compiled graph.

:class:`CompiledPotential` gives the outputs of :class:`~molfold.models.potential.Potential`
(``energy``, ``atomic_energy``, ``forces``, ``stress``) from a compiled
:class:`~molfold.compiled.trace.EdgeGradientCore`: compiled in this process by Inductor
(:func:`compile_potential`, the first call compiles, later processes reuse Inductor's on-disk
cache) or loaded from an AOTInductor package (:func:`molfold.compiled.package.load_package`).
Everything around the core (species map, edge vectors, scale and shift, forces and stress from the
edge gradient) is the eager potential's own code.

If the just-in-time compiler cannot run here (no C++ compiler, an operation it does not support),
the first call says so in one line and every call uses the eager potential instead.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch_geometric.data import Data

from molfold.compiled.allocator import keep_freed_memory
from molfold.data import graph as G
from molfold.models.potential import (
    Potential,
    forces_and_stress,
    graph_in_dtype,
    total_energies,
)
from molfold.models.species import SpeciesTypes

CPU_BLOCK_BYTES = 3 * 2**20
"""Bytes of the widest per-edge tensor in one core call on CPU (edges per call =
CPU_BLOCK_BYTES / (widest row x bytes per value), :func:`block_edges`). A call's temporaries then
stay in the cores' caches between the kernels that write and read them, and far under glibc's
32 MiB ceiling for reusing freed memory (:mod:`molfold.compiled.allocator`), so the cost per atom
does not grow with the cell. On the Cu benchmark cell, 2 cores, the best block was 2.5-4 MB for
l_max 1 and 2 in float32 and float64 (l_max 1, float32: 0.085 s per call against 0.114 s for
all 36,874 edges at once)."""
GPU_BLOCK_EDGES = 1 << 21
"""Edges per core call on a GPU, where large calls are what keep it busy."""


def block_edges(widest_edge_row: int, dtype: torch.dtype, device_type: str) -> int:
    """Edges per core call for a model whose widest per-edge tensor holds ``widest_edge_row``
    values of ``dtype`` (see :data:`CPU_BLOCK_BYTES`, :data:`GPU_BLOCK_EDGES`)."""
    if device_type != "cpu":
        return GPU_BLOCK_EDGES
    return max(256, CPU_BLOCK_BYTES // (widest_edge_row * dtype.itemsize))


Core = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class CompiledPotential(nn.Module):
    """Energy, forces and stress from a compiled edge-gradient core.

    Parameters
    ----------
    core : ``core(vectors [E, 3], edge_index [2, E], atom_types [N]) -> (per_atom [N],
        gradient [E, 3])``, see :class:`~molfold.compiled.trace.EdgeGradientCore`
    species, scales, shifts : as in :class:`~molfold.models.potential.Potential`
    r_max : cutoff radius, Angstrom
    dtype : the core's floating-point type
    widest_edge_row : values per edge of the model's widest per-edge tensor (the model's
        ``widest_edge_row``), which sets the default block size
    backend : what compiled the core (``"inductor"``, ``"aotinductor"``), for messages
    fallback : an eager potential to use if the core fails on its first call (JIT compilation)
    max_edges_per_call : larger graphs go through the core in blocks of whole centres, so memory
        stays that of one block; default :func:`block_edges`

    Creating one applies :func:`molfold.compiled.allocator.keep_freed_memory` to the process.
    """

    def __init__(
        self,
        core: Core,
        species: Sequence[int],
        scales: torch.Tensor,
        shifts: torch.Tensor,
        r_max: float,
        dtype: torch.dtype,
        widest_edge_row: int,
        backend: str,
        fallback: Potential | None = None,
        max_edges_per_call: int | None = None,
    ) -> None:
        super().__init__()
        self.core = core
        self.types = SpeciesTypes(species)
        self.register_buffer("scales", scales.to(torch.float64))
        self.register_buffer("shifts", shifts.to(torch.float64))
        self.r_max = float(r_max)
        self.dtype = dtype
        self.widest_edge_row = widest_edge_row
        self.backend = backend
        self.fallback = fallback
        self.max_edges_per_call = max_edges_per_call
        self.checked = False
        keep_freed_memory()

    @property
    def species(self) -> list[int]:
        """Atomic numbers the model knows; ``species[t]`` is type index t."""
        return self.types.species

    def atom_types(self, z: torch.Tensor) -> torch.Tensor:
        """Type indices [N] of atomic numbers [N] (UnknownElementError for others)."""
        return self.types(z)

    def forward(
        self, data: Data, compute_forces: bool = True, compute_stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """As :meth:`Potential.forward <molfold.models.potential.Potential.forward>`, without
        gradients through the outputs (inference only)."""
        if self.core is None:  # the compiler failed on the first call: eager from then on
            return self.fallback(data, compute_forces, compute_stress)
        atom_types = self.atom_types(data[G.Z])
        data, num_graphs = graph_in_dtype(data, self.dtype)
        vectors = G.edge_vectors(data).detach()
        data[G.EDGE_VECTORS] = vectors
        per_atom, gradient = self._call_core(vectors, data[G.EDGE_INDEX], atom_types)
        if per_atom is None:
            return self.fallback(data, compute_forces, compute_stress)
        batch = data[G.BATCH]
        out = total_energies(per_atom, atom_types, self.scales, self.shifts, batch, num_graphs)
        if compute_forces or compute_stress:
            out.update(forces_and_stress(data, gradient, num_graphs, compute_stress))
        return out

    def _call_core(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        num_atoms, num_edges = atom_types.shape[0], vectors.shape[0]
        if num_edges == 0:  # nothing depends on the positions; the core wants edges
            return vectors.new_zeros(num_atoms), vectors
        if num_atoms < 2:  # one atom among its own periodic images: add an idle atom
            atom_types = torch.cat([atom_types, atom_types[:1]])
        try:
            with torch.no_grad():
                per_atom, gradient = self._evaluate(vectors.contiguous(), edge_index, atom_types)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: fall back
            if self.fallback is None or self.checked:
                raise
            warn_falling_back(
                f"the {self.backend}-compiled model", "using the eager model", error, stacklevel=4
            )
            self.core, self.checked = None, True
            return None, None
        self.checked = True
        return per_atom[:num_atoms], gradient

    def _evaluate(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The core on all edges at once, or on blocks of whole centres (:func:`centre_blocks`)
        when there are more than ``max_edges_per_call``: exact for a strictly local model, whose
        per-atom energies depend only on their own edges, and time and memory per block do not
        depend on the number of atoms."""
        max_edges = self.max_edges_per_call or block_edges(
            self.widest_edge_row, self.dtype, vectors.device.type
        )
        if vectors.shape[0] <= max_edges:
            return self.core(vectors, edge_index, atom_types)
        per_atom = vectors.new_zeros(atom_types.shape[0])
        gradient = torch.empty_like(vectors)
        for edges in centre_blocks(edge_index[1], atom_types.shape[0], max_edges):
            # numbered afresh: the block's per-atom temporaries hold its own atoms, not all N
            atoms, local_index = torch.unique(edge_index[:, edges], return_inverse=True)
            local_types = atom_types[atoms]
            if atoms.shape[0] < 2:  # one atom and its own images: add an idle atom
                local_types = torch.cat([local_types, local_types[:1]])
            block_energy, gradient[edges] = self.core(vectors[edges], local_index, local_types)
            per_atom.index_add_(0, atoms, block_energy[: atoms.shape[0]])  # zero off-centre
        return per_atom, gradient


def warn_falling_back(what: str, instead: str, error: Exception, stacklevel: int) -> None:
    """The one RuntimeWarning of a compiled path that failed: ``molfold: <what> is not
    available here (<error type>: <its first line>); <instead>``."""
    text = str(error).strip()
    reason = text.splitlines()[0][:300] if text else ""
    warnings.warn(
        f"molfold: {what} is not available here ({type(error).__name__}: {reason}); {instead}",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )


def centre_blocks(
    centre: torch.Tensor, num_atoms: int, max_edges: int
) -> list[slice] | list[torch.Tensor]:
    """The edges [E] in blocks that each hold every edge of their centres and at most
    ``max_edges`` edges (a centre with more is a block of its own; a block of one edge joins the
    one before, since the compiled core wants at least two). Slices where the edges are sorted by
    centre (as :func:`~molfold.data.neighbors.neighbor_list` gives them, also batched), else
    index tensors into a stable sort by centre."""
    in_order = bool((centre[1:] >= centre[:-1]).all())
    order = None if in_order else torch.argsort(centre, stable=True)
    ends = torch.bincount(centre, minlength=num_atoms).cumsum(0).tolist()  # per centre, sorted
    bounds: list[list[int]] = []
    start = 0
    while start < centre.shape[0]:
        stop = ends[bisect.bisect_right(ends, start + max_edges) - 1]
        if stop <= start:  # the next centre alone has more than max_edges edges
            stop = ends[bisect.bisect_right(ends, start)]
        if stop - start < 2 and bounds:
            bounds[-1][1] = stop
        else:
            bounds.append([start, stop])
        start = stop
    if order is None:
        return [slice(first, last) for first, last in bounds]
    return [order[first:last] for first, last in bounds]


def compile_potential(potential: Potential) -> CompiledPotential:
    """``potential`` with its edge-gradient core traced and compiled by Inductor (dynamic sizes).

    Compilation itself happens on the first call (tens of seconds; Inductor caches the result on
    disk for later processes). Falls back to ``potential`` if that fails. ConfigError for a model
    that cannot be compiled (:func:`~molfold.compiled.trace.check_traceable`).
    """
    from molfold.compiled.trace import trace_core

    device = potential.scales.device
    graph = trace_core(potential, device)
    core = torch.compile(graph, dynamic=True, fullgraph=True)
    return CompiledPotential(
        core,
        potential.species,
        potential.scales,
        potential.shifts,
        potential.r_max,
        potential.dtype,
        potential.model.widest_edge_row,
        backend="inductor",
        fallback=potential,
    )
