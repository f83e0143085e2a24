"""The traced core of a compiled potential: energies and their edge-vector gradient in one graph.

:class:`EdgeGradientCore` is the part of a :class:`~molfold.models.potential.Potential` that runs
per call: from the edge vectors, the edge list and the atom types it gives the model's per-atom
outputs e_i and dE/dr_e, the derivative of E = sum_i scale[s_i] e_i with respect to every edge
vector, by autograd. Forces and stress follow from that gradient outside the graph
(:func:`~molfold.models.potential.forces_and_stress`), in the same code the eager potential uses,
so the compiled graph never sees positions, cells or periodic images.

:func:`trace_core` unfolds the forward pass and the force backward pass into one graph of ATen
operations (``make_fx``, symbolic sizes: atoms and edges stay free), which Inductor compiles
(:func:`molfold.compiled.potential.compile_potential`) or AOTInductor packages
(:mod:`molfold.compiled.package`). Tracing follows the recipe of nequip's ``nequip-compile``
(``nequip/utils/fx.py``): ``make_fx`` with symbolic shapes, real parameters and duck shaping off,
so a size that happens to equal a feature width is not fused with it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.errors import ConfigError
from molfold.models.potential import Potential
from molfold.nn.centre_sums import INFERENCE_DECOMPOSITIONS
from molfold.nn.strided import unroll_products

EXAMPLE_ATOMS = 7
EXAMPLE_EDGES = 38
"""Sizes of the example traced: any values work (the traced sizes are symbols); these equal no
feature width, which keeps accidental specialisation visible."""


class EdgeGradientCore(nn.Module):
    """``forward(vectors [E, 3] A, edge_index [2, E], atom_types [N]) -> (per_atom [N],
    gradient [E, 3])``: the model's per-atom outputs e_i before scale and shift, and
    d(sum_i scale[s_i] e_i)/dr_e in eV/A, both in the model dtype.

    With ``differentiable`` both outputs keep their graph to the weights (training: the force
    loss is differentiated through the gradient); otherwise the energies are detached."""

    def __init__(self, potential: Potential, differentiable: bool = False) -> None:
        super().__init__()
        self.model = potential.model
        self.differentiable = differentiable
        self.register_buffer("scales", potential.scales.to(potential.dtype))

    def forward(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = vectors.detach().requires_grad_(True)
        data = Data(edge_index=edge_index, **{G.EDGE_VECTORS: vectors})
        with torch.enable_grad():
            per_atom = self.model(data, atom_types)
            energy = (self.scales[atom_types] * per_atom).sum()
            (gradient,) = torch.autograd.grad(energy, [vectors], create_graph=self.differentiable)
        return (per_atom if self.differentiable else per_atom.detach()), gradient


def check_traceable(potential: Potential) -> None:
    """ConfigError unless ``potential`` can be compiled: its model must be strictly local (every
    per-atom energy a sum over the atom's own edges, as Allegro's is), so that the compiled graph
    needs nothing but the edges."""
    if not isinstance(potential, Potential):
        raise ConfigError(f"only potentials can be compiled, got {type(potential).__name__}")
    if not getattr(potential.model, "strictly_local", False):
        name = type(potential.model).__name__
        raise ConfigError(
            f"{name} cannot be compiled yet: molfold compiles strictly local potentials "
            "(Allegro); use the eager model"
        )


def example_inputs(
    potential: Potential,
    device: torch.device,
    num_atoms: int = EXAMPLE_ATOMS,
    num_edges: int = EXAMPLE_EDGES,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge vectors (random, inside r_max), edges and types of an example to trace with."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(num_edges, 3, generator=generator, dtype=torch.float64)
    lengths = 0.5 + (potential.r_max - 1.0) * torch.rand(num_edges, 1, generator=generator)
    vectors = directions / directions.norm(dim=1, keepdim=True) * lengths
    centre = torch.arange(num_edges) % num_atoms
    neighbour = (centre + 1 + torch.arange(num_edges) // num_atoms) % num_atoms
    atom_types = torch.arange(num_atoms) % len(potential.species)
    return (
        vectors.to(device=device, dtype=potential.dtype),
        torch.stack([neighbour, centre]).to(device),
        atom_types.to(device),
    )


def trace_core(potential: Potential, device: torch.device | str = "cpu") -> torch.fx.GraphModule:
    """One ATen graph of :class:`EdgeGradientCore` for ``potential`` (which is left as it is),
    with free numbers of atoms and edges, on ``device``; the weights are constants of the graph,
    and the gathers of centre values are plain ``index_select`` calls that the compiler fuses
    (:data:`~molfold.nn.centre_sums.INFERENCE_DECOMPOSITIONS`)."""
    check_traceable(potential)
    device = torch.device(device)
    core = EdgeGradientCore(unroll_products(copy.deepcopy(potential).to(device).eval()))
    for parameter in core.parameters():
        parameter.requires_grad_(False)
    return _symbolic_trace(core, example_inputs(potential, device), INFERENCE_DECOMPOSITIONS)


def trace_trainable_core(
    potential: Potential, device: torch.device | str = "cpu"
) -> tuple[torch.fx.GraphModule, list[str]]:
    """One ATen graph ``graph(weights, vectors, edge_index, atom_types) -> (per_atom,
    gradient)`` of a differentiable :class:`EdgeGradientCore`, whose first input is the list of
    the core's parameters and floating-point buffers by the names returned with it. The graph
    holds the forward pass and the force backward pass as plain operations, so a compiler can
    differentiate it once more (the weight gradient of a force loss)."""
    check_traceable(potential)
    device = torch.device(device)
    core = EdgeGradientCore(
        unroll_products(copy.deepcopy(potential).to(device)), differentiable=True
    )
    names = trainable_names(core)
    state = {**dict(core.named_parameters()), **dict(core.named_buffers())}

    def functional(
        weights: list[torch.Tensor],
        vectors: torch.Tensor,
        edge_index: torch.Tensor,
        atom_types: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.functional_call(
            core, dict(zip(names, weights)), (vectors, edge_index, atom_types)
        )

    weights = [state[name].detach() for name in names]
    example = (weights, *example_inputs(potential, device))
    return _symbolic_trace(functional, example), names


def trainable_names(core: nn.Module) -> list[str]:
    """Names of ``core``'s parameters and floating-point buffers: the weights a trainable trace
    takes as inputs (buffers too, so that swapping in averaged weights reaches the graph)."""
    buffers = [name for name, b in core.named_buffers() if b.is_floating_point()]
    return [name for name, _ in core.named_parameters()] + buffers


def _symbolic_trace(
    function, example: tuple, decompositions: dict | None = None
) -> torch.fx.GraphModule:
    """``make_fx`` of ``function`` on ``example`` with symbolic sizes and duck shaping off,
    operators in ``decompositions`` traced as what it maps them to."""
    config = torch.fx.experimental._config
    duck_shape = config.use_duck_shape
    config.use_duck_shape = False
    try:
        return make_fx(
            function,
            decomposition_table=decompositions,
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,
        )(*example)
    finally:
        config.use_duck_shape = duck_shape
