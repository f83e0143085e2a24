"""Train the drug-like GFN2-xTB potential that ships with molfold (data/allegro_druglike_xtb.ckpt),
the energy ``molfold predict`` ranks its conformers by.

    OMP_NUM_THREADS=2 python scripts/train_druglike_potential.py [--max-time 00:01:35:00]

Runs ``molfold train model=allegro data=ase preset=allegro_druglike_xtb`` (the Allegro tutorial
model on ``data/druglike_xtb_frames``, made by ``scripts/make_druglike_xtb_frames.py``: GFN2-xTB
energies and forces of ETKDG + MMFF94 conformers of 2,000 MOSES train-split molecules and of
xTB relaxations from them; split by molecule), a Delta potential: its targets are GFN2-xTB minus
MMFF94, energies centred per molecule (``scripts/add_mmff_labels.py``) and learnt relative
to the mean of the molecule's frames in each batch (``task.energy_reference=group``), so that
MMFF94 + the potential approximates GFN2-xTB's energy differences between conformers
(:func:`molfold.conformers.refine.make_scorer` ``auto``), for at most ``--max-time`` (Lightning's
``max_time``, days:hours:minutes:seconds) or the preset's epochs. Run it again after a kill: it
resumes from the last checkpoint of its run directory. Then the best (EMA) weights (validation
loss) are written to ``--output`` and ``<stem>_metrics.json`` records

* the test split's energy and force errors, as ``molfold train`` reports them;
* how well MMFF94 + the potential ranks conformers, the job it ships for: for each test-split
  molecule (none of whose conformers was trained on), the GFN2-xTB energy of the MMFF94 minimum
  it puts lowest, above the xTB-lowest of that molecule's MMFF94 minima, in kcal/mol,
  against the same for the MMFF94-lowest (what ``molfold predict`` ranks by without a
  potential) and for a random pick; and the mean Spearman correlation of its and xTB's energies
  over each molecule's minima.

data/README.md records the recipe and these numbers.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from ship_model import train_and_ship, write_metrics  # scripts/ is on sys.path as a script

from molfold.calculator import MolfoldCalculator
from molfold.data.sources.ase_files import read_structures, structure_files
from molfold.units import KCAL_PER_MOL_TO_EV

REPO = Path(__file__).resolve().parents[1]
RECIPE = ["model=allegro", "data=ase", "preset=allegro_druglike_xtb"]


def ranking_quality(calc: MolfoldCalculator, frames: list, seed: int = 0) -> dict:
    """Conformer-ranking errors of MMFF94 + the Delta potential ``calc`` on ``frames`` (module
    docstring), kcal/mol."""
    minima = defaultdict(list)
    for atoms in frames:
        if atoms.info.get("kind") == "mmff":
            minima[atoms.info["smiles"]].append(atoms)
    rng = np.random.default_rng(seed)
    gaps = defaultdict(list)
    correlations, correlations_mmff = [], []
    for group in minima.values():
        if len(group) < 2:
            continue
        xtb = np.array([a.get_potential_energy() for a in group]) / KCAL_PER_MOL_TO_EV
        mmff = np.array([a.info["mmff_energy"] for a in group]) / KCAL_PER_MOL_TO_EV
        model = []
        for atoms, baseline in zip(group, mmff):
            probe = atoms.copy()
            probe.calc = calc
            model.append(baseline + probe.get_potential_energy() / KCAL_PER_MOL_TO_EV)
        gaps["mmff94+potential"].append(xtb[int(np.argmin(model))] - xtb.min())
        gaps["mmff94"].append(xtb[int(np.argmin(mmff))] - xtb.min())
        gaps["random"].append(xtb[rng.integers(len(group))] - xtb.min())
        correlations.append(spearmanr(model, xtb).statistic)
        correlations_mmff.append(spearmanr(mmff, xtb).statistic)
    return {
        "molecules": len(correlations),
        "xtb_gap_of_pick_kcal_mol_mean": {k: float(np.mean(v)) for k, v in gaps.items()},
        "xtb_gap_of_pick_kcal_mol_median": {k: float(np.median(v)) for k, v in gaps.items()},
        "pick_is_xtb_lowest_fraction": {
            k: float(np.mean(np.array(v) < 1e-9)) for k, v in gaps.items()
        },
        "spearman_vs_xtb_mean": {
            "mmff94+potential": float(np.nanmean(correlations)),
            "mmff94": float(np.nanmean(correlations_mmff)),
        },
    }


def test_frames(data: Path, run_dir: Path) -> list:
    """The frames of the run's test split, in the order the loader reads them."""
    frames = [a for f in structure_files(data) for a in read_structures(f)]
    test = np.load(run_dir / "split.npz")["test"]
    return [frames[int(k)] for k in test]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/druglike_xtb_potential")
    parser.add_argument("--max-time", default="00:01:35:00", help="days:hours:minutes:seconds")
    parser.add_argument("--data", default=str(REPO / "data" / "druglike_xtb_frames"))
    parser.add_argument("--output", default=str(REPO / "data" / "allegro_druglike_xtb.ckpt"))
    args = parser.parse_args()

    run_dir, output = Path(args.run_dir), Path(args.output)
    overrides = [*RECIPE, f"data.path={args.data}", f"trainer.max_time={args.max_time}"]
    metrics, wall, model = train_and_ship(overrides, run_dir, output)
    calc = MolfoldCalculator(model)
    ranking = ranking_quality(calc, test_frames(Path(args.data), run_dir))
    record = {
        "test_split_metrics": metrics,
        "test_split_units": "meV, meV/atom, meV/A; loss in eV^2 units",
        "conformer_ranking_test_split": ranking,
        "recipe": [o for o in overrides if not o.startswith("data.path=")],
        "data_path": Path(args.data).name,
        "wall_time_this_sitting_s": round(wall, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads_training": torch.get_num_threads(),
    }
    write_metrics(output, record)


if __name__ == "__main__":
    main()
