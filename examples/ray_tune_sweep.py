"""A Ray Tune sweep with one alias for the best checkpoint of all its trials, on a folder or a bucket.

Ray Tune runs a grid of three learning rates as three trials on a local Ray cluster, each trial a
Lightning Trainer saving into its own folder ``SWEEP/lr=<lr>/``. Every trial's callback also offers
its new bests to ``SWEEP/best.ckpt`` (``sweep_best=``), shared by all trials, which ends at the
best checkpoint of the whole sweep, with its score and its trial in the record. The callback
argument is the whole integration: nothing about the alias goes through Ray.

    python examples/ray_tune_sweep.py runs/sweep          # a folder: the trials agree through a file lock
    python examples/ray_tune_sweep.py s3://bucket/sweep   # a bucket: through conditional writes
    lightning-bestlink show runs/sweep                    # the sweep's best, with its score and trial

On a bucket each trial finds the store as its client reads the environment (``AWS_*`` for S3,
``STORAGE_EMULATOR_HOST`` or Google's credentials for GCS, ``AZURE_STORAGE_*`` for Azure: see
docs/remote.md). Synthetic data, a few seconds per trial on a CPU, nothing downloaded.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

LRS = (0.3, 0.03, 0.003)


def trial(config: dict[str, Any]) -> None:
    """One trial, in a Ray worker process."""
    import lightning.pytorch as pl
    import torch
    from ray import tune
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_bestlink import ModelCheckpointWithLinkBest

    sweep, lr = config["sweep"], config["lr"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g)

    class Regression(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 1)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=lr)

    data = DataLoader(TensorDataset(x, y), batch_size=16)
    checkpoint = ModelCheckpointWithLinkBest(
        save_best=True,
        monitor="val_loss",
        dirpath=f"{sweep}/lr={lr}",  # this trial's own folder
        sweep_best=f"{sweep}/best.ckpt",  # shared by every trial
    )
    trainer = pl.Trainer(
        max_epochs=4,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(Regression(), data, data)
    tune.report({"val_loss": float(checkpoint.best_model_score)})


def main(sweep: str) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    import ray
    from ray import tune

    from lightning_bestlink import read_record

    if "://" not in sweep:
        sweep = os.path.abspath(sweep)  # Ray runs each trial in a working directory of its own
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        with tempfile.TemporaryDirectory(prefix="ray-results-") as results_dir:  # Ray Tune's own bookkeeping
            tuner = tune.Tuner(
                tune.with_resources(trial, {"cpu": 1}),
                param_space={"sweep": sweep, "lr": tune.grid_search(list(LRS))},
                # a trial after the first two runs in a worker that has imported torch and Lightning
                tune_config=tune.TuneConfig(metric="val_loss", mode="min", reuse_actors=True),
                run_config=tune.RunConfig(storage_path=results_dir, name="bestlink", verbose=0),
            )
            results = tuner.fit()
            assert not results.errors, results.errors
            tune_best = results.get_best_result().config["lr"]
    finally:
        ray.shutdown()
    record = read_record(f"{sweep}/best.ckpt")
    assert record is not None
    score, run = record["score"], record["extra"]["run"]
    print(f"best of {len(LRS)} trials: {record['target']} (val_loss={score:.4g}, run {run})")
    print(f"Ray Tune's best trial: lr={tune_best}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/ray_sweep")
