"""Equivariant linear maps, gates and scalar activations of Equiformer (Liao & Smidt, ICLR 2023).

:class:`EquivariantLinear` has the parametrisation of the reference's ``LinearRS`` (a fully
connected tensor product with the constant 1x0e, ``path_normalization='none'``): for each output
irrep, y = sum over inputs of the same irrep of x W, with W [mul_in, mul_out] drawn from
N(0, 1 / fan_in) (fan_in: all input channels of that irrep) and no constant in ``forward``, plus a
bias on the 0e outputs. This is the same function space as :class:`e3nn.o3.Linear` at the same
initial distribution, but e3nn multiplies unit-variance weights by 1 / sqrt(fan_in) in ``forward``,
which changes the effective learning rate of Adam; molfold keeps the reference's.

Every scalar activation is wrapped in :class:`e3nn.math.normalize2mom` (unit second moment under
N(0, 1) inputs), as in the reference (:func:`normalized_activation`): SiLU and the sigmoid gates
of :class:`Gate`, and the attention's :class:`SmoothLeakyReLU`.
"""

from __future__ import annotations

import functools

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from torch import nn

SCALAR = o3.Irrep("0e")


def sort_even_first(irreps: o3.Irreps) -> tuple[o3.Irreps, list[int]]:
    """``irreps`` sorted by l, even parity before odd for the same l, stable (the order of the
    reference's ``sort_irreps_even_first``), and ``position[k]``, where entry k went."""
    order = sorted(range(len(irreps)), key=lambda k: (irreps[k].ir.l, -irreps[k].ir.p, k))
    position = [0] * len(irreps)
    for new, old in enumerate(order):
        position[old] = new
    return o3.Irreps([irreps[k] for k in order]), position


def scalar_irreps(irreps: o3.Irreps) -> o3.Irreps:
    """The 0e part of ``irreps``, simplified (e.g. ``512x0e`` of ``512x0e+256x1e``)."""
    return o3.Irreps([(mul, ir) for mul, ir in irreps if ir == SCALAR]).simplify()


