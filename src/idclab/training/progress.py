"""Progress for non-interactive logs (batch jobs, files, CI): one line per epoch instead of a progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

SHOWN = (("train_loss", "train_loss"), ("val_auprc", "val_auprc"), ("val_f1", "val_f1"),
         ("val_balanced_accuracy", "val_bac"))  # (logged metric, label)


def epoch_line(epoch: int, max_epochs: int | None, metrics: Mapping[str, Any], seconds: float) -> str:
    """`epoch 3/10  train_loss 0.4123  val_auprc 0.8700  val_f1 0.8000  val_bac 0.8100  12.3 s` (0-based `epoch`)."""
    parts = [f"epoch {epoch + 1}" + (f"/{max_epochs}" if max_epochs and max_epochs > 0 else "")]
    for name, label in SHOWN:
        value = metrics.get(name)
        parts.append(f"{label} {float(value):.4f}" if value is not None else f"{label} n/a")
    return "  ".join([*parts, f"{seconds:.1f} s"])


class EpochLine(Callback):
    """Prints `epoch_line` at the end of every training epoch (after its validation) when no live progress bar
    is seen: stdout is not a terminal, or the progress bar is disabled."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if sys.stdout.isatty() and trainer.progress_bar_callback is not None:
            return
        metrics = trainer.callback_metrics  # every rank: under DDP reading them synchronises the processes
        if trainer.is_global_zero:
            print(epoch_line(trainer.current_epoch, trainer.max_epochs, metrics, time.perf_counter() - self.started),
                  flush=True)
