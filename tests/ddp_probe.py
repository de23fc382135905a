"""Run by test_distributed.py: validate the same weights on the tiny data with 1 or 2 CPU processes.

`python ddp_probe.py OUT_DIR DEVICES DATA_DIR`: rank 0 writes what the validation metrics gathered
(rows, targets, probabilities, and how many patches the processes saw before de-duplication) to
OUT_DIR/gathered.npz and the logged metrics to OUT_DIR/metrics.json. Lightning's DDP launcher re-runs
this file for rank 1.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from conftest import CONF, TINY_DATA
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from idclab.classifier.module import IDCClassifier
from idclab.config.build import build_classifier
from idclab.data.datamodule import PatchDataModule, channel_stats, prepare_data


class KeepGathered(pl.Callback):
    """Copy what the validation metrics gathered (this hook runs before the module's, which resets them)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: IDCClassifier) -> None:
        metrics = pl_module.metrics["val_metrics"]
        seen = len(metrics.rows.compute())  # every process calls the gathers
        epoch = metrics.gathered()
        if trainer.global_rank == 0:
            np.savez(self.out_dir / "gathered.npz", rows=epoch.rows.numpy(), targets=epoch.targets.numpy(),
                     probs=epoch.probs.numpy(), seen=seen)


def odd_batch_count_size(patches: int) -> int:
    """A batch size giving an odd number of batches, so two processes need a padded (repeated) batch."""
    return next(size for size in range(5, patches) if math.ceil(patches / size) % 2 == 1)


def main(out_dir: Path, devices: int, data_dir: str) -> None:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root={out_dir}", f"paths.output_dir={out_dir}",
                                          f"paths.data_dir={data_dir}", *TINY_DATA])
    config = OmegaConf.to_container(cfg, resolve=True)
    data = prepare_data(cfg.data, cfg.split)
    pl.seed_everything(0)
    mean, std = channel_stats(data.cache.images, data.split.rows["train"], 0)
    classifier = build_classifier(config, data.index.class_counts(data.split.rows["train"]), mean, std)
    datamodule = PatchDataModule(data, odd_batch_count_size(len(data.split.rows["val"])))
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         callbacks=[KeepGathered(out_dir)], default_root_dir=out_dir)
    (metrics,) = trainer.validate(classifier, datamodule=datamodule, verbose=False)
    if trainer.global_rank == 0:
        (out_dir / "metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
