"""Benchmark worker for the reference Allegro (PyPI ``nequip-allegro``), molfold's yardstick.

Runs with the benchmark's own environment, ``bench_env/`` at the repository root (gitignored)::

    python3 -m venv bench_env
    bench_env/bin/pip install torch==2.13.0          # first: a bare torch pulls multi-GB CUDA
    bench_env/bin/pip install nequip-allegro==0.8.3  # brings nequip 0.19.1, e3nn 0.6.0
    bench_env/bin/pip install -e .                   # molfold, for the molfold side of the bench

Subcommands (``bench_env/bin/python scripts/bench_allegro_reference.py <cmd> --help``):

``speed``
    One case: build the reference model at the benchmark hyperparameters (:data:`HPARAMS`) in
    float32 or float64, batch one of the :data:`SYSTEMS`, time energy + forces (+ stress, which
    nequip's ``ForceStressOutput`` always computes) per call, and print one JSON line::

        bench_env/bin/python scripts/bench_allegro_reference.py speed --system cu864 --dtype float32

    ``rss_delta_mib`` is the rise of this process's peak resident set (VmHWM, reset just before
    the warm-up calls) over its RSS at that point: what energy + forces needed on top of the built
    (and, with ``--mode aotinductor``, compiled) model and batch. ``--l-max`` changes l_max from
    the tutorial's 1. Run one case per process (``sweep`` does).
``sweep``
    Every system x dtype, each in a fresh subprocess; prints (and with ``--out`` appends) one JSON
    line per case. ``--worker`` runs another script with the same ``speed`` interface instead
    (the molfold side), so both packages are measured by the same driver; ``--malloc-tuned``
    gives the children :data:`MALLOC_TUNED_ENV`; arguments after ``--`` go to the worker::

        bench_env/bin/python scripts/bench_allegro_reference.py sweep --out runs/ref.jsonl \\
            -- --repeats 20
``train``
    Train the reference with ``nequip-train`` and
    ``scripts/bench_configs/nequip_allegro_aspirin.yaml`` on an MD17-layout ``.npz`` (kcal/mol;
    default ``data/aspirin_xtb_500K.npz``) within a wall-clock budget, on a fixed split of frame
    indices, then evaluate the best (EMA) checkpoint on the test frames and print one JSON line
    with energy MAE (meV) and force MAE (meV/A)::

        bench_env/bin/python scripts/bench_allegro_reference.py train --budget-s 600 \\
            --split runs/aspirin_split.npz --workdir runs/allegro_ref_aspirin
``evaluate``
    Only the evaluation step, for an existing checkpoint.

The functions above the ``reference side`` marker need only numpy, ase and scipy (RDKit for the
aspirin fallback), not nequip, so molfold's own benchmark worker can import this file
(``importlib``) and use the very same systems, split and timing rules: :func:`build_system`,
:func:`system_summary`, :func:`make_split`, :func:`load_split`, :func:`read_md17_ev`,
:func:`time_calls`, :func:`timing_record`, :func:`rss_mib`, :func:`sweep`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from bench_machine import time_calls  # scripts/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
ASPIRIN_NPZ = REPO / "data" / "aspirin_xtb_500K.npz"
TRAIN_CONFIG = REPO / "scripts" / "bench_configs" / "nequip_allegro_aspirin.yaml"

SYSTEMS = ("aspirin32", "water192", "cu864")
DTYPES = ("float32", "float64")

HPARAMS = {
    "r_max": 5.0,
    "num_bessels": 8,
    "polynomial_cutoff_p": 6,
    "radial_chemical_embed_dim": 64,
    "scalar_embed_mlp_hidden": [64],
    "l_max": 1,
    "parity": True,
    "num_layers": 2,
    "num_scalar_features": 64,
    "num_tensor_features": 32,
    "allegro_mlp_hidden": [64],
    "readout_mlp_hidden": [64],
    "nonlinearity": "silu",
    "tp_path_channel_coupling": True,
}
"""The benchmark hyperparameters: those of allegro's current ``configs/tutorial.yaml``.
62,464 parameters for 4 species (62,400 for H, C, O; 16,384 embedding + basis parameters differ
by 64 per species)."""

KCAL_PER_MOL_TO_EV = 0.04336410390059322
"""ase.units.kcal / ase.units.mol (CODATA 2014), the factor molfold.data.sources.md17 uses."""

MALLOC_TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
"""glibc: serve allocations up to 32 MiB (the maximum) from the heap and never give freed heap
back to the OS, so large temporary tensors stop costing page faults on every call."""


# ====================================================================================
# shared with molfold's side: systems, split, timing (numpy + ase only)
# ====================================================================================


def aspirin_molecule(seed: int = 42):
    """One aspirin molecule (21 atoms), RDKit ETKDG + MMFF94 (used until the npz file exists)."""
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O"))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError("RDKit could not embed aspirin")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    symbols = [atom.GetSymbol() for atom in mol.GetAtoms()]
    return Atoms(symbols, positions=mol.GetConformer().GetPositions())


def aspirin_copies(n: int = 32, npz: Path = ASPIRIN_NPZ, seed: int = 0):
    """``n`` aspirin structures (non-periodic, no cell) and where they came from.

    From ``npz`` (MD17 layout, ``z`` and ``R`` in Angstrom): frames spread evenly over the
    trajectory, ``np.linspace(0, F - 1, n)`` rounded down. Without the file: one RDKit geometry,
    each copy rattled by 0.05 A (ase, seed ``seed + copy``).
    """
    from ase import Atoms

    if Path(npz).is_file():
        with np.load(npz) as f:
            z, R = np.asarray(f["z"]), np.asarray(f["R"])
        frames = np.linspace(0, len(R) - 1, n).astype(int)
        return [Atoms(numbers=z, positions=R[k]) for k in frames], f"{Path(npz).name}:evenly_spaced"
    base = aspirin_molecule()
    copies = []
    for k in range(n):
        atoms = base.copy()
        atoms.rattle(stdev=0.05, seed=seed + k)
        copies.append(atoms)
    return copies, "rdkit_etkdg_mmff_rattled"


def water_box(n_side: int = 4, density_g_cm3: float = 1.0, seed: int = 0, min_dist: float = 1.5):
    """Periodic cubic box of ``n_side**3`` waters (64 -> 192 atoms, L = 12.42 A at 1 g/cm3).

    Molecules (ase.build.molecule('H2O')) centred on a simple cubic grid, each shifted by up to
    +-0.2 A per axis and randomly rotated (numpy default_rng(seed)); a placement is redrawn while
    an atom would come closer than ``min_dist`` A to an atom of another molecule (minimum image).
    """
    from ase import Atoms
    from ase.build import molecule
    from scipy.spatial.transform import Rotation

    h2o = molecule("H2O")
    h2o.positions -= h2o.get_center_of_mass()
    mass_g = n_side**3 * h2o.get_masses().sum() / 6.02214076e23
    length = (mass_g / density_g_cm3 * 1e24) ** (1.0 / 3.0)  # cm3 -> A3
    spacing = length / n_side
    rng = np.random.default_rng(seed)
    placed = np.zeros((0, 3))
    for ix in range(n_side):
        for iy in range(n_side):
            for iz in range(n_side):
                for _ in range(1000):
                    centre = (np.array([ix, iy, iz]) + 0.5) * spacing + rng.uniform(-0.2, 0.2, 3)
                    rot = Rotation.from_quat(rng.normal(size=4)).as_matrix()
                    new = h2o.positions @ rot.T + centre
                    diff = new[:, None, :] - placed[None, :, :]
                    diff -= length * np.round(diff / length)
                    if placed.size == 0 or np.linalg.norm(diff, axis=-1).min() >= min_dist:
                        break
                else:
                    raise RuntimeError("could not place a water molecule")
                placed = np.concatenate([placed, new])
    symbols = h2o.get_chemical_symbols() * n_side**3
    atoms = Atoms(symbols, positions=placed, cell=[length] * 3, pbc=True)
    atoms.wrap()
    return atoms


def copper_cell(reps: int = 6, rattle: float = 0.05, seed: int = 0):
    """fcc Cu, a = 3.61 A, cubic cell x reps^3 (6 -> 864 atoms), rattled (ase, seed)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (reps, reps, reps)
    atoms.rattle(stdev=rattle, seed=seed)
    return atoms


