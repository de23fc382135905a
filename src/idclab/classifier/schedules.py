"""Learning-rate schedules of `optim.schedule`, stepped after every optimizer step.

- `none`: constant, after an optional linear warm-up of `optim.warmup_epochs`;
- `cosine`: linear warm-up, then cosine decay to 0 at the last step;
- `onecycle`: torch's OneCycleLR peaking at `optim.lr` after the warm-up (0: torch's default 30% of the run).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """The multiplier of the base learning rate at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1 + math.cos(math.pi * progress))


def scheduled(optim: Mapping[str, Any]) -> bool:
    """True if an `optim` config changes the learning rate during training."""
    return optim.get("schedule", "none") != "none" or optim.get("warmup_epochs", 0) > 0


def make_scheduler(optimizer: torch.optim.Optimizer, optim: Mapping[str, Any], max_epochs: int,
                   total_steps: int) -> LRScheduler:
    """The per-step scheduler of a `scheduled` `optim` config, over `total_steps` optimizer steps."""
    schedule = optim.get("schedule", "none")
    warmup_steps = round(optim.get("warmup_epochs", 0) * total_steps / max(1, max_epochs))
    if schedule == "onecycle":
        peak = [group["lr"] for group in optimizer.param_groups]
        rise = warmup_steps / total_steps if warmup_steps else 0.3
        return OneCycleLR(optimizer, max_lr=peak, total_steps=total_steps, pct_start=rise)
    if schedule not in ("none", "cosine"):
        raise ValueError(f"optim.schedule must be none, cosine or onecycle, got {schedule!r}")
    factor = functools.partial(lr_factor, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps)
    return LambdaLR(optimizer, factor)
