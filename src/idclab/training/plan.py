"""What the fit stage reads from a run's config, read once by the conductor: the stages below it get these typed
settings, never the whole config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idclab.config import registry
from idclab.evaluation.reporting import report_options


@dataclass(frozen=True)
class FitPlan:
    """How one split is fitted (one model or a seed ensemble), calibrated on validation, tested and logged."""

    config: dict[str, Any]  # the resolved run config: builds the classifier, augmentation, sampler and averaging
    seed: int
    members: int  # `ensemble.members`: 1 is one model
    batch_size: int
    num_workers: int
    monitor: str  # `checkpoint.monitor`: picks the epoch and scores the run
    mode: str
    trainer: dict[str, Any]  # Lightning's Trainer options (the `trainer` group)
    threshold: dict[str, Any]  # the `threshold` group: its rule on validation
    context: dict[str, Any]  # the `context` group: spatial context tuned on validation ({"name": "none"}: off)
    report: dict[str, Any]  # `test_and_report`'s options
    log_model: bool
    log_checkpoint: bool
    system_metrics: float | None  # seconds between system metrics (None: off)

    def option(self, key: str, default: Any = None) -> Any:
        """A dotted key of the run config (`drw.start_epoch`), `default` where a saved config lacks it."""
        return lookup(self.config, key, default)

    @property
    def averaging(self) -> dict[str, Any]:
        """The `averaging` group (a config saved before the group existed: its `none` option)."""
        return dict(registry.group_config(self.config, "averaging"))


@dataclass(frozen=True)
class FoldPlan:
    """Patient-grouped k-fold cross-validation (`cv`): fold count and seed, how each fold's validation patients are
    chosen, and the share of training patients and patches a learning curve keeps."""

    folds: int
    seed: int
    val: float | str
    train_patients: float
    train_patches: float
    out_dir: Path


def fit_plan(config: dict[str, Any]) -> FitPlan:
    """The fit stage's settings from a resolved run config (plain values)."""
    data, checkpoint, logger = config["data"], config["checkpoint"], config["logger"]
    return FitPlan(config=config, seed=int(config["seed"]), members=int(lookup(config, "ensemble.members", 1)),
                   batch_size=int(data["batch_size"]), num_workers=int(data["num_workers"]),
                   monitor=str(checkpoint["monitor"]), mode=str(checkpoint["mode"]), trainer=config["trainer"],
                   threshold=config["threshold"],
                   context=config.get("context") or {"name": "none"},  # absent from configs saved before the group
                   report=report_options(config["report"]), log_model=bool(logger["log_model"]),
                   log_checkpoint=bool(logger["log_checkpoint"]), system_metrics=logger.get("system_metrics_interval"))


def fold_plan(config: dict[str, Any]) -> FoldPlan:
    """The cross-validation settings of a resolved run config's `cv` (`cv.folds` set)."""
    cv = config["cv"]
    return FoldPlan(folds=int(cv["folds"]), seed=int(cv["seed"]), val=cv["val"],
                    train_patients=float(cv.get("train_patients", 1.0)),
                    train_patches=float(cv.get("train_patches", 1.0)), out_dir=Path(config["paths"]["output_dir"]))


def lookup(config: dict[str, Any], key: str, default: Any = None) -> Any:
    """A dotted key of a plain config (`drw.start_epoch`), `default` where a saved config lacks it."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value
