"""Channel-wise ("strided") equivariant operations on edge features.

Allegro keeps ``mul`` channels of each irrep per edge, stored channels innermost as
[E, irreps.dim, mul] where ``irreps`` lists every irrep once (multiplicity 1): every component of
every irrep is one contiguous row of ``mul`` channels, so each Clebsch-Gordan entry of a product is
one vector multiply-add over the channels. Two operations act on that layout:

* :class:`WeightedChannels`: ``mul`` scalar-weighted copies of a one-channel tensor such as the
  spherical harmonics of an edge, one weight per channel and irrep.
* :class:`ChannelwiseTensorProduct`: the tensor product of two strided tensors channel by
  channel (channel u of the output only sees channel u of both inputs), summed over all allowed
  paths l1 x l2 -> l_out with learned path weights.

The products have two evaluations of the same sum, chosen by :func:`unroll_products`: in eager
mode the entries are gathered and summed together (few large kernels); for a traced graph
(:mod:`molfold.compiled`) every entry is written out with its indices and coefficient as Python
constants, so the compiler sees one chain of multiply-adds over rows, which it fuses into a single
loop, and there is no gather along the irreps axis whose backward would be a scatter. The inputs'
rows are unbound rather than selected, so that the backward pass is also one chain per row (the
backward of a selected row is a zero-filled tensor with that row set, and Inductor sums those as a
masked pass over every row for every entry: at l_max 2, 83 entries over 9 rows, this made the
compiled model 2.6x slower per edge than at l_max 1), and each path's weights multiply its partial
sum once rather than every entry.
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

    ``forward(x [E, irreps.dim], weights [E, len(irreps) * mul]) -> [E, irreps.dim, mul]``;
    every component of irrep r in channel u is multiplied by ``weights[:, r * mul + u]``.
    The weights are irrep-major (channels innermost, like the output; the reference codes and
    molfold checkpoints before format 3 order them channel-major, u * len(irreps) + r, see
    :func:`channel_major_to_irrep_major`), so every weight row is read contiguously.
    """

    def __init__(self, irreps: o3.Irreps, multiplicity: int) -> None:
        super().__init__()
        self.irreps_in = single_copies(irreps)
        self.multiplicity = multiplicity
        self.num_irreps = len(self.irreps_in)
        self.weight_numel = multiplicity * self.num_irreps
        self.slices = [(s.start, s.stop) for s in self.irreps_in.slices()]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        weights = weights.view(-1, self.num_irreps, self.multiplicity)
        blocks = [
            x[:, start:stop, None] * weights[:, None, r, :]
            for r, (start, stop) in enumerate(self.slices)
        ]
        return torch.cat(blocks, dim=1)

    def extra_repr(self) -> str:
        return f"irreps_in={self.irreps_in}, multiplicity={self.multiplicity}"


def channel_major_to_irrep_major(
    weight: torch.Tensor, columns: slice, multiplicity: int, num_irreps: int
) -> torch.Tensor:
    """``weight`` [in, out] of a linear map whose output ``columns`` are channel weights in the
    channel-major order u * num_irreps + r, with those columns reordered irrep-major
    (r * multiplicity + u), the order :class:`WeightedChannels` reads."""
    weight = weight.clone()
    block = weight[:, columns]
    weight[:, columns] = block.reshape(-1, multiplicity, num_irreps).transpose(1, 2).flatten(1)
    return weight


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


