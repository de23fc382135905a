"""Training progress on the console: in a log (batch jobs, files, CI, a pipe) one line per epoch; in a terminal a
progress bar that keeps each finished epoch's line. Both count epochs from 1 (`epoch 3/10`, bar `Epoch 3/10`) and show
the same metrics: the monitored one among them."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm, convert_inf

SHOWN = (("train_loss", "train_loss"), ("val_auprc", "val_auprc"), ("val_f1", "val_f1"),
         ("val_balanced_accuracy", "val_bac"))  # (logged metric, label)


def shown(monitor: str | None = None) -> tuple[tuple[str, str], ...]:
    """The (metric, label) pairs an epoch shows: `SHOWN`, and the monitored metric when it is not among them."""
    if monitor is None or monitor in dict(SHOWN):
        return SHOWN
    return (*SHOWN, (monitor, monitor))


def epoch_number(epoch: int, max_epochs: int | None) -> str:
    """`3/10` for Lightning's 0-based epoch 2 of 10 (`3` without a known end)."""
    return f"{epoch + 1}" + (f"/{max_epochs}" if max_epochs and max_epochs > 0 else "")


def epoch_line(epoch: int, max_epochs: int | None, metrics: Mapping[str, Any], seconds: float,
               monitor: str | None = None) -> str:
    """`epoch 3/10  train_loss 0.4123  val_auprc 0.8700  val_f1 0.8000  val_bac 0.8100  12.3 s` (0-based `epoch`)."""
    parts = [f"epoch {epoch_number(epoch, max_epochs)}"]
    for name, label in shown(monitor):
        value = metrics.get(name)
        parts.append(f"{label} {float(value):.4f}" if value is not None else f"{label} n/a")
    return "  ".join([*parts, f"{seconds:.1f} s"])


def in_terminal() -> bool:
    """Whether the console is a terminal, where a live progress bar can redraw its line."""
    return sys.stdout.isatty()


class EpochLine(Callback):
    """Prints `epoch_line` at the end of every training epoch (after its validation) when no live progress bar is
    seen: stdout is not a terminal, or the progress bar is disabled."""

    def __init__(self, monitor: str | None = None) -> None:
        self.monitor = monitor
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if in_terminal() and trainer.progress_bar_callback is not None:
            return
        metrics = trainer.callback_metrics  # every rank: under DDP reading them synchronises the processes
        if trainer.is_global_zero:
            print(epoch_line(trainer.current_epoch, trainer.max_epochs, metrics, time.perf_counter() - self.started,
                             self.monitor), flush=True)


class EpochBar(TQDMProgressBar):
    """Lightning's tqdm bar, epochs counted from 1 like the epoch lines; each finished epoch's bar stays as its line
    with the shown metrics (no `v_num`); the validation, calibration and test bars vanish when done."""

    def __init__(self, monitor: str | None = None) -> None:
        super().__init__(leave=True)
        self.monitor = monitor
        self.label = "Epoch"

    @property
    def train_description(self) -> str:
        return self.label

    def on_train_start(self, *args: Any) -> None:
        self.train_progress_bar = Tqdm(disable=True)  # a placeholder: each epoch opens its own bar (Lightning's
        # visible one would stay behind as an empty `Training` line)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """This epoch's bar, opened with its 1-based label (Lightning's would draw `Epoch 0` first)."""
        self.label = f"Epoch {epoch_number(trainer.current_epoch, trainer.max_epochs)}"
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = trainer.callback_metrics
        return {label: f"{float(metrics[name]):.4f}" for name, label in shown(self.monitor) if name in metrics}

    def init_predict_tqdm(self) -> Any:
        bar = super().init_predict_tqdm()
        bar.leave = False
        return bar

    def init_test_tqdm(self) -> Any:
        bar = super().init_test_tqdm()
        bar.leave = False
        return bar


def progress_callbacks(bar_wanted: bool, monitor: str | None = None) -> tuple[list[Callback], bool]:
    """The progress callbacks of a training run and whether Lightning's progress bar is on: the epoch line, plus
    `EpochBar` in a terminal when `bar_wanted` (`trainer.enable_progress_bar`). In a log no bar is drawn: its
    redraws would be lines of their own."""
    bar = bool(bar_wanted) and in_terminal()
    return [EpochLine(monitor), *([EpochBar(monitor)] if bar else [])], bar
