"""Training through one compiled graph: energies, forces and, by the compiler, their weight
gradients.

A force loss differentiates twice: forces are -dE/dr, and the loss on them is differentiated
again with respect to the weights. ``torch.compile`` cannot compile a function that itself calls
``torch.autograd.grad`` with ``create_graph``, so, as nequip's train-time compilation does
(``compile_mode: compile``: its model is unfolded by ``make_fx`` and the result given to
``torch.compile``), the forward pass and the force backward pass are first traced into one
graph of ATen operations whose inputs include the weights
(:func:`~molfold.compiled.trace.trace_trainable_core`). Inductor compiles that graph, and
AOTAutograd derives its backward: the second derivative, compiled as well. Everything around
the core (edge vectors, scale and shift, forces and stress from dE/dr_e, the loss) is the eager
potential's own code, so the compiled and eager training steps differ only in rounding
(``tests/test_compiled_training.py`` compares their weight gradients).

nequip advises against train-time compilation on CPUs (its documentation, PyTorch 2.6); molfold
tests it on CPU against eager gradients.
"""

from __future__ import annotations

import torch

from molfold.compiled.potential import warn_falling_back
from molfold.compiled.trace import (
    EdgeGradientCore,
    check_traceable,
    example_inputs,
    trainable_names,
)
from molfold.models.potential import Potential
from molfold.nn import centre_sums  # noqa: F401 - registers the custom ops the graph calls

WARM_UP_LARGE_EDGES = 4_200
"""Edges of the larger warm-up graph: above Inductor's 4,096-element reduction chunk."""


class CompiledEdgeGradient:
    """``(vectors [E, 3], edge_index [2, E], atom_types [N]) -> (per_atom [N], gradient
    [E, 3])`` of ``potential``, as :class:`~molfold.compiled.trace.EdgeGradientCore` with
    ``differentiable=True`` gives them, from one compiled graph whose inputs are the potential's
    live weights (so optimizer steps, loaded checkpoints and swapped-in averages all reach it).

    Traced and compiled on the first call, on the device of that call's inputs, with free
    numbers of atoms and edges (tens of seconds; Inductor's on-disk cache makes later runs
    faster). If compilation fails there, one RuntimeWarning says why and every call computes the
    same outputs eagerly. Not a module: it holds no weights of its own, and checkpoints do not
    see it. ConfigError at once for a model that cannot be compiled.
    """

    def __init__(self, potential: Potential) -> None:
        check_traceable(potential)
        self.potential = potential
        self.compiled = None
        self.eager: EdgeGradientCore | None = None
        self.names: list[str] = []
        self.checked = False

    def __call__(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, atom_types: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.eager is None:  # first call: the potential is on its final device now
            self.eager = EdgeGradientCore(self.potential, differentiable=True)
            self.names = trainable_names(self.eager)
            self._compile(vectors.device)
        if self.compiled is None:
            return self.eager(vectors, edge_index, atom_types)
        state = {**dict(self.eager.named_parameters()), **dict(self.eager.named_buffers())}
        weights = [state[name] for name in self.names]
        try:
            return self.compiled(weights, vectors, edge_index, atom_types)
        except Exception as error:  # noqa: BLE001 - Inductor compiles on this first call
            if self.checked:
                raise
            self._fall_back(error)
            return self.eager(vectors, edge_index, atom_types)
        finally:
            self.checked = True

    def warm_up(self, device: torch.device) -> None:
        """Compile now, on ``device``, for every size class a run will meet, so that no step
        waits for the compiler: Inductor's CPU code sums float32 reductions over more than
        4,096 elements with an extra-precision helper, so graphs of up to and of over 4,096
        edges are two compilations. The weights' gradients are left as they were."""
        grads = [p.grad for p in self.potential.parameters()]
        for num_atoms, num_edges in ((7, 38), (160, WARM_UP_LARGE_EDGES)):
            example = example_inputs(self.potential, device, num_atoms, num_edges)
            with torch.enable_grad():
                per_atom, gradient = self(*example)
                (per_atom.sum() + gradient.square().sum()).backward()
        for parameter, grad in zip(self.potential.parameters(), grads):
            parameter.grad = grad

    def _compile(self, device: torch.device) -> None:
        from molfold.compiled.trace import trace_trainable_core

        try:
            graph, names = trace_trainable_core(self.potential, device)
        except Exception as error:  # noqa: BLE001 - an untraceable operation: stay eager
            self._fall_back(error)
            return
        if names != self.names:
            raise RuntimeError(f"traced weights {names} differ from the model's {self.names}")
        self.compiled = torch.compile(graph, dynamic=True, fullgraph=True)

    def _fall_back(self, error: Exception) -> None:
        warn_falling_back("compiled training", "training the eager model", error, stacklevel=5)
        self.compiled, self.checked = None, True
