"""Generate a small OC20-format adsorbate+slab dataset with ASE's EMT potential.

OC20 (Chanussot et al., ACS Catal. 11, 6059 (2021), RPBE DFT) cannot be downloaded here; this makes
a real EMT (not DFT) dataset in OC20's published layouts, so that the same code reads both. EMT
lattice constants; OC20's gas-phase reference scheme with EMT molecules (:func:`gas_references`);
3x3x4 fcc(111)/fcc(100) slabs, bottom two layers fixed (tag 0), top two free (tag 1), adsorbate
tag 2; every (metal, facet, adsorbate, site) combination in a seeded random order, the adsorbate
placed by :func:`place_adsorbate` and relaxed with BFGS (fmax 0.05 eV/A) until ``--systems``
relaxations converged with |E_ads| <= 10 eV (OC20's filter). Reference energy = E(relaxed clean
slab) + sum of the adsorbate atoms' references; adsorption energy = E(system) - reference.

Writes into ``<out>.part``, checks it (:func:`self_check`), then moves it to ``--out``:
``s2ef/<n>.extxyz.xz`` + ``<n>.txt.xz`` (raw S2EF, ``--frames-per-system`` frames per trajectory,
shuffled), ``s2ef_lmdb/data.<n:04d>.lmdb`` + ``data_log.<n:04d>.txt`` (the raw pairs converted as
fairchem's ``preprocess_ef.py --ref-energy``), ``is2re/data.lmdb``, ``oc20_data_mapping.pkl``
and ``summary.json``. Usage::

    OMP_NUM_THREADS=1 python scripts/make_oc20_emt.py --systems 80 --seed 0 --out data/oc20_emt
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import lzma
import os
import pickle
import platform
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import ase.io
import lmdb
import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc100, fcc111, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.neighborlist import NeighborList, get_connectivity_matrix, natural_cutoffs
from ase.optimize import BFGS
from scipy.optimize import minimize_scalar
from torch_geometric.data import Data

from molfold.io import atomic_write

GENERATOR_VERSION = "1.0.0"
METALS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
FACETS = {
    "111": (fcc111, ("ontop", "bridge", "fcc", "hcp")),
    "100": (fcc100, ("ontop", "bridge", "hollow")),
}
# Adsorbates (binding atom first) -> bond length (A) of the second atom, put along +z.
ADSORBATES = {"H": 0, "O": 0, "N": 0, "C": 0, "OH": 0.97, "CO": 1.15, "NH": 1.02, "CH": 1.09}
SIZE, VACUUM, FMAX, LMDB_MAP_SIZE = (3, 3, 4), 8.0, 0.05, 1099511627776 * 2
MAPPING_KEYS = ("bulk_symbols", "ads_symbols", "miller_index", "adsorption_site", "class")
MAPPING_KEYS += ("anomaly", "site")  # oc20_data_mapping.pkl fields that apply, plus "site"
HEIGHTS = np.arange(0.5, 3.0, 0.05)  # adsorbate height scan above the top layer (A)


def emt_lattice_constant(metal: str) -> float:
    """fcc lattice constant (A) minimising the EMT energy of the bulk."""

    def energy(a: float) -> float:
        return EMT().get_potential_energy(bulk(metal, "fcc", a=a))

    best = minimize_scalar(energy, bounds=(3.0, 4.6), method="bounded", options={"xatol": 1e-6})
    return float(best.x)


def gas_references() -> tuple[dict[str, float], dict[str, float]]:
    """EMT energies of H2, H2O, CO, N2 (relaxed, 6 A vacuum) and OC20's per-element references."""
    mols = {}
    for name in ("H2", "H2O", "CO", "N2"):
        atoms = molecule(name, vacuum=6.0, calculator=EMT())
        BFGS(atoms, logfile=None).run(fmax=0.01, steps=1000)
        mols[name] = float(atoms.get_potential_energy())
    h, o = mols["H2"] / 2, mols["H2O"] - mols["H2"]
    return mols, {"H": h, "O": o, "C": mols["CO"] - o, "N": mols["N2"] / 2}


def make_slab(metal: str, facet: str, a: float) -> Atoms:
    """Bulk-terminated slab with OC20 tags (1 top two layers, 0 below) and the bottom two fixed."""
    slab = FACETS[facet][0](metal, size=SIZE, a=a, vacuum=VACUUM, periodic=True)
    layer = slab.get_tags()  # ase: 1 = top layer ... 4 = bottom layer
    slab.set_tags(np.where(layer <= 2, 1, 0))
    slab.set_constraint(FixAtoms(mask=layer > 2))
    return slab


