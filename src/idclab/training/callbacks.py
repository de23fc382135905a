"""The training callbacks of a run: the epoch clock, and those its config asks for: weight averaging, early
stopping, deferred re-weighting."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping

from idclab.config import registry
from idclab.tracking.runs import TRAIN_MINUTES, MLflowEpochLogger
from idclab.training.plan import FitPlan


class EpochClock(Callback):
    """The time the run's epochs took (training and validation), summed over a resumed run's attempts: logged as
    `train_minutes` each epoch (with the epoch's metrics, which the last checkpoint commits) and kept in the
    checkpoint's callback state. An epoch cut midway is not counted; it is run again."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.started = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds += time.perf_counter() - self.started
        for logger in trainer.loggers:
            if isinstance(logger, MLflowEpochLogger):
                logger.log_metrics({TRAIN_MINUTES: self.seconds / 60, "epoch": trainer.current_epoch})

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds = float(state_dict.get("seconds", 0.0))


class DeferredReweighting(Callback):
    """DRW (Cao et al. 2019): the loss's class weights are uniform before `start_epoch` and as configured
    from it on. (A balancing sampler is deferred by `idclab.data.sampling.deferred`.)"""

    def __init__(self, start_epoch: int):
        self.start_epoch = start_epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        criterion = pl_module.criterion
        if hasattr(criterion, "set_class_weighting"):
            criterion.set_class_weighting(trainer.current_epoch >= self.start_epoch)


def training_callbacks(plan: FitPlan) -> list[Callback]:
    """Callbacks for `averaging`, `early_stopping.patience` and `drw.start_epoch` (groups/keys absent: off)."""
    callbacks: list[Callback] = []
    averager = registry.build("averaging", plan.averaging, lr=plan.option("optim.lr"))
    if averager is not None:
        callbacks.append(averager)
    patience = plan.option("early_stopping.patience")
    if patience is not None:
        callbacks.append(EarlyStopping(monitor=plan.monitor, mode=plan.mode, patience=patience))
    start_epoch = plan.option("drw.start_epoch")
    if start_epoch is not None:
        callbacks.append(DeferredReweighting(start_epoch))
    return callbacks
