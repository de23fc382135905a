"""The Lightning trainer of a run: its callbacks and checkpoints, and the one-device trainer after DDP."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from idclab.classifier.interrupts import InterruptGuard
from idclab.evaluation.calibrate import one_device_trainer
from idclab.tracking.runs import TrackedRun
from idclab.training.callbacks import EpochClock, training_callbacks
from idclab.training.plan import FitPlan
from idclab.training.progress import progress_callbacks
from idclab.training.resume import LastCheckpoint
from idclab.verbosity import is_verbose


def make_trainer(plan: FitPlan, out_dir: Path, logger: Any) -> tuple[pl.Trainer, ModelCheckpoint]:
    """The Lightning Trainer of `plan.trainer`, keeping the best (by `plan.monitor`) and last checkpoints."""
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=plan.monitor,
                                 mode=plan.mode)
    progress, bar = progress_callbacks(plan.trainer["enable_progress_bar"], plan.monitor)
    callbacks = [checkpoint, LastCheckpoint(out_dir / "checkpoints"), InterruptGuard(), EpochClock(),
                 *training_callbacks(plan), *progress]
    options = {"enable_model_summary": is_verbose(), **plan.trainer, "enable_progress_bar": bar}
    trainer = pl.Trainer(**options, logger=logger, callbacks=callbacks, default_root_dir=out_dir)
    return trainer, checkpoint


def single_process(trainer: pl.Trainer, plan: FitPlan, run: TrackedRun, out_dir: Path) -> pl.Trainer:
    """The fitted trainer, or after multi-process (DDP) training a one-device trainer for rank 0's
    threshold choice and test, so the test set is seen whole and in order."""
    if trainer.world_size == 1:
        return trainer
    if torch.distributed.is_initialized():  # the workers are done: metrics must not wait for them
        torch.distributed.destroy_process_group()
    return one_device_trainer(plan.trainer, out_dir, run.lightning_logger())


def is_worker_process() -> bool:
    """Whether this process is a DDP worker rather than global rank 0: a local rank other than 0 (set by Lightning,
    torchrun or SLURM), or any process of a node other than the first (`NODE_RANK`/`GROUP_RANK`, which a node
    started by hand sets before Lightning has ranked its processes)."""
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    return rank_zero_only.rank != 0 or node != 0
