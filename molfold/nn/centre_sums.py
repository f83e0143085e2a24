"""Sums of edge values onto their centre atoms, and the gather that is its adjoint.

``sum_over_centres(values [E, ...], centre [E], num_atoms) -> [N, ...]`` and
``gather_centres(values [N, ...], centre [E]) -> [E, ...]`` are each other's adjoints, so each is
the backward of the other and both are differentiable to any order (forces, and force losses in
training).

They are registered as torch custom operators (``molfold::sum_over_centres``,
``molfold::gather_centres``) rather than written as ``index_add_`` / ``index_select``: a traced
graph (:mod:`molfold.compiled`) then keeps them as single calls into ATen's scatter and gather
kernels, and differentiating a traced graph again (compiled training) gives the other operator,
not ``index_add_``. Left to itself, Inductor's CPU code generator fuses a scatter into its
neighbours as an atomic add per element, which made the compiled Allegro 2-6x slower than eager
on the Cu benchmark cell. A gather, on the other hand, fuses well (each edge reads its centre's
row): inference graphs, which are not differentiated again, trace ``gather_centres`` as a plain
``index_select`` (:data:`INFERENCE_DECOMPOSITIONS`). In eager mode both cost the same as the ATen
calls they wrap.
"""

from __future__ import annotations

import torch
from torch.library import custom_op


@custom_op("molfold::sum_over_centres", mutates_args=())
def sum_over_centres(values: torch.Tensor, centre: torch.Tensor, num_atoms: int) -> torch.Tensor:
    """Sum of ``values`` [E, ...] over the edges of each centre: [num_atoms, ...]."""
    return values.new_zeros((num_atoms, *values.shape[1:])).index_add_(0, centre, values)


@sum_over_centres.register_fake
def _(values: torch.Tensor, centre: torch.Tensor, num_atoms: int) -> torch.Tensor:
    return values.new_empty((num_atoms, *values.shape[1:]))


@custom_op("molfold::gather_centres", mutates_args=())
def gather_centres(values: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Row ``centre[e]`` of ``values`` [N, ...] for every edge e: [E, ...]."""
    return values.index_select(0, centre)


@gather_centres.register_fake
def _(values: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    return values.new_empty((centre.shape[0], *values.shape[1:]))


def _keep_centre(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.centre = inputs[1]


def _keep_centre_and_atoms(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.centre = inputs[1]
    ctx.num_atoms = inputs[0].shape[0]


def _sum_backward(ctx, grad: torch.Tensor):
    return gather_centres(grad, ctx.centre), None, None


def _gather_backward(ctx, grad: torch.Tensor):
    return sum_over_centres(grad, ctx.centre, ctx.num_atoms), None


sum_over_centres.register_autograd(_sum_backward, setup_context=_keep_centre)
gather_centres.register_autograd(_gather_backward, setup_context=_keep_centre_and_atoms)


INFERENCE_DECOMPOSITIONS = {
    torch.ops.molfold.gather_centres.default: lambda values, centre: values.index_select(0, centre)
}
"""For ``make_fx`` of a graph that will not be differentiated again: the gather as an
``index_select``, which the compiler fuses into the kernels that read it (its derivative in that
graph is already traced, as ``sum_over_centres``)."""