class ProductEntries(nn.Module):
    """The non-zero entries of a channel-wise product [E, dim1, mul] x [E, dim2, mul] ->
    [E, dim_out, mul], and their sum.

    Entry n multiplies component ``index1[n]`` of input 1 by component ``index2[n]`` of input 2
    and by ``values[n]`` (and, if path weights are given, by the weight of its path
    ``path_of_entry[n]`` in each channel), and adds the product into output component
    ``index_out[n]``. The lists hold one tensor per path, as :func:`sparse_paths` gives them.

    ``forward(x1, x2, path_weights [paths, mul or 1] or None) -> [E, dim_out, mul]``. With
    ``unrolled`` (see :func:`unroll_products`) the same sum is written entry by entry.
    """

    def __init__(
        self, index1: list, index2: list, index_out: list, values: list, dim_out: int
    ) -> None:
        super().__init__()
        path_of_entry = [torch.full_like(i, path) for path, i in enumerate(index1)]
        self.register_buffer("index1", torch.cat(index1), persistent=False)
        self.register_buffer("index2", torch.cat(index2), persistent=False)
        self.register_buffer("index_out", torch.cat(index_out), persistent=False)
        self.register_buffer("path_of_entry", torch.cat(path_of_entry), persistent=False)
        # float64, exact: a float64 model must not see coefficients rounded to float32
        self.register_buffer("cg_values", torch.cat(values).double(), persistent=False)
        self.dim_out = dim_out
        self.unrolled = False
        self.entries = [
            (int(i), int(j), int(k), float(value), int(path))
            for i, j, k, value, path in zip(
                self.index1, self.index2, self.index_out, torch.cat(values), self.path_of_entry
            )
        ]

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, path_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.unrolled:
            return self._unrolled(x1, x2, path_weights)
        coefficients = self.cg_values.to(x1.dtype).unsqueeze(1)  # [entries, 1]
        if path_weights is not None:
            coefficients = path_weights.index_select(0, self.path_of_entry) * coefficients
        products = x1.index_select(1, self.index1) * x2.index_select(1, self.index2)
        products = products * coefficients
        out = products.new_zeros(products.shape[0], self.dim_out, products.shape[2])
        return out.index_add_(1, self.index_out, products)

    def _unrolled(
        self, x1: torch.Tensor, x2: torch.Tensor, path_weights: torch.Tensor | None
    ) -> torch.Tensor:
        # unbind, not x[:, i]: the backward of unbind stacks one gradient per row, whereas the
        # selects' backwards would be summed over every row, each a masked pass over all rows
        rows1, rows2 = x1.unbind(1), x2.unbind(1)
        path_sums: dict[tuple[int, int], torch.Tensor] = {}  # (path, output row) -> its sum
        for i, j, k, value, path in self.entries:
            term = rows1[i] * rows2[j] * value
            path_sums[path, k] = term + path_sums[path, k] if (path, k) in path_sums else term
        # each path's weights multiply its sum once, not every entry
        weights = None if path_weights is None else path_weights.unbind(0)
        rows: list[torch.Tensor | None] = [None] * self.dim_out
        for (path, k), path_sum in path_sums.items():
            term = path_sum if weights is None else path_sum * weights[path]
            rows[k] = term if rows[k] is None else rows[k] + term
        return torch.stack(rows, dim=1)

    def extra_repr(self) -> str:
        return f"{len(self.entries)} entries, unrolled={self.unrolled}"


def unroll_products(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every channel-wise product in ``module`` to its entry-by-entry evaluation (for
    tracing and compiling) or back; returns ``module``. Both give the same values."""
    for submodule in module.modules():
        if isinstance(submodule, ProductEntries):
            submodule.unrolled = enabled
    return module


class ChannelwiseTensorProduct(nn.Module):
    """Channel-wise tensor product [E, dim1, mul] x [E, dim2, mul] -> [E, dim_out, mul].

    Every pair (l1, l2) of input irreps and every output irrep l_out with l_out in l1 x l2 (and
    matching parity) is a path; its Wigner 3j coefficients are scaled by sqrt(2 l_out + 1)
    ("component" normalisation) and by a learned weight, per channel when
    ``path_channel_coupling`` is True, else shared by all channels: ``weight`` [paths, mul or 1],
    path-major (the reference and molfold checkpoints before format 4 store its transpose).

    Only the non-zero Clebsch-Gordan entries are evaluated (:class:`ProductEntries`): for each
    entry n the product x1[:, i_n] * x2[:, j_n] is formed, weighted, and summed into output
    component k_n.

    Parameters
    ----------
    irreps_in1, irreps_in2, irreps_out : irreps with multiplicity 1 each
    multiplicity : channels ``mul``
    path_channel_coupling : one weight per (channel, path) instead of per path

    Examples
    --------
    >>> tp = ChannelwiseTensorProduct("0e+1o", "0e+1o", "0e", multiplicity=4)
    >>> tp.num_paths, tp.weight.shape
    (2, torch.Size([2, 4]))
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

        index1, index2, index_out, values = [], [], [], []
        for _, slice_out, i, j, k, path_values in sparse_paths(
            self.irreps_in1, self.irreps_in2, self.irreps_out
        ):
            index1.append(i)
            index2.append(j)
            index_out.append(k + slice_out.start)
            values.append(path_values)
        if not values:
            raise ValueError(f"no path from {irreps_in1} x {irreps_in2} to {irreps_out}")
        self.num_paths = len(values)
        self.entries = ProductEntries(index1, index2, index_out, values, self.irreps_out.dim)

        # drawn [channels, paths] as in checkpoint formats < 4 (same values for a seed), stored
        # path-major [paths, channels]: each path's channel weights are one contiguous row
        shape = (multiplicity, self.num_paths) if path_channel_coupling else (1, self.num_paths)
        weight = torch.empty(shape).uniform_(-math.sqrt(3.0), math.sqrt(3.0))
        self.weight = nn.Parameter(weight.t().contiguous())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.entries(x1, x2, self.weight)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, "
            f"{self.multiplicity} channels, {self.num_paths} paths"
        )
