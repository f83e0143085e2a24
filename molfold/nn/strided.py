"""Channel-wise ("strided") equivariant operations on edge features.

Allegro keeps ``mul`` channels of each irrep per edge, stored as [E, mul, irreps.dim] where
``irreps`` lists every irrep once (multiplicity 1). Two operations act on that layout:

* :class:`WeightedChannels`: ``mul`` scalar-weighted copies of a one-channel tensor such as the
  spherical harmonics of an edge, one weight per channel and irrep.
* :class:`ChannelwiseTensorProduct`: the tensor product of two strided tensors channel by
  channel (channel u of the output only sees channel u of both inputs), summed over all allowed
  paths l1 x l2 -> l_out with learned path weights.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn


def single_copies(irreps: o3.Irreps) -> o3.Irreps:
    """``irreps`` as :class:`~e3nn.o3.Irreps`; ValueError unless every multiplicity is 1."""
    irreps = o3.Irreps(irreps)
    if any(mul != 1 for mul, _ in irreps):
        raise ValueError(f"strided layout needs multiplicity 1 for every irrep, got {irreps}")
    return irreps


class WeightedChannels(nn.Module):
    """``mul`` weighted copies of a one-channel tensor.

    Parameters
    ----------
    irreps : irreps of the input, each with multiplicity 1 (e.g. ``1x0e+1x1o``)
    multiplicity : number of output channels ``mul``

    ``forward(x [E, irreps.dim], weights [E, mul * len(irreps)]) -> [E, mul, irreps.dim]``;
    every component of irrep r in channel u is multiplied by ``weights[:, u, r]``.
    """

    def __init__(self, irreps: o3.Irreps, multiplicity: int) -> None:
        super().__init__()
        self.irreps_in = single_copies(irreps)
        self.multiplicity = multiplicity
        self.num_irreps = len(self.irreps_in)
        self.weight_numel = multiplicity * self.num_irreps
        irrep_of_component = torch.cat(
            [torch.full((ir.dim,), r, dtype=torch.long) for r, (_, ir) in enumerate(self.irreps_in)]
        )
        self.register_buffer("irrep_of_component", irrep_of_component, persistent=False)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        weights = weights.view(-1, self.multiplicity, self.num_irreps)
        return x.unsqueeze(1) * weights.index_select(2, self.irrep_of_component)

    def extra_repr(self) -> str:
        return f"irreps_in={self.irreps_in}, multiplicity={self.multiplicity}"


def sparse_paths(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps):
    """The non-zero Clebsch-Gordan entries of every path l1 x l2 -> l_out, path by path.

    Paths are ordered by output irrep, then by irrep of input 1, then of input 2. Yields
    ``(ir_out, slice_out, i, j, k, values)``: for entry n of the path, component ``i[n]`` of input
    1 times component ``j[n]`` of input 2 enters component ``k[n]`` of the output irrep (counted
    within it, and ``slice_out`` places that irrep in ``irreps_out``) with coefficient
    ``values[n]``, the Wigner 3j entry scaled by sqrt(2 l_out + 1) ("component" normalisation).
    """
    for (_, ir_out), slice_out in zip(irreps_out, irreps_out.slices()):
        for (_, ir1), slice1 in zip(irreps_in1, irreps_in1.slices()):
            for (_, ir2), slice2 in zip(irreps_in2, irreps_in2.slices()):
                if ir_out not in ir1 * ir2:
                    continue
                w3j = o3.wigner_3j(ir1.l, ir2.l, ir_out.l, dtype=torch.float64)
                i, j, k = w3j.nonzero(as_tuple=True)
                values = w3j[i, j, k] * math.sqrt(2 * ir_out.l + 1)
                yield ir_out, slice_out, i + slice1.start, j + slice2.start, k, values


def register_entries(
    module: nn.Module, index1: list, index2: list, index_out: list, values: list, dim_out: int
) -> None:
    """Register the buffers of a sparse tensor product on ``module``: ``index1``, ``index2``
    (the input components of every entry), ``cg_values`` (its coefficient, default dtype) and
    ``entry_to_out`` (one-hot [entries, dim_out], which sums each entry into its output
    component). The lists hold one tensor per path, as :func:`sparse_paths` gives them."""
    dtype = torch.get_default_dtype()
    module.register_buffer("index1", torch.cat(index1), persistent=False)
    module.register_buffer("index2", torch.cat(index2), persistent=False)
    module.register_buffer("cg_values", torch.cat(values).to(dtype), persistent=False)
    entry_to_out = torch.zeros(len(module.cg_values), dim_out, dtype=dtype)
    entry_to_out[torch.arange(len(module.cg_values)), torch.cat(index_out)] = 1.0
    module.register_buffer("entry_to_out", entry_to_out, persistent=False)


class ChannelwiseTensorProduct(nn.Module):
    """Channel-wise tensor product [E, mul, dim1] x [E, mul, dim2] -> [E, mul, dim_out].

    Every pair (l1, l2) of input irreps and every output irrep l_out with l_out in l1 x l2 (and
    matching parity) is a path; its Wigner 3j coefficients are scaled by sqrt(2 l_out + 1)
    ("component" normalisation) and by a learned weight, per channel when
    ``path_channel_coupling`` is True, else shared by all channels.

    Only the non-zero Clebsch-Gordan entries are evaluated: for each entry n the product
    x1[:, :, i_n] * x2[:, :, j_n] is formed, weighted, and summed into output component k_n.

    Parameters
    ----------
    irreps_in1, irreps_in2, irreps_out : irreps with multiplicity 1 each
    multiplicity : channels ``mul``
    path_channel_coupling : one weight per (channel, path) instead of per path

    Examples
    --------
    >>> tp = ChannelwiseTensorProduct("0e+1o", "0e+1o", "0e", multiplicity=4)
    >>> tp.num_paths, tp.weight.shape
    (2, torch.Size([4, 2]))
    """

    def __init__(
        self,
        irreps_in1: o3.Irreps,
        irreps_in2: o3.Irreps,
        irreps_out: o3.Irreps,
        multiplicity: int,
        path_channel_coupling: bool = True,
    ) -> None:
        super().__init__()
        self.irreps_in1 = single_copies(irreps_in1)
        self.irreps_in2 = single_copies(irreps_in2)
        self.irreps_out = single_copies(irreps_out)
        self.multiplicity = multiplicity

        index1, index2, index_out, path_of_entry, values = [], [], [], [], []
        num_paths = 0
        paths = sparse_paths(self.irreps_in1, self.irreps_in2, self.irreps_out)
        for _, slice_out, i, j, k, path_values in paths:
            index1.append(i)
            index2.append(j)
            index_out.append(k + slice_out.start)
            values.append(path_values)
            path_of_entry.append(torch.full_like(i, num_paths))
            num_paths += 1
        if num_paths == 0:
            raise ValueError(f"no path from {irreps_in1} x {irreps_in2} to {irreps_out}")
        self.num_paths = num_paths
        register_entries(self, index1, index2, index_out, values, self.irreps_out.dim)
        self.register_buffer("path_of_entry", torch.cat(path_of_entry), persistent=False)

        shape = (multiplicity, num_paths) if path_channel_coupling else (1, num_paths)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-math.sqrt(3.0), math.sqrt(3.0)))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        coefficients = self.weight.index_select(1, self.path_of_entry) * self.cg_values
        products = x1.index_select(2, self.index1) * x2.index_select(2, self.index2)
        return (products * coefficients) @ self.entry_to_out

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, "
            f"{self.multiplicity} channels, {self.num_paths} paths"
        )
