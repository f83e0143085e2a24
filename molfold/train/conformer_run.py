"""``molfold train`` for conformer models (ReBind): the run directory of :mod:`molfold.train.run`
with ``split.npz``, checkpoints (best on validation D-MAE), ``metrics.csv``, a learning curve and
``test_metrics.json`` (D-MAE, D-RMSE, C-RMSD in Angstrom)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from molfold.train.run import (
    _evaluation_indices,
    build_trainer,
    fit_and_test,
    prepare_run_dir,
    report_metrics,
)

UNITS = {"d_mae": "A", "d_rmse": "A", "c_rmsd": "A", "c_rmsd_stereo": "A"}


def train_conformers(config: dict[str, Any]) -> dict[str, float]:
    """Train a conformer model, test its best checkpoint; return the test metrics."""
    import lightning as L

    from molfold.data.conformer_data import ConformerDataModule
    from molfold.models.registry import build_conformer_model
    from molfold.train.conformer_task import ConformerTask
    from molfold.train.plots import CONFORMER_CURVES, learning_curves

    run_dir = prepare_run_dir(config)
    seed = int(config.get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = ConformerDataModule(config["data"], run_dir, seed)
    datamodule.setup()
    hparams = {k: v for k, v in config["model"].items() if k != "name"}
    network = build_conformer_model(
        config["model"]["name"], hparams, config.get("dtype", "float32")
    )
    elements = sorted({int(k) for g in datamodule.subset("train") for k in g.z.unique()})
    training_data = {
        "data": config["data"].get("name", config["data"]["format"]),
        "elements": elements,
    }
    task = ConformerTask(
        network, config["optim"], bool(config.get("test_c_rmsd", True)), training_data
    )
    trainer = build_trainer(config, run_dir)
    metrics, _ = fit_and_test(trainer, task, datamodule, config, run_dir, "molecules", UNITS)
    if trainer.is_global_zero and (run_dir / "metrics.csv").exists():
        learning_curves(run_dir / "metrics.csv", run_dir / "learning_curve.png", CONFORMER_CURVES)
    return metrics


def evaluate_conformers(config: dict[str, Any], model) -> dict[str, float]:
    """``molfold eval`` of a conformer checkpoint: D-MAE, D-RMSE and C-RMSD (Angstrom) on the
    molecules of ``config["data"]``: the checkpoint run's test split by default, ``split=test``
    the test split the data config's ``split_seed`` gives (e.g. for the shipped model)."""
    import torch
    from torch_geometric.loader import DataLoader
    from tqdm import tqdm

    from molfold.conformers.metrics import c_rmsd_pair, distance_errors, metrics_from_sums
    from molfold.data.conformer_data import conformer_split, load_conformer_graphs

    graphs = load_conformer_graphs(config["data"])
    if config.get("split") == "test":  # the test split that training with this data config draws
        indices = conformer_split(len(graphs), config["data"])["test"]
        description = f"test split of split_seed={config['data'].get('split_seed', 0)}"
    else:
        indices, description = _evaluation_indices(config, len(graphs))
    device = config.get("device", "cpu")
    loader = DataLoader([graphs[i] for i in indices], batch_size=int(config.get("batch_size", 32)))
    sums, rmsd = torch.zeros(3, dtype=torch.float64), []
    for batch in tqdm(loader, desc="evaluating", unit="batch"):
        with torch.no_grad():
            pos = model(batch.to(device))["pos"].double().cpu()
        batch = batch.cpu()
        sums += distance_errors(pos, batch.pos, batch.batch)
        for m, graph in enumerate(batch.to_data_list()):
            rmsd.append(c_rmsd_pair(graph, pos[batch.batch == m]))
    raw, fixed = (sum(column) / len(rmsd) for column in zip(*rmsd))
    metrics = {**metrics_from_sums(sums), "c_rmsd": raw, "c_rmsd_stereo": fixed}
    source = config["data"].get("path") or config["data"]["format"]
    title = f"{Path(config['ckpt']).name} on {source} ({len(indices)} molecules, {description})"
    report_metrics(metrics, title, config.get("output"), UNITS)
    return metrics