def relax(atoms: Atoms, max_steps: int) -> tuple[list[Atoms], bool]:
    """BFGS-relax with EMT: every frame (initial first) with energy and unconstrained forces."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    frames: list[Atoms] = []

    def record() -> None:
        frame = atoms.copy()
        energy = float(atoms.get_potential_energy())
        forces = atoms.get_forces(apply_constraint=False)
        frame.calc = SinglePointCalculator(frame, energy=energy, free_energy=energy, forces=forces)
        frames.append(frame)

    opt = BFGS(atoms, logfile=None)
    opt.attach(record)
    return frames, bool(opt.run(fmax=FMAX, steps=max_steps))


def place_adsorbate(slab: Atoms, name: str, site: str, rng: np.random.Generator) -> Atoms:
    """Slab + adsorbate at a perturbed ``site``: lateral offset N(0, 0.15 A), tilt up to 15 degrees,
    random azimuth, height = EMT-optimal height on the rigid slab (0.05 A grid) + U(-0.1, 0.4) A."""
    ads = Atoms(name, positions=[[0.0, 0.0, 0.0], [0.0, 0.0, ADSORBATES[name]]][: len(name)])
    if len(name) == 2:
        axis = np.array([*rng.normal(size=2), 0.0])
        ads.rotate(rng.uniform(0.0, 15.0), axis / np.linalg.norm(axis), center=(0, 0, 0))
        ads.rotate(rng.uniform(0.0, 360.0), "z", center=(0, 0, 0))
    system = slab.copy()
    add_adsorbate(system, ads, 0.0, position=site, offset=(1, 1), mol_index=0)
    system.info.pop("adsorbate_info", None)
    system.set_tags([*slab.get_tags(), *([2] * len(ads))])
    system.positions[len(slab) :, :2] += rng.normal(scale=0.15, size=2)
    energies = []
    for height in HEIGHTS:
        trial = system.copy()
        trial.positions[len(slab) :, 2] += height
        energies.append(EMT().get_potential_energy(trial))
    system.positions[len(slab) :, 2] += HEIGHTS[np.argmin(energies)] + rng.uniform(-0.1, 0.4)
    return system


def connectivity(atoms: Atoms, mult: float = 1.0) -> np.ndarray:
    """Bonds as OC20's anomaly heuristics: ``natural_cutoffs`` x ``mult``, 0.3 A default skin."""
    neighbors = NeighborList(natural_cutoffs(atoms, mult=mult), bothways=True)
    neighbors.update(atoms)
    return get_connectivity_matrix(neighbors.nl).toarray()


def anomaly(initial: Atoms, final: Atoms, clean: Atoms) -> int:
    """OC20's anomaly flag (``fairchem.data.oc.utils.flag_anomaly`` criteria): 0 none,
    1 adsorbate connectivity changed, 2 no adsorbate atom bonded to the slab (cutoffs x 1.5),
    3 slab connectivity differs from the relaxed clean slab's (cushion x 1.5)."""
    ads, n = np.flatnonzero(final.get_tags() == 2), len(clean)
    if not np.array_equal(connectivity(initial[ads]), connectivity(final[ads])):
        return 1
    if not connectivity(final, 1.5)[np.ix_(ads, np.arange(n))].any():
        return 2
    adslab = final[:n]
    formed = (connectivity(adslab) - connectivity(clean, 1.5) == 1).any()
    broken = (connectivity(clean) - connectivity(adslab, 1.5) == 1).any()
    return 3 if formed or broken else 0


@dataclass
class System:
    """One relaxed adsorbate+slab system."""

    sid: int
    metal: str
    facet: str
    adsorbate: str
    site: str
    ref: float  # E(relaxed clean slab) + sum of the adsorbate atoms' gas-phase references (eV)
    frames: list[Atoms]  # the BFGS trajectory, initial structure first
    anomaly: int


