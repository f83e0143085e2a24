"""Subprocess workers of scripts/bench_equiformer.py: each runs in a fresh process, reads a JSON
spec and writes a JSON result (``python scripts/bench_equiformer_workers.py --worker KIND SPEC``,
or ``scripts/bench_equiformer.py --worker KIND SPEC``, which calls the same ``worker_main``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_machine import time_calls  # scripts/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()
QM9_SPECIES = [1, 6, 7, 8, 9]
OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Workers' OpenMP: idle threads sleep instead of spinning. With another process on one of two
cores, spinning made 2-thread runs ~15x slower than 1-thread ones (measured here)."""


def run_worker(kind: str, spec: dict, workdir: Path, threads: int) -> dict:
    """``THIS --worker kind`` in a fresh process; returns the JSON it writes (or the error)."""
    path = workdir / f"spec_{kind}_{time.monotonic_ns()}.json"
    out = path.with_suffix(".out.json")
    path.write_text(json.dumps({**spec, "out": str(out), "threads": threads}))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore", **OMP_ENV}
    log = path.with_suffix(".log")
    with open(log, "w") as handle:
        proc = subprocess.run(
            [sys.executable, str(THIS), "--worker", kind, str(path)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text()[-1500:]
        return {"error": f"worker {kind} exited {proc.returncode}; log {log}:\n{tail}"}
    return json.loads(out.read_text())


def model_setup(overrides: list[str], structures: list | None = None):
    """Config, task class, settings, optim and the built model, statistics from ``structures``
    (or from a DataModule when None)."""
    from molfold.cli import compose
    from molfold.data.datamodule import parse_data_config
    from molfold.data.sources import source
    from molfold.models.registry import build_model
    from molfold.train.run import _parse_sections, resolve_statistics

    config = compose("train", overrides)
    _, entry, hparams, task_cls, settings, optim = _parse_sections(config)
    _, options = parse_data_config(config["data"])
    units = source(config["data"]["format"]).target_units(options)
    statistics = {
        "data": config["data"]["name"],
        **task_cls.fit_statistics(structures, settings, units),
    }
    if config["data"]["format"] == "qm9":
        statistics["species"] = QM9_SPECIES  # the paper's one-hot over H C N O F
    hparams = resolve_statistics(hparams, statistics)
    model = build_model(entry.name, hparams, statistics, "float32", entry.kind)
    return config, task_cls, settings, optim, model


# ----------------------------------------------------------------------------------------------
# workers (fresh processes)
# ----------------------------------------------------------------------------------------------


def _rss_peak_reset() -> str:
    """Reset the kernel's peak-RSS mark (VmHWM); the method the reading will use."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM (/proc/self/status) minus VmRSS, both from before the first call"
    except OSError:
        return "ru_maxrss (resource.getrusage; includes any earlier peak)"


def _rss_bytes(field: str) -> int:
    import resource

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_throughput(spec: dict) -> dict:
    import torch
    from torch_geometric.data import Batch

    torch.set_num_threads(spec["threads"])
    structures = torch.load(spec["structures"], weights_only=False)[: spec["batch"]]
    config, task_cls, settings, optim, model = model_setup(spec["overrides"], structures)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    task = task_cls(model, settings, optim, None)
    batch = Batch.from_data_list(structures).to(device)
    potential = task_cls.name == "potential"
    if spec["mode"] == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)

        def step():
            loss, _ = task.loss(task(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            if potential:
                model(batch, compute_forces=True)
            else:
                with torch.no_grad():
                    model(batch)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # peak from before the first call: activations, autograd graphs, AdamW state, caches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base, method = torch.cuda.memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        base, method = _rss_bytes("VmRSS"), _rss_peak_reset()
    for _ in range(spec["warmup"]):
        step()
    sync()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_bytes("VmHWM")
    median = float(np.median(times))
    return {
        "setting": spec["setting"],
        "mode": spec["mode"],
        "batch": len(structures),
        "atoms": int(batch.num_nodes),
        "edges": int(batch.edge_index.shape[1]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "median_s": median,
        "times_s": times,
        "molecules_per_s": len(structures) / median,
        "peak_memory_increase_MiB": (peak - base) / 2**20,
        "memory_method": method,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


class _EpochTimer:
    """Lightning callback (built lazily): wall time and watched metrics at each epoch end."""

    def __new__(cls, watch: list[str]):
        from lightning.pytorch.callbacks import Callback

        class Timer(Callback):
            def __init__(self):
                self.rows, self.start = [], None

            def on_fit_start(self, trainer, module):
                self.start = time.perf_counter()

            def on_train_epoch_end(self, trainer, module):
                metrics = trainer.callback_metrics
                row = {
                    "epoch": trainer.current_epoch,
                    "step": trainer.global_step,
                    "wall_s": time.perf_counter() - self.start,
                }
                row.update({k: float(metrics[k]) for k in watch if k in metrics})
                self.rows.append(row)

        return Timer()


def worker_train(spec: dict) -> dict:
    """compose + molfold.train.run.train (what ``molfold train`` runs) with an epoch timer."""
    import torch

    import molfold.train.run as run
    from molfold.cli import compose

    torch.set_num_threads(spec["threads"])
    timer = _EpochTimer(spec["watch"])
    build = run.build_trainer

    def build_with_timer(config, run_config, run_dir):
        trainer = build(config, run_config, run_dir)
        trainer.callbacks.append(timer)
        return trainer

    run.build_trainer = build_with_timer
    start = time.perf_counter()
    config = compose("train", spec["overrides"])
    test = run.train(config)
    return {
        "epochs": timer.rows,
        "test": test,
        "total_wall_s": time.perf_counter() - start,
        "run_dir": config["run_dir"],
        "overrides": spec["overrides"],
    }


def install_reference_shims() -> dict:
    """torch_scatter / torch_cluster / ocpmodels stand-ins, in sys.modules of this process only."""
    import types

    import torch
    from torch_geometric.utils import scatter as pyg_scatter

    def scatter(src, index, dim=0, dim_size=None, reduce="sum"):
        return pyg_scatter(src, index, dim=dim, dim_size=dim_size, reduce=reduce)

    def radius_graph(pos, r, batch=None, max_num_neighbors=32, loop=False, **_):
        batch = (
            torch.zeros(len(pos), dtype=torch.long, device=pos.device) if batch is None else batch
        )
        near = (torch.cdist(pos, pos) < r) & (batch[:, None] == batch[None, :])
        near.fill_diagonal_(loop)
        centre, neighbour = near.nonzero().T
        return torch.stack([neighbour, centre])  # torch_cluster: row 0 source j, row 1 target i

    class RadialBasis:  # only the Bessel-basis QM9 models use it
        def __init__(self, *args, **kwargs):
            raise RuntimeError("the ocpmodels RadialBasis (Bessel basis) is not shimmed")

    modules = {
        "torch_scatter": {"scatter": scatter},
        "torch_cluster": {"radius_graph": radius_graph},
    }
    for name in (
        "ocpmodels",
        "ocpmodels.models",
        "ocpmodels.models.gemnet",
        "ocpmodels.models.gemnet.layers",
        "ocpmodels.models.gemnet.layers.radial_basis",
    ):
        modules[name] = {"__path__": []}
    modules["ocpmodels.models.gemnet.layers.radial_basis"]["RadialBasis"] = RadialBasis
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
    return {
        "torch_scatter.scatter": "torch_geometric.utils.scatter (same sum reduction)",
        "torch_cluster.radius_graph": "dense torch.cdist < r within each graph (inside the "
        "reference's forward, so it is timed; its own time is reported)",
        "ocpmodels...RadialBasis": "stub that raises (Bessel basis only; QM9 homo uses Gaussian)",
        "nets/__init__.py": "not executed (imports the MD17/OC20 models); nets/ loaded as a "
        "namespace package and graph_attention_transformer imported from it",
    }


def _median_time(fn, warmup: int, repeats: int) -> float:
    return float(np.median(time_calls(fn, warmup, repeats)))


def worker_reference(spec: dict) -> dict:
    import importlib
    import types

    import torch
    from torch_geometric.data import Batch

    torch.set_num_threads(spec["threads"])
    shims = install_reference_shims()
    package = types.ModuleType("eqref_nets")
    package.__path__ = [str(Path(spec["reference"]) / "nets")]
    sys.modules["eqref_nets"] = package
    gat = importlib.import_module("eqref_nets.graph_attention_transformer")
    structures = torch.load(spec["structures"], weights_only=False)[: spec["batch"]]
    _, _, _, _, ours = model_setup(spec["overrides"], structures)
    torch.manual_seed(0)
    theirs = gat.graph_attention_transformer_nonlinear_l2(
        irreps_in="5x0e", radius=5.0, num_basis=128, task_mean=0.0, task_std=1.0
    )
    batch = Batch.from_data_list(structures)
    pos, z, index = batch.pos.float(), batch.z, batch.batch
    edges_ref = gat.radius_graph(pos, r=5.0, batch=index, max_num_neighbors=1000)
    calls = {
        "molfold": (lambda: ours(batch)["target"].sum(), ours),
        "reference": (lambda: theirs(None, pos, index, z).sum(), theirs),
    }
    result = {
        "shims": shims,
        "batch": len(structures),
        "atoms": int(batch.num_nodes),
        "edges_molfold": int(batch.edge_index.shape[1]),
        "edges_reference": int(edges_ref.shape[1]),
        "radius_graph_shim_s": _median_time(
            lambda: gat.radius_graph(pos, r=5.0, batch=index, max_num_neighbors=1000),
            1,
            spec["repeats"],
        ),
    }
    for name, (call, module) in calls.items():
        module.eval()
        with torch.no_grad():
            forward = _median_time(call, spec["warmup"], spec["repeats"])
        module.train()
        backward = _median_time(
            lambda call=call: call().backward(), spec["warmup"], spec["repeats"]
        )
        result[name] = {
            "parameters": sum(p.numel() for p in module.parameters()),
            "forward_s": forward,
            "forward_backward_s": backward,
        }
    for key in ("forward_s", "forward_backward_s"):
        result[f"ratio_{key}_molfold_over_reference"] = (
            result["molfold"][key] / result["reference"][key]
        )
    result["threads"] = torch.get_num_threads()
    return result


def worker_epoch(spec: dict) -> dict:
    import torch
    from torch_geometric.loader import DataLoader

    structures = torch.load(spec["structures"], weights_only=False)
    _, task_cls, settings, optim, model = model_setup(spec["overrides"], structures)
    model.cuda().train()
    task = task_cls(model, settings, optim, None)
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    loader = DataLoader(structures, batch_size=128, shuffle=True)
    start = time.perf_counter()
    for batch in loader:
        batch = batch.cuda()
        loss, _ = task.loss(task(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return {
        "molecules": len(structures),
        "minutes": (time.perf_counter() - start) / 60,
        "device": torch.cuda.get_device_name(),
    }


WORKERS = {
    "throughput": worker_throughput,
    "train": worker_train,
    "reference": worker_reference,
    "epoch": worker_epoch,
}


def worker_main(kind: str, path: str) -> int:
    """Run worker ``kind`` on the spec at ``path``; write its result to the spec's ``out``."""
    spec = json.loads(Path(path).read_text())
    Path(spec["out"]).write_text(json.dumps(WORKERS[kind](spec)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--worker":
        sys.exit(f"usage: {sys.argv[0]} --worker KIND SPEC")
    sys.exit(worker_main(sys.argv[2], sys.argv[3]))