class EquivariantLinear(nn.Module):
    """y = x W per irrep (+ bias on 0e outputs), reference ``LinearRS`` parametrisation.

    Parameters
    ----------
    irreps_in, irreps_out : e3nn irreps (strings or :class:`~e3nn.o3.Irreps`)
    bias : learned bias (zero at the start) on every 0e output channel

    Output irreps with no input of the same irrep are zero. ``forward(x [N, irreps_in.dim]) ->
    [N, irreps_out.dim]``.

    >>> linear = EquivariantLinear("4x0e+2x1e", "3x0e+1x1e+1x2e")
    >>> linear.irreps_out, sum(p.numel() for p in linear.parameters())
    (3x0e+1x1e+1x2e, 17)
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, bias: bool = True):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        ins, outs = self.irreps_in.simplify(), self.irreps_out.simplify()
        self._in_slices = [(s.start, mul, ir.dim) for s, (mul, ir) in zip(ins.slices(), ins)]
        self._paths: list[tuple[int, int]] = []  # (input entry, output entry) of simplified irreps
        self.weights = nn.ParameterList()
        for j, (mul_out, ir_out) in enumerate(outs):
            sources = [i for i, (_, ir_in) in enumerate(ins) if ir_in == ir_out]
            fan_in = sum(ins[i].mul for i in sources)
            for i in sources:
                self._paths.append((i, j))
                self.weights.append(nn.Parameter(torch.randn(ins[i].mul, mul_out) / fan_in**0.5))
        self._outs = [(mul, ir.dim) for mul, ir in outs]
        num_scalars = sum(mul for mul, ir in outs if ir == SCALAR)
        index = [
            k
            for s, (_, ir) in zip(outs.slices(), outs)
            if ir == SCALAR
            for k in range(s.start, s.stop)
        ]
        self.register_buffer("_bias_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.bias = nn.Parameter(torch.zeros(num_scalars)) if bias and num_scalars else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        blocks: list[torch.Tensor | None] = [None] * len(self._outs)
        for (i, j), weight in zip(self._paths, self.weights):
            start, mul, dim = self._in_slices[i]
            field = x.narrow(1, start, mul * dim).reshape(n, mul, dim)
            term = torch.einsum("nui,uw->nwi", field, weight)
            blocks[j] = term if blocks[j] is None else blocks[j] + term
        out = torch.cat(
            [
                (block if block is not None else x.new_zeros(n, mul, dim)).reshape(n, mul * dim)
                for block, (mul, dim) in zip(blocks, self._outs)
            ],
            dim=1,
        )
        if self.bias is not None:
            out = out.index_add(1, self._bias_index, self.bias.expand(n, -1))
        return out

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.irreps_in} -> {self.irreps_out}, "
            f"bias={self.bias is not None})"
        )


class Gate(nn.Module):
    """The gate giving ``irreps_out``: its 0e channels through SiLU, every other irrep channel
    multiplied by the sigmoid of a 0e gate of its own (both activations normalised to unit second
    moment), as e3nn's ``Gate``.

    ``irreps_in`` (what the preceding linear map must produce) is scalars + gates + gated,
    simplified: ``672x0e+192x1e+96x2e`` for ``384x0e+192x1e+96x2e``. With no gated irreps the
    gate is a SiLU of the scalars. ``forward([N, irreps_in.dim]) -> [N, irreps_out.dim]``.

    >>> Gate("384x0e+192x1e+96x2e").irreps_in
    672x0e+192x1e+96x2e
    """

    def __init__(self, irreps_out: o3.Irreps | str) -> None:
        super().__init__()
        irreps_out = o3.Irreps(irreps_out)
        scalars = scalar_irreps(irreps_out)
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir != SCALAR]).simplify()
        if scalars + gated != irreps_out.simplify():
            raise ValueError(f"gated irreps must list their 0e channels first, got {irreps_out}")
        self.irreps_out = scalars + gated
        self.num_scalars = scalars.dim
        self.num_gates = gated.num_irreps
        self.irreps_in = (scalars + o3.Irreps(f"{self.num_gates}x0e") + gated).simplify()
        self._gated = [(mul, ir.dim) for mul, ir in gated]
        self.scalar_activation = normalized_activation("silu")
        self.gate_activation = normalized_activation("sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        scalars, gates, gated = torch.split(
            x, [self.num_scalars, self.num_gates, x.shape[1] - self.num_scalars - self.num_gates], 1
        )
        out = [self.scalar_activation(scalars)]
        gates = self.gate_activation(gates)
        start_gate = start = 0
        for mul, dim in self._gated:
            field = gated[:, start : start + mul * dim].reshape(n, mul, dim)
            gate = gates[:, start_gate : start_gate + mul].unsqueeze(-1)
            out.append((field * gate).reshape(n, mul * dim))
            start, start_gate = start + mul * dim, start_gate + mul
        return torch.cat(out, dim=1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.irreps_in} -> {self.irreps_out})"


class SmoothLeakyReLU(nn.Module):
    """f(x) = (1 + a) / 2 x + (1 - a) / 2 x (2 sigmoid(x) - 1), a smooth leaky ReLU of negative
    slope ``a`` (the attention activation of Equiformer). Elementwise."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.negative_slope
        return 0.5 * (1.0 + a) * x + 0.5 * (1.0 - a) * x * (2.0 * torch.sigmoid(x) - 1.0)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope:g}"


ACTIVATIONS = {
    "silu": nn.functional.silu,
    "sigmoid": torch.sigmoid,
    "smooth_leaky_relu": SmoothLeakyReLU(0.2),
}


@functools.cache
def normalized_activation(name: str) -> nn.Module:
    """The activation ``name`` of :data:`ACTIVATIONS` wrapped in e3nn's ``normalize2mom`` (scaled
    to unit second moment under N(0, 1) inputs). Built once per name and shared: the constant
    takes a million samples to compute and the module holds no tensors."""
    return normalize2mom(ACTIVATIONS[name])
