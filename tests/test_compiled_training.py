"""Compiled training (``compile=true``, molfold.compiled.training): the weight gradients of an
energy, force and stress loss through the compiled graph equal eager autograd's double
backward, the graph follows the live weights, failures fall back with one warning, and
``molfold train compile=true`` trains. One compilation (tens of seconds) serves most checks."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from ase.build import molecule
from torch_geometric.data import Batch

from molfold.cli import main
from molfold.compiled import training
from molfold.compiled.export import random_structure
from molfold.compiled.training import CompiledEdgeGradient
from molfold.data.neighbors import atoms_to_graph
from molfold.errors import ConfigError
from molfold.tasks.potential import PotentialSettings, PotentialTask
from molfold.tasks.property import PropertySettings, PropertyTask

from .common import TINY, make_potential, tiny_equiformer_potential


def training_batch() -> Batch:
    """A periodic cell and a molecule in one batch, as a training step sees them."""
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    cell = random_structure([1, 6, 8], 4.0, seed=3)
    return Batch.from_data_list([atoms_to_graph(a, 4.0) for a in (cell, ethanol)])


def loss_gradients(potential, batch, edge_gradient) -> tuple[dict, list[torch.Tensor]]:
    """Outputs and the weight gradients of a loss on energies, forces and stress, with fixed
    random targets (so that no term is trivially zero)."""
    generator = torch.Generator().manual_seed(5)
    potential.zero_grad()
    out = potential(batch, compute_forces=True, compute_stress=True, edge_gradient=edge_gradient)
    force_target = torch.randn(out["forces"].shape, generator=generator, dtype=torch.float64)
    stress_target = torch.randn(out["stress"].shape, generator=generator, dtype=torch.float64)
    loss = (
        (out["energy"] + 20.0).square().sum()
        + (out["forces"] - force_target.to(out["forces"])).square().sum()
        + (out["stress"] - stress_target.to(out["stress"])).square().sum()
    )
    loss.backward()
    return out, [p.grad.detach().clone() for p in potential.parameters()]


@pytest.fixture(scope="module")
def potential_and_core():
    potential = make_potential([1, 6, 8], seed=2, l_max=2).double().train()
    return potential, CompiledEdgeGradient(potential)


def assert_same(compiled, eager, rtol: float, atol: float) -> None:
    out_c, grads_c = compiled
    out_e, grads_e = eager
    for key in ("energy", "atomic_energy", "forces", "stress"):
        torch.testing.assert_close(out_c[key], out_e[key], rtol=rtol, atol=atol, msg=key)
    assert any(g.abs().max() > 0 for g in grads_e)
    for index, (g_c, g_e) in enumerate(zip(grads_c, grads_e)):
        torch.testing.assert_close(g_c, g_e, rtol=rtol, atol=atol, msg=f"parameter {index}")


def test_compiled_weight_gradients_equal_eager_double_backward(potential_and_core):
    potential, core = potential_and_core
    batch = training_batch()
    compiled = loss_gradients(potential, batch, core)
    assert core.compiled is not None, "the compiled graph was not used"
    assert_same(compiled, loss_gradients(potential, batch, None), rtol=1e-9, atol=1e-10)


def test_compiled_graph_follows_optimizer_steps_and_other_sizes(potential_and_core):
    potential, core = potential_and_core
    optimizer = torch.optim.SGD(potential.parameters(), lr=1e-3)
    batch = training_batch()
    loss_gradients(potential, batch, core)
    optimizer.step()  # new weights, in place, as Adam and EMA swaps change them
    smaller = Batch.from_data_list([atoms_to_graph(molecule("H2O"), 4.0)])
    for graphs in (batch, smaller):
        assert_same(
            loss_gradients(potential, graphs, core),
            loss_gradients(potential, graphs, None),
            rtol=1e-9,
            atol=1e-10,
        )


def test_compiler_failure_trains_eagerly_after_one_warning(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    # torch.compile itself is lazy: Inductor fails on the first call of what it returns
    monkeypatch.setattr(training.torch, "compile", lambda graph, **kwargs: no_compiler)
    potential = make_potential([1, 6, 8], seed=4).double().train()
    core = CompiledEdgeGradient(potential)
    batch = training_batch()
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here") as caught:
        first = loss_gradients(potential, batch, core)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(
            loss_gradients(potential, batch, core),
            loss_gradients(potential, batch, None),
            rtol=1e-12,
            atol=1e-12,
        )
    assert_same(first, loss_gradients(potential, batch, None), rtol=1e-12, atol=1e-12)


def test_only_potentials_of_strictly_local_models_compile_for_training():
    equiformer = tiny_equiformer_potential()
    with pytest.raises(ConfigError, match="Equiformer.* cannot be compiled yet"):
        PotentialTask(equiformer, PotentialSettings()).compile_model()
    with pytest.raises(ConfigError, match="compile=true compiles potentials.*task=property"):
        PropertyTask(torch.nn.Linear(1, 1), PropertySettings()).compile_model()


def test_train_command_with_compile_trains_and_tests(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", f"run_dir={run_dir}", *TINY, "compile=true"]) == 0
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["forces_mae"] > 0 and torch.isfinite(torch.tensor(metrics["forces_mae"]))