def generate(n_systems: int, seed: int, max_steps: int) -> tuple[list[System], dict]:
    """Relax clean slabs and ``n_systems`` adsorbate+slab systems (see the module docstring)."""
    rng = np.random.default_rng(seed)
    lattice = {m: emt_lattice_constant(m) for m in METALS}
    mols, refs = gas_references()
    slabs, relaxed = {}, {}
    for metal, facet in itertools.product(METALS, FACETS):
        slabs[metal, facet] = make_slab(metal, facet, lattice[metal])
        frames, ok = relax(slabs[metal, facet], max_steps)
        assert ok, f"clean {metal}({facet}) did not converge"
        relaxed[metal, facet] = frames[-1]
    cases = [(m, f, a, s) for m in METALS for f in FACETS for a in ADSORBATES for s in FACETS[f][1]]
    order = rng.permutation(len(cases))
    sids = rng.choice(2_500_000, size=len(cases), replace=False)
    systems, dropped = [], {"unconverged": 0, "energy_filter": 0}
    for k in order:
        if len(systems) == n_systems:
            break
        metal, facet, name, site = cases[k]
        frames, ok = relax(place_adsorbate(slabs[metal, facet], name, site, rng), max_steps)
        slab = relaxed[metal, facet]
        ref = float(slab.get_potential_energy()) + sum(refs[symbol] for symbol in name)
        if not ok or abs(frames[-1].get_potential_energy() - ref) > 10.0:  # OC20's |E_ads| filter
            dropped["unconverged" if not ok else "energy_filter"] += 1
            continue
        flag = anomaly(frames[0], frames[-1], slab)
        systems.append(System(int(sids[k]), metal, facet, name, site, ref, frames, flag))
    assert len(systems) == n_systems, f"only {len(systems)} systems passed"
    slab_energy = {f"{m}({f})": a.get_potential_energy() for (m, f), a in relaxed.items()}
    meta = {"lattice_constants_A": lattice, "gas_molecule_energies_eV": mols, "dropped": dropped}
    return systems, meta | {"element_references_eV": refs, "clean_slab_energies_eV": slab_energy}


def to_data(atoms: Atoms) -> Data:
    """``Data`` as legacy fairchem ``AtomsToGraphs(r_energy, r_forces, r_fixed)`` + ``tags``."""
    n = len(atoms)
    cell = torch.Tensor(np.array(atoms.get_cell())).view(1, 3, 3)
    pos, numbers = torch.Tensor(atoms.get_positions()), torch.Tensor(atoms.get_atomic_numbers())
    data = Data(cell=cell, pos=pos, atomic_numbers=numbers, natoms=n)
    data.y = float(atoms.get_potential_energy(apply_constraint=False))
    data.force = torch.Tensor(atoms.get_forces(apply_constraint=False))
    data.fixed = torch.zeros(n)  # 1 = fixed by a FixAtoms constraint
    data.fixed[[i for c in atoms.constraints if isinstance(c, FixAtoms) for i in c.index]] = 1
    data.tags = torch.LongTensor(atoms.get_tags())
    return data


def write_lmdb(path: Path, records: list[Data], length: bool) -> None:
    """Pickled records under b"0", b"1", ... (plus b"length" for S2EF), opened as fairchem does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = lmdb.open(str(path), map_size=LMDB_MAP_SIZE, subdir=False, meminit=False, map_async=True)
    with db.begin(write=True) as txn:
        for i, record in enumerate(records):
            txn.put(f"{i}".encode("ascii"), pickle.dumps(record, protocol=-1))
        if length:
            txn.put(b"length", pickle.dumps(len(records), protocol=-1))
    db.sync()
    db.close()
    Path(f"{path}-lock").unlink()


def write_s2ef(systems: list[System], out: Path, per_system: int, n_files: int, seed: int) -> None:
    """Raw S2EF pairs (frames sampled per trajectory, shuffled), then LMDBs as preprocess_ef's."""
    rng = np.random.default_rng([seed, 1])
    picked = []
    for system in systems:
        n = len(system.frames)
        picked += [(system, int(f)) for f in np.sort(rng.choice(n, min(per_system, n), False))]
    picked = [picked[i] for i in rng.permutation(len(picked))]
    for n, chunk in enumerate(np.array_split(np.arange(len(picked)), n_files)):
        pairs, text = [picked[i] for i in chunk], io.StringIO()
        ase.io.write(text, [system.frames[fid] for system, fid in pairs], format="extxyz")
        lines = "".join(f"random{system.sid},frame{fid},{system.ref!r}\n" for system, fid in pairs)
        atomic_write(out / "s2ef" / f"{n}.extxyz.xz", lzma.compress(text.getvalue().encode()))
        atomic_write(out / "s2ef" / f"{n}.txt.xz", lzma.compress(lines.encode()))
        # as preprocess_ef.py --ref-energy: read the pair back, one LMDB per pair
        records = []
        for frame, (sid, fid, ref) in zip(*read_s2ef_pair(out / "s2ef", n)):
            data = to_data(frame)
            data.sid, data.fid = sid, fid
            data.y -= ref
            records.append(data)
        write_lmdb(out / "s2ef_lmdb" / f"data.{n:04d}.lmdb", records, length=True)
        log = "".join(f"random{d.sid},frame{d.fid}\n" for d in records)
        atomic_write(out / "s2ef_lmdb" / f"data_log.{n:04d}.txt", log)


