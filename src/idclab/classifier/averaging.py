"""Weight averaging, chosen by the `averaging` config group: none, ema or swa.

In both cases the averaged weights are what validation scores, the best checkpoint keeps, and testing,
evaluation and prediction use: a checkpoint's state dict holds the averaged model.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, StochasticWeightAveraging

TRAINING_WEIGHTS = "ema_training_weights"  # checkpoint key of the (non-averaged) weights training resumes from


class EMA(Callback):
    """Exponential moving average of the backbone's weights and batch-norm statistics, updated after every
    training batch with decay min(`decay`, (1 + t) / (10 + t)) at update t (a short warm-up, so that short
    runs are not dominated by the initial weights).

    Validation runs on the averaged weights; checkpoints store them as the model and keep the training
    weights in this callback's state, so a resumed run continues training from them.
    """

    def __init__(self, decay: float = 0.999):
        if not 0 < decay < 1:
            raise ValueError(f"averaging.decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.average: dict[str, torch.Tensor] = {}
        self.training_weights: dict[str, torch.Tensor] | None = None  # held while the average is swapped in

    @staticmethod
    def _weights(pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return {key: value for key, value in pl_module.model.state_dict().items() if value.is_floating_point()}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.average = {key: value.detach().clone() for key, value in self._weights(pl_module).items()}
        if self.training_weights is not None:  # resumed: the model holds the saved average
            pl_module.model.load_state_dict(self.training_weights, strict=False)
            self.training_weights = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        weights = self._weights(pl_module)
        torch._foreach_lerp_(list(self.average.values()), [weights[key] for key in self.average], 1 - decay)
        self.updates += 1

    def _swap_in(self, pl_module: pl.LightningModule) -> None:
        self.training_weights = {key: value.detach().clone() for key, value in self._weights(pl_module).items()}
        pl_module.model.load_state_dict(self.average, strict=False)

    def _swap_out(self, pl_module: pl.LightningModule) -> None:
        pl_module.model.load_state_dict(self.training_weights, strict=False)
        self.training_weights = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.average:
            self._swap_in(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.training_weights is not None:
            self._swap_out(pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        checkpoint[TRAINING_WEIGHTS] = self.training_weights or {key: state[f"model.{key}"] for key in self.average}
        state.update({f"model.{key}": value for key, value in self.average.items()})

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self.training_weights = checkpoint.get(TRAINING_WEIGHTS)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = state_dict["updates"]


class SWA(StochasticWeightAveraging):
    """Lightning's stochastic weight averaging, with the averaged model as the run's best checkpoint.

    Lightning puts the averaged weights into the model after the last epoch and re-estimates batch-norm
    statistics in one extra forward-only epoch, which is then validated. This subclass takes that extra
    epoch for every model (with or without batch norm), so the averaged model is always validated, and
    makes the best checkpoint give way to it: SWA's result is the average, not an epoch picked on validation.
    """

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: pl.LightningModule) -> bool:
        return True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self._max_epochs != -1 and trainer.current_epoch == self.swa_end + 1:
            for callback in trainer.checkpoint_callbacks:
                _give_way(callback)


def _give_way(callback: Any) -> None:
    """Make a ModelCheckpoint's best score the worst possible, so its next save replaces its best file."""
    if not getattr(callback, "best_model_path", ""):
        return
    worst = torch.tensor(-torch.inf if callback.mode == "max" else torch.inf)
    callback.best_k_models = {callback.best_model_path: worst}
    callback.kth_best_model_path = callback.best_model_path
    callback.kth_value = worst
    callback.best_model_score = worst


def none(lr: float) -> None:
    """No weight averaging."""
    return None


def ema(lr: float, decay: float = 0.999) -> EMA:
    """Exponential moving average of the weights, updated every training step."""
    return EMA(decay)


def swa(lr: float, swa_lr: float | None = None, epoch_start: float = 0.75, annealing_epochs: int = 1) -> SWA:
    """Stochastic weight averaging from `epoch_start` (a fraction of max_epochs, or an epoch number >= 1),
    with the learning rate annealed to `swa_lr` (null: optim.lr) over `annealing_epochs`."""
    return SWA(swa_lrs=float(swa_lr if swa_lr is not None else lr), swa_epoch_start=epoch_start,
               annealing_epochs=annealing_epochs)