def build_system(name: str, seed: int = 0, aspirin_npz: Path = ASPIRIN_NPZ):
    """The structures of one benchmark system, all evaluated together as one batch.

    Returns ``(structures, source)``: a list of ``ase.Atoms`` and a string saying where the
    geometry came from (report it with the timings: both sides must use the same).

    - ``aspirin32``: 32 aspirin molecules (21 atoms each, 672 atoms), non-periodic, see
      :func:`aspirin_copies`;
    - ``water192``: one periodic box of 64 waters at 1 g/cm3, see :func:`water_box`;
    - ``cu864``: one periodic fcc Cu cell of 864 atoms, see :func:`copper_cell`.
    """
    if name == "aspirin32":
        return aspirin_copies(32, aspirin_npz, seed)
    if name == "water192":
        return [water_box(4, 1.0, seed)], "ase_grid_random_rotations"
    if name == "cu864":
        return [copper_cell(6, 0.05, seed)], "ase_bulk_rattled_0.05"
    raise ValueError(f"unknown system {name!r}; choose from {SYSTEMS}")


def system_summary(structures: Sequence, r_max: float) -> dict:
    """Structures, atoms, directed edges within r_max, mean neighbours and species of a batch."""
    from ase.neighborlist import neighbor_list

    n_edges = sum(len(neighbor_list("i", atoms, r_max)) for atoms in structures)
    n_atoms = sum(len(atoms) for atoms in structures)
    numbers = sorted({int(z) for atoms in structures for z in atoms.numbers})
    return {
        "n_structures": len(structures),
        "n_atoms": n_atoms,
        "n_edges": n_edges,
        "avg_num_neighbors": n_edges / n_atoms,
        "atomic_numbers": numbers,
        "periodic": bool(structures[0].pbc.any()),
    }


