"""Train the ReBind models that ship with molfold on QM9 conformers.

    python scripts/train_rebind_qm9.py [--start model|etkdg] [--run-dir DIR] [--epochs N]

``--start model`` (data/rebind_qm9.pt): a CPU-sized version of the paper's recipe
(configs/model/rebind.yaml): the same architecture, loss, optimiser, schedule and split,
narrower and shallower (d 128, 4 + 4 blocks, FFN 256), with a higher learning rate (3e-4) for
the shorter run, so that 8 epochs (8,800 steps of 100 molecules) train in about 1.5 hours on two
otherwise idle CPU cores.

``--start etkdg`` (data/rebind_qm9_refiner.pt): the WGFormer recipe (Wang et al., ICML 2025) on
molfold's equivariant refiner: the same encoder embeds the 2D graph and the refiner moves an
ETKDG + MMFF94 conformer made once per molecule with the data (about 55 minutes for QM9 on two
cores, cached), trained on L1 distances plus 1/8 of the squared coordinate error after a proper
rotation (WGFormer's 8:1), in batches of 32. An epoch (3,440 steps) takes about 20 minutes here.

Run it again after a kill: it resumes from the last checkpoint of its run directory (written
every 200 steps). When training has finished, the best checkpoint's weights (validation D-MAE)
are written to the output and its test metrics beside it (``<output>_metrics.json``);
data/README.md records the recipe and these numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from ship_model import train_and_ship, write_metrics  # scripts/ is on sys.path as a script

REPO = Path(__file__).resolve().parents[1]
MODEL = [
    "model=rebind",
    "data=qm9",
    "model.d_model=128",
    "model.num_heads=8",
    "model.d_ffn=256",
    "model.num_encoder_layers=4",
    "model.num_decoder_layers=4",
    "optim.lr=3.0e-4",
]
"""The shipped model's size and learning rate (scripts/bench_rebind_variants.py uses them too)."""
COMMON = [
    "data.val_batch_size=200",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=50",
    "seed=0",
]
REFINER = [
    "model=rebind",
    "data=qm9",
    "model.d_model=128",
    "model.num_heads=8",
    "model.d_ffn=256",
    "model.num_encoder_layers=4",
    "model.decoder=equivariant",
    "model.start=etkdg",
    "task.coordinate_weight=0.125",
    "optim.lr=3.0e-4",
    "data.batch_size=32",
]
"""The refiner of an ETKDG + MMFF conformer: the shipped encoder's size, WGFormer's loss."""
RECIPES = {
    "model": ([*MODEL, "data.batch_size=100", *COMMON], 8, "rebind_qm9"),
    "etkdg": ([*REFINER, *COMMON], 30, "rebind_qm9_refiner"),
}
"""``--start``: (overrides, default epochs, name of the run directory and shipped weights)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", choices=sorted(RECIPES), default="model")
    parser.add_argument("--run-dir", help="default: runs/<name of the shipped weights>")
    parser.add_argument("--epochs", type=int, help="default: 8 (model), 30 (etkdg)")
    parser.add_argument("--output", help="default: data/<name>.pt")
    args = parser.parse_args()

    recipe, epochs, name = RECIPES[args.start]
    epochs = args.epochs or epochs
    overrides = [*recipe, f"trainer.max_epochs={epochs}"]
    output = Path(args.output or REPO / "data" / f"{name}.pt")
    run_dir = Path(args.run_dir or f"runs/{name}")
    metrics, wall, model = train_and_ship(overrides, run_dir, output)
    record = {
        "test_metrics_angstrom": metrics,
        "recipe": overrides,
        "epochs": epochs,
        "wall_time_this_sitting_s": round(wall, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
    }
    write_metrics(output, record)


if __name__ == "__main__":
    main()
