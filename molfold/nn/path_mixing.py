"""Tensor products that keep their paths apart, and the linear map that mixes them afterwards.

Same strided layout as :mod:`molfold.nn.strided`: ``mul`` channels of each irrep per edge, stored
channels innermost as [E, irreps.dim, mul]. Where
:class:`~molfold.nn.strided.ChannelwiseTensorProduct` weights every path l1 x l2 -> l_out and sums
the paths into one copy of l_out, the two modules here split that in two steps, as Allegro 0.3
does with ``tensors_mixing_mode="uuulin"``:

* :class:`PathwiseTensorProduct`: the product channel by channel, with no weights; every path
  keeps its own output copy, so the result has one irrep per path ("path irreps").
* :class:`PathMixingLinear`: an equivariant linear map from the path irreps to one copy of each
  output irrep, mixing the channels and the paths that give the same irrep.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from molfold.nn.strided import ProductEntries, single_copies, sparse_paths


class PathwiseTensorProduct(nn.Module):
    """Unweighted channel-wise tensor product [E, dim1, mul] x [E, dim2, mul] -> [E, paths, mul].

    Every pair (l1, l2) of input irreps and every output irrep l_out in l1 x l2 is a path, with
    the Wigner 3j coefficients scaled by sqrt(2 l_out + 1) ("component" normalisation). Paths are
    ordered by output irrep (in ``irreps_out`` order), then by irrep of input 1, then of input 2;
    ``path_irreps`` lists their irreps in that order. If ``irreps_out`` starts with 0e, the first
    ``num_scalar_paths`` components of each channel are its scalars. Evaluated by
    :class:`~molfold.nn.strided.ProductEntries`.

    Parameters
    ----------
    irreps_in1, irreps_in2, irreps_out : irreps with multiplicity 1 each

    Examples
    --------
    >>> tp = PathwiseTensorProduct("0e+1o", "0e+1o", "0e+1o")
    >>> tp.path_irreps, tp.num_scalar_paths
    (1x0e+1x0e+1x1o+1x1o, 2)
    """

    def __init__(self, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps) -> None:
        super().__init__()
        self.irreps_in1 = single_copies(irreps_in1)
        self.irreps_in2 = single_copies(irreps_in2)
        irreps_out = single_copies(irreps_out)

        index1, index2, index_out, values, path_irreps = [], [], [], [], []
        offset = 0  # each path gets its own output components
        for ir_out, _, i, j, k, path_values in sparse_paths(
            self.irreps_in1, self.irreps_in2, irreps_out
        ):
            index1.append(i)
            index2.append(j)
            index_out.append(k + offset)
            values.append(path_values)
            path_irreps.append((1, ir_out))
            offset += ir_out.dim
        if not path_irreps:
            raise ValueError(f"no path from {irreps_in1} x {irreps_in2} to {irreps_out}")
        self.path_irreps = o3.Irreps(path_irreps)
        self.num_scalar_paths = sum(ir == o3.Irrep("0e") for _, ir in self.path_irreps)
        self.entries = ProductEntries(index1, index2, index_out, values, self.path_irreps.dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.entries(x1, x2)

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.path_irreps}"


class PathMixingLinear(nn.Module):
    """Equivariant linear map [E, irreps_in.dim, mul_in] -> [E, irreps_out.dim, mul_out].

    ``irreps_in`` may hold the same irrep several times (e.g. the path irreps of a
    :class:`PathwiseTensorProduct`); ``irreps_out`` holds each irrep once. For every output irrep
    r, with the n_r input copies of r stacked as x[z, n, m, u]:

        out[z, m, v] = sum_{u, n} W_r[v, u, n] x[z, n, m, u] / sqrt(mul_in n_r),

    W_r of shape [mul_out, mul_in, n_r], initialised U(-sqrt(3), sqrt(3)) (unit variance), so the
    output keeps the variance of the input. There is no bias: a zero input gives zero.

    Parameters
    ----------
    irreps_in : input irreps, each copy with multiplicity 1
    irreps_out : output irreps, each present in ``irreps_in``
    mul_in, mul_out : channels of the input and of the output
    """

    def __init__(
        self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, mul_in: int, mul_out: int
    ) -> None:
        super().__init__()
        self.irreps_in = single_copies(irreps_in)
        self.irreps_out = single_copies(irreps_out)
        self.mul_in, self.mul_out = mul_in, mul_out
        self.weights = nn.ParameterList()
        self.alphas: list[float] = []
        self.copies: list[list[tuple[int, int]]] = []  # component ranges of each output's copies
        for _, ir_out in self.irreps_out:
            copies = [
                s for (_, ir), s in zip(self.irreps_in, self.irreps_in.slices()) if ir == ir_out
            ]
            if not copies:
                raise ValueError(f"output irrep {ir_out} is not in the input irreps {irreps_in}")
            self.copies.append([(s.start, s.stop) for s in copies])
            weight = torch.empty(mul_out, mul_in, len(copies))
            self.weights.append(nn.Parameter(weight.uniform_(-math.sqrt(3.0), math.sqrt(3.0))))
            self.alphas.append(1.0 / math.sqrt(mul_in * len(copies)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for copies, weight, alpha in zip(self.copies, self.weights, self.alphas):
            stacked = torch.stack([x[:, start:stop] for start, stop in copies], 1)  # [E, n, m, u]
            outputs.append(torch.einsum("vun,znmu->zmv", weight * alpha, stacked))
        return torch.cat(outputs, dim=1)

    def extra_repr(self) -> str:
        return f"{self.mul_in}x({self.irreps_in}) -> {self.mul_out}x({self.irreps_out})"