def read_md17_ev(path: Path) -> dict:
    """An MD17-layout npz (``z``, ``R`` A, ``E`` kcal/mol, ``F`` kcal/mol/A) in eV and eV/A."""
    with np.load(path) as f:
        return {
            "z": np.asarray(f["z"], dtype=np.int64),
            "R": np.asarray(f["R"], dtype=np.float64),
            "E": np.asarray(f["E"], dtype=np.float64).reshape(-1) * KCAL_PER_MOL_TO_EV,
            "F": np.asarray(f["F"], dtype=np.float64) * KCAL_PER_MOL_TO_EV,
        }


def make_split(n_frames: int, n_train: int, n_val: int, n_test: int | None = None, seed: int = 0):
    """Disjoint train/val/test frame indices from ``np.random.default_rng(seed).permutation``.

    ``n_test=None`` takes every remaining frame. Save with ``np.savez(path, **split)``.
    """
    if n_test is None:
        n_test = n_frames - n_train - n_val
    if n_train + n_val + n_test > n_frames:
        raise ValueError(f"split {n_train}+{n_val}+{n_test} exceeds {n_frames} frames")
    perm = np.random.default_rng(seed).permutation(n_frames)
    return {
        "train": np.sort(perm[:n_train]),
        "val": np.sort(perm[n_train : n_train + n_val]),
        "test": np.sort(perm[n_train + n_val : n_train + n_val + n_test]),
    }


