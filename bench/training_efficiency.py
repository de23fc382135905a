"""Training efficiency: end-to-end Trainer.fit images/s over model-only images/s (same model stepping on
batches already in memory), for model=cnn and model=ann, with augment=basic.

python bench/training_efficiency.py [--dataset synthetic|sample]
"""

from __future__ import annotations

import itertools
import tempfile
import time

import pytorch_lightning as pl
import torch
from benchdata import PROJECT, arguments, indexed
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from idclab.config.build import build_classifier
from idclab.data.augment import basic
from idclab.data.datamodule import PatchDataModule, PreparedData, channel_stats
from idclab.data.split import stratified

BATCH, WARMUP, STEPS = 128, 5, 40


class StepTimer(pl.Callback):
    """Wall time of training steps after the warm-up ones."""

    def __init__(self):
        self.start = 0.0
        self.images = 0
        self.elapsed = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= WARMUP:
            self.images += len(batch[1])
            self.elapsed = time.perf_counter() - self.start


def classifier_for(model: str, data: PreparedData):
    with initialize_config_dir(str(PROJECT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", f"paths.root={PROJECT}", "paths.output_dir=/tmp"])
    config = OmegaConf.to_container(cfg, resolve=True)
    mean, std = channel_stats(data.cache.images, data.split.rows["train"], 0)
    return build_classifier(config, data.index.class_counts(data.split.rows["train"]), mean, std)


def fit_speed(model: str, datamodule: PatchDataModule) -> float:
    timer = StepTimer()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=WARMUP + STEPS, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer], default_root_dir=tempfile.mkdtemp())
    trainer.fit(classifier_for(model, datamodule.data), datamodule=datamodule)
    return timer.images / timer.elapsed


def model_only_speed(model: str, datamodule: PatchDataModule) -> float:
    classifier = classifier_for(model, datamodule.data)
    batches = list(itertools.islice(datamodule.train_dataloader(), 10))
    optimizer = classifier.configure_optimizers()
    classifier.train()
    seen, start = 0, 0.0
    for step, (images, targets, _) in enumerate(itertools.islice(itertools.cycle(batches), WARMUP + STEPS)):
        if step == WARMUP:
            start = time.perf_counter()
        optimizer.zero_grad()
        loss = classifier.criterion(classifier(images), targets)
        loss.backward()
        optimizer.step()
        seen += len(targets) if step >= WARMUP else 0
    return seen / (time.perf_counter() - start)


def main() -> None:
    args = arguments(__doc__)
    pl.seed_everything(0)
    index, cache = indexed(args)
    split = stratified(index.patients, index.labels)
    datamodule = PatchDataModule(PreparedData("bench", index, cache, split), BATCH, 0, augmentation=basic())
    print(f"\nTraining efficiency on {args.dataset} ({len(index)} patches), batch {BATCH}, "
          f"{STEPS} timed steps after {WARMUP} warm-up, {torch.get_num_threads()} threads")
    print(f"{'model':<6} {'model-only img/s':>17} {'Trainer.fit img/s':>18} {'ratio':>6}")
    ratios = {}
    for model in ("cnn", "ann"):
        # alternate the two measurements and keep the best of each, to damp a noisy shared machine
        only = max(model_only_speed(model, datamodule) for _ in range(2))
        fit = max(fit_speed(model, datamodule) for _ in range(2))
        ratios[model] = fit / only
        print(f"{model:<6} {only:>17.0f} {fit:>18.0f} {ratios[model]:>6.2f}")
    print(f"SUMMARY training efficiency: cnn {ratios['cnn']:.2f} (target >= 0.9), "
          f"ann {ratios['ann']:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
