"""Which ReBind variant is better? The paper's decoder vs molfold's e3nn equivariant decoder, each
with and without the Lennard-Jones rewiring, trained identically on a slice of QM9.

    python scripts/bench_rebind_variants.py [--train 10000] [--epochs 3] [--out FILE.json]

Every variant sees the same molecules in the same order (seed 0, QM9 paper split, the first
``--train`` training molecules, 1,000 validation and ``--test`` test molecules) for the same number
of epochs, with the shipped model's width and depth (scripts/train_rebind_qm9.py). Prints a table
of test D-MAE, D-RMSE, C-RMSD (Angstrom), parameters and wall time, and writes it as JSON. A
benchmark, not a test: it takes about an hour on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from train_rebind_qm9 import MODEL  # scripts/ is on sys.path when run as a script

from molfold.cli import compose
from molfold.io import atomic_write
from molfold.train.run import train

SHARED = [
    *MODEL,
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "seed=0",
]
VARIANTS = {
    "paper decoder, rewiring": ["model.decoder=paper", "model.rewiring=true"],
    "paper decoder, no rewiring": ["model.decoder=paper", "model.rewiring=false"],
    "equivariant decoder, rewiring": ["model.decoder=equivariant", "model.rewiring=true"],
    "equivariant decoder, no rewiring": ["model.decoder=equivariant", "model.rewiring=false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10_000, help="training molecules")
    parser.add_argument("--test", type=int, default=1_000, help="test molecules")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--runs", default="runs/bench_rebind_variants")
    parser.add_argument("--out", default="runs/bench_rebind_variants.json")
    args = parser.parse_args()

    rows = []
    for name, overrides in VARIANTS.items():
        run_dir = Path(args.runs) / name.replace(", ", "-").replace(" ", "_")
        config = compose(
            "train",
            [
                *SHARED,
                *overrides,
                f"run_dir={run_dir}",
                f"data.n_train={args.train}",
                "data.n_val=1000",
                f"data.n_test={args.test}",
                f"data.batch_size={args.batch_size}",
                f"trainer.max_epochs={args.epochs}",
            ],
        )
        start = time.perf_counter()
        metrics = train(config)
        rows.append({"variant": name, **metrics, "wall_s": time.perf_counter() - start})

    header = f"{'variant':<34} {'D-MAE':>7} {'D-RMSE':>7} {'C-RMSD':>7} {'wall (s)':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        print(
            f"{row['variant']:<34} {row['d_mae']:>7.3f} {row['d_rmse']:>7.3f} "
            f"{row['c_rmsd']:>7.3f} {row['wall_s']:>9.0f}"
        )
    atomic_write(args.out, json.dumps({"settings": vars(args), "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