def load_split(path: Path) -> dict:
    """Frame indices from ``.npz`` or ``.json`` with keys ``train``, ``val``, ``test``."""
    path = Path(path)
    if path.suffix == ".json":
        raw = json.loads(path.read_text())
    else:
        with np.load(path) as f:
            raw = {k: f[k] for k in f.files}
    split = {k: np.asarray(raw[k], dtype=np.int64).reshape(-1) for k in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if np.intersect1d(split[a], split[b]).size:
            raise ValueError(f"{path}: {a} and {b} frames overlap")
    return split


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> float:
    """Reset this process's peak-RSS mark (Linux: ``5`` into /proc/self/clear_refs) and return
    the current RSS, MiB; where that is impossible, the peak so far (:func:`rss_mib`). After it,
    :func:`peak_rss_mib` is the peak since this call, so work done before (a compilation) does
    not hide what the calls need."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return _status_mib("VmRSS") or rss_mib()
    except OSError:
        return rss_mib()


def peak_rss_mib() -> float:
    """Peak RSS since the last :func:`reset_peak_rss` (VmHWM), MiB; else :func:`rss_mib`."""
    return _status_mib("VmHWM") or rss_mib()


def timing_record(times: list[float], n_structures: int, n_atoms: int) -> dict:
    """Median time per call and the derived throughputs."""
    median = statistics.median(times)
    return {
        "time_median_s": median,
        "time_min_s": min(times),
        "time_max_s": max(times),
        "structures_per_s": n_structures / median,
        "atoms_per_s": n_atoms / median,
    }


def speed_record(
    package: str,
    args,
    call: Callable[[], dict],
    structures_source: tuple[dict, str],
    build_s: float,
    batch_s: float,
    versions: dict,
    **extra,
) -> dict:
    """Time ``call`` (one energy + forces evaluation returning ``energy`` and ``forces``) and
    return the JSON record both workers print, so their fields are the same by construction."""
    import torch

    summary, source = structures_source
    outputs: dict = {}
    rss_before = reset_peak_rss()
    times = time_calls(lambda: outputs.update(call()), args.warmup, args.repeats)
    rss_after = peak_rss_mib()
    forces = outputs["forces"].detach()
    return {
        "package": package,
        "system": args.system,
        "dtype": args.dtype,
        "geometry_source": source,
        **summary,
        **extra,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeats": args.repeats,
        **timing_record(times, summary["n_structures"], summary["n_atoms"]),
        "times_s": [round(t, 5) for t in times],
        "rss_peak_mib": rss_after,
        "rss_before_calls_mib": rss_before,
        "rss_delta_mib": rss_after - rss_before,
        "model_build_s": build_s,
        "batch_build_s": batch_s,
        "energy_dtype": str(outputs["energy"].dtype),
        "forces_dtype": str(forces.dtype),
        "forces_mean_abs": float(forces.abs().mean()),
        "net_force_max": float(forces.sum(0).abs().max()),
        "versions": versions,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
    }


def sweep(
    worker: Path,
    python: str = sys.executable,
    systems: Sequence[str] = SYSTEMS,
    dtypes: Sequence[str] = DTYPES,
    extra_args: Sequence[str] = (),
    env: dict | None = None,
    out: Path | None = None,
) -> list[dict]:
    """Run ``python worker speed --system S --dtype D *extra_args`` in a fresh process per case.

    The worker prints its result as the last line of stdout (one JSON object). ``env`` is added to
    the environment of the children (e.g. :data:`MALLOC_TUNED_ENV`).
    """
    results = []
    child_env = dict(os.environ, **(env or {}))
    for system in systems:
        for dtype in dtypes:
            cmd = [python, str(worker), "speed", "--system", system, "--dtype", dtype, *extra_args]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env)
            if proc.returncode != 0:
                record = {"system": system, "dtype": dtype, "error": proc.stderr[-2000:]}
            else:
                record = json.loads(proc.stdout.strip().splitlines()[-1])
            record["malloc_env"] = {k: v for k, v in (env or {}).items() if k.startswith("MALLOC")}
            print(json.dumps(record), flush=True)
            if out is not None:
                with open(out, "a") as f:
                    f.write(json.dumps(record) + "\n")
            results.append(record)
    return results


# ====================================================================================
# reference side: nequip-allegro (imports nequip lazily; run with bench_env's python)
# ====================================================================================


def _setup_nequip():
    """nequip's global state (float64 default dtype for data, TF32 off); before building models."""
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)


def type_names_for(atomic_numbers: Sequence[int]) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in sorted(atomic_numbers)]