def read_s2ef_pair(folder: Path, n: int) -> tuple[list[Atoms], list[tuple[int, int, float]]]:
    """Frames of ``<n>.extxyz.xz`` and their (sid, fid, reference energy) from ``<n>.txt.xz``."""
    with lzma.open(folder / f"{n}.extxyz.xz", "rt") as f:
        frames = ase.io.read(f, ":", format="extxyz")
    with lzma.open(folder / f"{n}.txt.xz", "rt") as f:
        logs = [line.split(",") for line in f.read().splitlines()]
    assert len(frames) == len(logs)
    return frames, [(int(s[6:]), int(f[5:]), float(r)) for s, f, r in logs]  # random<s>,frame<f>


def write_is2re(systems: list[System], out: Path) -> None:
    """``is2re/data.lmdb`` (initial structures with energy, forces, targets) + mapping pickle."""
    records, mapping = [], {}
    for system in systems:
        data, first, last = to_data(system.frames[0]), system.frames[0], system.frames[-1]
        data.y_init = data.y - system.ref
        del data.y
        data.y_relaxed = float(last.get_potential_energy()) - system.ref
        data.pos_relaxed = torch.Tensor(last.get_positions())
        data.sid = system.sid
        records.append(data)
        binding = tuple(round(float(x), 2) for x in first[-len(system.adsorbate)].position)
        miller = tuple(int(c) for c in system.facet)  # class 0: OC20's "intermetallics"
        values = (system.metal, f"*{system.adsorbate}", miller, (binding,), 0, system.anomaly)
        mapping[f"random{system.sid}"] = dict(zip(MAPPING_KEYS, (*values, system.site)))
    write_lmdb(out / "is2re" / "data.lmdb", records, length=False)
    atomic_write(out / "oc20_data_mapping.pkl", pickle.dumps(mapping, protocol=4))


def read_lmdb(path: Path) -> dict[bytes, object]:
    """Every record of an LMDB, opened as fairchem's readers do."""
    env = lmdb.open(
        str(path), subdir=False, readonly=True, lock=False, readahead=True, meminit=False
    )
    with env.begin() as txn:
        records = {k: pickle.loads(v) for k, v in txn.cursor()}
    env.close()
    return records


def self_check(out: Path, systems: list[System], n_files: int) -> list[float]:
    """Re-read all files with plain ase / lmdb / pickle, check them; return the S2EF LMDB ``y``."""
    by_sid, ys = {s.sid: s for s in systems}, []
    for n in range(n_files):
        frames, ids = read_s2ef_pair(out / "s2ef", n)
        db = read_lmdb(out / "s2ef_lmdb" / f"data.{n:04d}.lmdb")
        assert db.pop(b"length") == len(frames) == len(db)
        for i, (frame, (sid, fid, ref)) in enumerate(zip(frames, ids)):
            system, data = by_sid[sid], db[f"{i}".encode()]
            source = system.frames[fid]
            energy, tags = frame.get_potential_energy(), frame.get_tags()
            assert isinstance(data, Data) and (data.sid, data.fid, ref) == (sid, fid, system.ref)
            assert abs(data.y - (energy - ref)) < 1e-9  # the label: energy - reference energy
            assert abs(energy - source.get_potential_energy()) < 1e-9
            assert np.allclose(frame.positions, source.positions, atol=1e-7) and frame.info == {}
            assert np.allclose(data.force, source.get_forces(apply_constraint=False), atol=1e-5)
            assert (tags == source.get_tags()).all() and (data.tags.numpy() == tags).all()
            assert list(frame.constraints[0].index) == list(np.flatnonzero(tags == 0))
            assert (data.fixed.numpy() == (tags == 0)).all() and data.fixed.dtype == torch.float32
            assert data.pos.dtype == data.atomic_numbers.dtype == torch.float32
            assert data.tags.dtype == torch.int64 and data.cell.shape == (1, 3, 3)
            ys.append(data.y)
    is2re = read_lmdb(out / "is2re" / "data.lmdb")
    assert b"length" not in is2re and len(is2re) == len(systems)
    for i, system in enumerate(systems):
        data, last = is2re[f"{i}".encode()], system.frames[-1]
        assert data.sid == system.sid and data.natoms == len(last) and "y" not in data
        assert abs(data.y_relaxed - (last.get_potential_energy() - system.ref)) < 1e-9
        assert np.allclose(data.pos_relaxed, last.positions, atol=1e-5)
    with open(out / "oc20_data_mapping.pkl", "rb") as f:
        assert set(pickle.load(f)) == {f"random{s.sid}" for s in systems}
    return ys


