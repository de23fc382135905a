"""The training callbacks a run config asks for: weight averaging, early stopping, deferred re-weighting."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping

from idclab.config import registry
from idclab.training.plan import FitPlan


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