def reference_model_kwargs(hp: dict = HPARAMS) -> dict:
    """:data:`HPARAMS` as keyword arguments of ``allegro.model.AllegroModel`` (0.8.3)."""

    def depth_width(hidden):
        return len(hidden), (hidden[0] if hidden else 1)

    se_d, se_w = depth_width(hp["scalar_embed_mlp_hidden"])
    al_d, al_w = depth_width(hp["allegro_mlp_hidden"])
    ro_d, ro_w = depth_width(hp["readout_mlp_hidden"])
    return {
        "r_max": hp["r_max"],
        "radial_chemical_embed": {
            "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
            "num_bessels": hp["num_bessels"],
            "bessel_trainable": False,
            "polynomial_cutoff_p": hp["polynomial_cutoff_p"],
        },
        "radial_chemical_embed_dim": hp["radial_chemical_embed_dim"],
        "scalar_embed_mlp_hidden_layers_depth": se_d,
        "scalar_embed_mlp_hidden_layers_width": se_w,
        "scalar_embed_mlp_nonlinearity": hp["nonlinearity"],
        "l_max": hp["l_max"],
        "parity": hp["parity"],
        "num_layers": hp["num_layers"],
        "num_scalar_features": hp["num_scalar_features"],
        "num_tensor_features": hp["num_tensor_features"],
        "allegro_mlp_hidden_layers_depth": al_d,
        "allegro_mlp_hidden_layers_width": al_w,
        "allegro_mlp_nonlinearity": hp["nonlinearity"],
        "tp_path_channel_coupling": hp["tp_path_channel_coupling"],
        "readout_mlp_hidden_layers_depth": ro_d,
        "readout_mlp_hidden_layers_width": ro_w,
        "readout_mlp_nonlinearity": hp["nonlinearity"],
    }


def build_reference_model(
    type_names: Sequence[str],
    model_dtype: str,
    avg_num_neighbors: float,
    per_type_energy_scales: float | dict | None = 1.0,
    per_type_energy_shifts: float | dict | None = 0.0,
    seed: int = 0,
    hp: dict = HPARAMS,
):
    """``allegro.model.AllegroModel`` (``GraphModel`` around ``ForceStressOutput``), eval mode.

    Parameters are built in ``model_dtype``; nequip keeps the data (positions, cell) and the
    per-atom energy scale/shift in float64 either way.
    """
    from allegro.model import AllegroModel

    _setup_nequip()
    model = AllegroModel(
        seed=seed,
        model_dtype=model_dtype,
        type_names=list(type_names),
        avg_num_neighbors=avg_num_neighbors,
        per_type_energy_scales=per_type_energy_scales,
        per_type_energy_shifts=per_type_energy_shifts,
        **reference_model_kwargs(hp),
    )
    return model.eval()


def reference_batch(structures: Sequence, type_names: Sequence[str], r_max: float):
    """ase.Atoms -> one batched nequip ``AtomicDataDict`` with atom types and neighbour lists.

    Same path as nequip's ASE calculator and datasets: ``from_ase`` (float64), then the
    ``ChemicalSpeciesToAtomTypeMapper`` and ``NeighborListTransform`` (matscipy) transforms per
    structure, then ``AtomicDataDict.batched_from_list``.
    """
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

    _setup_nequip()
    type_mapper = ChemicalSpeciesToAtomTypeMapper(model_type_names=list(type_names))
    neighbors = NeighborListTransform(r_max=r_max)
    frames = [neighbors(type_mapper(from_ase(atoms))) for atoms in structures]
    return AtomicDataDict.batched_from_list(frames)