def summarize(systems: list[System], meta: dict, ys: list[float], args: argparse.Namespace) -> dict:
    """Counts, ranges and provenance for ``summary.json``."""
    frames = [f for s in systems for f in s.frames]
    free = max(np.linalg.norm(f.get_forces()[f.get_tags() > 0], axis=1).max() for f in frames)
    steps = [len(s.frames) - 1 for s in systems]
    counts = {"systems": len(systems), "s2ef_frames": len(ys), "trajectory_frames": len(frames)}
    packages = ("ase", "numpy", "scipy", "torch", "torch_geometric", "lmdb")

    def count(key: str) -> dict[str, int]:
        return dict(sorted(Counter(str(getattr(s, key)) for s in systems).items()))

    def span(values: list[float]) -> list[float]:
        return [round(float(min(values)), 4), round(float(max(values)), 4)]

    return {
        "generator": f"scripts/make_oc20_emt.py {GENERATOR_VERSION}",
        "seed": args.seed,
        "options": {k: v for k, v in vars(args).items() if k != "out"} | {"fmax": FMAX},
        "slab": {"size": SIZE, "vacuum_A": VACUUM, "fixed_layers": 2, "pbc": "T T T"},
        "level_of_theory": "ASE EMT (not DFT)",
        "units": {"energy": "eV", "forces": "eV/A", "positions": "A"},
        "counts": counts | {"dropped": meta.pop("dropped")},
        **{f"{k}_counts": count(k) for k in ("metal", "facet", "adsorbate", "site", "anomaly")},
        "relaxation_steps_min_median_max": [min(steps), float(np.median(steps)), max(steps)],
        "energy_ranges_eV": {
            "s2ef_total_energy": span([f.get_potential_energy() for f in frames]),
            "s2ef_y": span(ys),
            "is2re_y_init": span([s.frames[0].get_potential_energy() - s.ref for s in systems]),
            "is2re_y_relaxed": span([s.frames[-1].get_potential_energy() - s.ref for s in systems]),
        },
        "max_free_atom_force_eV_per_A": round(float(free), 3),
        **meta,
        "software": {"python": platform.python_version()} | {p: version(p) for p in packages},
    }


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--systems", type=int, default=80)
    parser.add_argument("--frames-per-system", type=int, default=6, help="S2EF frames per system")
    parser.add_argument("--max-steps", type=int, default=300, help="BFGS step cap")
    parser.add_argument("--s2ef-files", type=int, default=2, help="raw S2EF pairs (and LMDBs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/oc20_emt"))
    args = parser.parse_args()
    start = time.time()
    systems, meta = generate(args.systems, args.seed, args.max_steps)
    print(f"relaxed {len(systems)} systems in {time.time() - start:.0f} s", flush=True)
    tmp = args.out.with_name(args.out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    write_s2ef(systems, tmp, args.frames_per_system, args.s2ef_files, args.seed)
    write_is2re(systems, tmp)
    summary = summarize(systems, meta, self_check(tmp, systems, args.s2ef_files), args)
    summary["generation_seconds"] = round(time.time() - start, 1)
    atomic_write(tmp / "summary.json", json.dumps(summary, indent=1) + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out}: {summary['counts']}, {size:,} bytes, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