def _versions() -> dict:
    from importlib.metadata import version

    import torch

    return {
        "nequip": version("nequip"),
        "nequip-allegro": version("nequip-allegro"),
        "e3nn": version("e3nn"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def cmd_speed(args) -> dict:
    if args.mode == "aotinductor":
        # nequip's own check after compiling compares every output, and the stress of a batch
        # without cells is NaN on both sides, so it fails for the molecules: aoti_reference
        # compares energies and forces itself (read by nequip at import, so set it first)
        os.environ.setdefault("NEQUIP_SKIP_AOTI_MODEL_CHECK", "1")
    import torch
    from nequip.data import AtomicDataDict

    torch.set_num_threads(args.threads)
    structures, source = build_system(args.system, args.seed)
    summary = system_summary(structures, HPARAMS["r_max"])
    type_names = type_names_for(args.species or summary["atomic_numbers"])

    t0 = time.perf_counter()
    model = build_reference_model(
        type_names, args.dtype, summary["avg_num_neighbors"], hp={**HPARAMS, "l_max": args.l_max}
    )
    build_s = time.perf_counter() - t0
    reference_params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    batch = reference_batch(structures, type_names, HPARAMS["r_max"])
    batch_s = time.perf_counter() - t0
    assert AtomicDataDict.num_edges(batch) == summary["n_edges"], "neighbour lists disagree"

    compile_s = None
    if args.mode == "aotinductor":
        t0 = time.perf_counter()
        model, batch = aoti_reference(model, batch)
        compile_s = time.perf_counter() - t0

    def energy_and_forces() -> dict:
        out = model(batch)
        return {
            "energy": out[AtomicDataDict.TOTAL_ENERGY_KEY],
            "forces": out[AtomicDataDict.FORCE_KEY],
        }

    return speed_record(
        "nequip-allegro" + ("" if args.mode == "eager" else f" ({args.mode})"),
        args,
        energy_and_forces,
        (summary, source),
        build_s,
        batch_s,
        _versions(),
        type_names=type_names,
        params=reference_params,
        mode=args.mode,
        compile_s=compile_s,
    )


def aoti_reference(model, batch):
    """The reference model compiled as ``nequip-compile --mode aotinductor`` does it (its own
    ``aot_export_model``, target ``ase`` for one frame, ``batch`` for several, free atom and edge
    counts, into a temporary ``.nequip.pt2``), loaded back; and the batch in the form it takes.
    Returns ``(model, batch)``, ``model(batch)`` giving the same dict as the eager model."""
    import tempfile

    import torch
    from nequip.data import AtomicDataDict
    from nequip.nn.compile import DictInputOutputWrapper
    from nequip.scripts._compile_utils import COMPILE_TARGET_DICT
    from nequip.utils.aot import aot_export_model

    single = AtomicDataDict.num_frames(batch) == 1
    target = COMPILE_TARGET_DICT["ase" if single else "batch"]
    dims = {
        key: torch.export.Dim(name, min=2)
        for key, name in (("graph", "num_frames"), ("node", "num_nodes"), ("edge", "num_edges"))
    }
    dims = target["batch_map_settings"](dims)
    example = target["data_settings"](dict(batch))
    if single:
        batch = example
    expected = model(dict(batch))
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "reference.nequip.pt2")
        aot_export_model(model, "cpu", target["input"], target["output"], example, dims, path)
        compiled = torch._inductor.aoti_load_package(path)
    compiled = DictInputOutputWrapper(compiled, target["input"], target["output"])
    got = compiled(dict(batch))
    # the model's dtype, not the outputs': nequip returns float32 models' energies in float64
    single_precision = next(model.parameters()).dtype == torch.float32
    for key in (AtomicDataDict.TOTAL_ENERGY_KEY, AtomicDataDict.FORCE_KEY):
        scale = float(expected[key].detach().abs().max()) + 1e-12
        error = float((got[key].detach() - expected[key].detach()).abs().max()) / scale
        tolerance = 1e-4 if single_precision else 1e-9
        assert error < tolerance, f"compiled reference differs in {key}: {error:.2e}"
    return compiled, batch


# --- training -------------------------------------------------------------------------


def write_split_extxyz(npz: Path, split: dict, outdir: Path) -> dict:
    """Write ``train.xyz``, ``val.xyz``, ``test.xyz`` (eV, eV/A, non-periodic) for the split."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    data = read_md17_ev(npz)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, idx in split.items():
        frames = []
        for k in idx:
            atoms = Atoms(numbers=data["z"], positions=data["R"][k])
            atoms.calc = SinglePointCalculator(atoms, energy=data["E"][k], forces=data["F"][k])
            atoms.info["frame"] = int(k)
            frames.append(atoms)
        paths[name] = outdir / f"{name}.xyz"
        write(paths[name], frames, format="extxyz")
    return paths


def evaluate_checkpoint(ckpt: Path, npz: Path, test_idx: np.ndarray, batch_size: int = 32) -> dict:
    """Energy and force errors of a nequip checkpoint (EMA weights) on frames ``test_idx``.

    Energy: total energy per frame (meV); forces: per Cartesian component (meV/A).
    """
    import torch
    from ase import Atoms
    from nequip.data import AtomicDataDict
    from nequip.model import ModelFromCheckpoint

    _setup_nequip()
    model = ModelFromCheckpoint(str(ckpt))
    if isinstance(model, torch.nn.ModuleDict):  # NequIPLightningModule keeps {"sole_model": ...}
        (model,) = model.values()
    model.eval()
    type_names = model.type_names
    r_max = float(model.metadata["r_max"])
    data = read_md17_ev(npz)
    e_err, f_err = [], []
    for start in range(0, len(test_idx), batch_size):
        idx = test_idx[start : start + batch_size]
        structures = [Atoms(numbers=data["z"], positions=data["R"][k]) for k in idx]
        out = model(reference_batch(structures, type_names, r_max))
        e_err.append(
            out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().reshape(-1).numpy() - data["E"][idx]
        )
        f_pred = out[AtomicDataDict.FORCE_KEY].detach().numpy().reshape(len(idx), -1, 3)
        f_err.append(f_pred - data["F"][idx])
    e_err, f_err = np.concatenate(e_err), np.concatenate(f_err)
    n_atoms = len(data["z"])
    return {
        "n_test": int(len(test_idx)),
        "energy_mae_mev": float(np.abs(e_err).mean() * 1000),
        "energy_rmse_mev": float(np.sqrt((e_err**2).mean()) * 1000),
        "energy_per_atom_mae_mev": float(np.abs(e_err).mean() * 1000 / n_atoms),
        "forces_mae_mev_per_A": float(np.abs(f_err).mean() * 1000),
        "forces_rmse_mev_per_A": float(np.sqrt((f_err**2).mean()) * 1000),
        "model_dtype": str(next(model.parameters()).dtype),
        "params": sum(p.numel() for p in model.parameters()),
    }


def cmd_train(args) -> dict:
    npz = Path(args.data).resolve()
    data = read_md17_ev(npz)
    if args.split:
        split = load_split(args.split)
    else:
        split = make_split(len(data["R"]), args.n_train, args.n_val, args.n_test, args.split_seed)
    workdir = Path(args.workdir).resolve()
    paths = write_split_extxyz(npz, split, workdir / "data")
    np.savez(workdir / "split.npz", **split)
    type_names = type_names_for(np.unique(data["z"]))
    run_dir = workdir / "nequip"
    config = Path(args.config).resolve()
    cmd = [
        str(Path(sys.executable).parent / "nequip-train"),
        "--config-path",
        str(config.parent),
        "--config-name",
        config.name,
        f"hydra.run.dir={run_dir}",
        f"train_file={paths['train']}",
        f"val_file={paths['val']}",
        f"test_file={paths['test']}",
        f"model_type_names=[{','.join(type_names)}]",
        f'train_max_time="{_dhms(args.budget_s)}"',
        f"model_dtype={args.dtype}",
        f"batch_size={args.batch_size}",
        *args.overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    with open(workdir / "nequip-train.log", "w") as log:
        proc = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (workdir / "nequip-train.log").read_text()[-3000:]
        raise RuntimeError(f"nequip-train failed ({proc.returncode}):\n{tail}")
    ckpt = run_dir / "best.ckpt"
    progress = _training_progress(run_dir, len(split["train"]), args.batch_size)
    result = evaluate_checkpoint(ckpt, npz, split["test"])
    return {
        "package": "nequip-allegro",
        "task": "train_aspirin" if "aspirin" in npz.name else f"train_{npz.stem}",
        "data": npz.name,
        "n_train": int(len(split["train"])),
        "n_val": int(len(split["val"])),
        "budget_s": args.budget_s,
        "wall_s": wall_s,
        "batch_size": args.batch_size,
        **progress,
        "checkpoint": str(ckpt),
        **result,
        "versions": _versions(),
    }


def _dhms(seconds: int) -> str:
    """Seconds as Lightning's ``max_time`` string, DD:HH:MM:SS."""
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    return f"{days:02d}:{h:02d}:{m:02d}:{s:02d}"


def _training_progress(run_dir: Path, n_train: int, batch_size: int) -> dict:
    """Optimizer steps, epochs and validation passes, from the CSV log (``trainer.logger``).

    Lightning's ``max_time`` stops mid-epoch; it still validates and checkpoints at that point.
    """
    import csv

    logs = sorted(run_dir.glob("csv/**/metrics.csv"))
    if not logs:
        return {}
    with open(logs[-1]) as f:
        rows = list(csv.DictReader(f))
    vals = [r for r in rows if r.get("val0_epoch/weighted_sum")]
    # the last validation is logged at the last optimizer step (0-based)
    n_steps = max((int(r["step"]) + 1 for r in vals), default=0)
    per_epoch = math.ceil(n_train / batch_size)
    return {
        "optimizer_steps": n_steps,
        "epochs": n_steps / per_epoch,
        "validations": len(vals),
        "best_val_forces_mae_mev_per_A": min(
            (1000 * float(r["val0_epoch/forces_mae"]) for r in vals), default=None
        ),
    }


def cmd_evaluate(args) -> dict:
    split = load_split(args.split)
    return evaluate_checkpoint(Path(args.checkpoint), Path(args.data), split["test"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("speed", help="time one system x dtype; print one JSON line")
    p.add_argument("--system", choices=SYSTEMS, required=True)
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0, help="geometry seed")
    p.add_argument(
        "--mode",
        choices=("eager", "aotinductor"),
        default="eager",
        help="eager PyTorch, or compiled as nequip-compile --mode aotinductor does",
    )
    p.add_argument("--l-max", type=int, default=HPARAMS["l_max"], help="l_max (tutorial: 1)")
    p.add_argument(
        "--species",
        type=int,
        nargs="*",
        help="atomic numbers the model knows (default: those of the system)",
    )

    p = sub.add_parser("sweep", help="every system x dtype, one fresh process each")
    p.add_argument("--worker", type=Path, default=Path(__file__).resolve())
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    p.add_argument("--dtypes", nargs="*", default=list(DTYPES))
    p.add_argument("--malloc-tuned", action="store_true", help=f"children get {MALLOC_TUNED_ENV}")
    p.add_argument("--out", type=Path, help="append JSON lines here")
    p.add_argument("worker_args", nargs="*", help="passed on to the worker, after '--'")

    p = sub.add_parser("train", help="nequip-train within a budget, then test MAE")
    p.add_argument("--data", default=str(ASPIRIN_NPZ))
    p.add_argument("--config", default=str(TRAIN_CONFIG))
    p.add_argument("--workdir", default=str(REPO / "runs" / "allegro_ref_aspirin"))
    p.add_argument("--split", help=".npz/.json of frame indices (train, val, test)")
    p.add_argument("--n-train", type=int, default=950)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--budget-s", type=int, default=600, help="Lightning trainer.max_time")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. lr=0.002")

    p = sub.add_parser("evaluate", help="test MAE of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--data", default=str(ASPIRIN_NPZ))

    args = parser.parse_args(argv)
    if args.cmd == "sweep":
        sweep(
            args.worker,
            args.python,
            args.systems,
            args.dtypes,
            args.worker_args,
            MALLOC_TUNED_ENV if args.malloc_tuned else None,
            args.out,
        )
        return
    result = {"speed": cmd_speed, "train": cmd_train, "evaluate": cmd_evaluate}[args.cmd](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
