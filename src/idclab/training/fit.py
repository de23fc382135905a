"""The fit stage on one split: one model, or a seed ensemble of them; then its threshold, test and report.

`fit_and_test` is what a single run does and what each fold of a cross-validation does.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from idclab.classifier.ensemble import ENSEMBLE_FILE, EnsembleClassifier, save_ensemble
from idclab.classifier.module import IDCClassifier
from idclab.config import registry
from idclab.config.build import build_classifier, load_classifier, store_threshold
from idclab.data.datamodule import PatchDataModule, PreparedData, channel_stats
from idclab.data.neighbourhood import views_of
from idclab.data.sampling import deferred
from idclab.evaluation.calibrate import (
    choose_threshold,
    context_metrics,
    context_record,
    one_device_trainer,
)
from idclab.evaluation.oof import patch_frame
from idclab.evaluation.reporting import test_and_report, threshold_free
from idclab.fileutil import write_json
from idclab.models.stain import fit_stain
from idclab.tracking.inputs import VAL_PREDICTIONS
from idclab.tracking.runs import CHECKPOINT_TAG, TRAIN_MINUTES, TrackedRun, log_model
from idclab.training.callbacks import EpochClock
from idclab.training.plan import FitPlan
from idclab.training.resume import LAST_CHECKPOINT, written_since_start
from idclab.training.trainer import make_trainer, single_process
from idclab.verbosity import detail

log = logging.getLogger(__name__)
MEMBER_FILE = "member.json"  # in a seed ensemble member's folder once it is trained: a resumed run keeps it


@dataclass
class FitResult:
    """What one fit-and-test gives: the selection score, best checkpoint, threshold, the validation predictions
    it was tuned on and the test predictions (rows of the data index with P(IDC))."""

    best_score: float
    best_path: str | None
    threshold: float
    val_rows: np.ndarray
    val_probs: np.ndarray
    val_patch_probs: np.ndarray  # the validation patches' own P(IDC), before spatial context
    test_rows: np.ndarray
    test_probs: np.ndarray
    metrics: dict[str, Any]
    context: dict[str, Any]  # the tuned spatial context (see `context_record`), empty without
    test_patch_probs: np.ndarray  # the test patches' own P(IDC), before spatial context
    train_seconds: float = 0.0  # the training epochs' time (with validation), over all members and attempts


@dataclass
class Fitted:
    """A trained model (one classifier, or a seed ensemble of them) ready for its threshold and test."""

    datamodule: PatchDataModule
    classifier: IDCClassifier
    trainer: pl.Trainer
    best_path: str | None  # the best epoch's checkpoint (None for an ensemble: its members' are in `members`)
    best_score: float
    members: list[str] | None = None
    train_seconds: float = 0.0


def make_model_and_data(plan: FitPlan, data: PreparedData, seed: int | None = None, start: bool = True
                        ) -> tuple[PatchDataModule, IDCClassifier]:
    """The DataModule (augmentation and sampler from the registry) and a fresh classifier for `data`; `seed`
    (default `plan.seed`) seeds the data order, the channel statistics and the stain fit. `start=False` (resuming
    from a checkpoint, which holds the weights) reads and fetches no starting weights."""
    seed = plan.seed if seed is None else seed
    config = plan.config
    augmentation = registry.build("augment", config["augment"])
    sampler_factory = deferred(registry.factory("sampler", config["sampler"]), plan.option("drw.start_epoch"))
    datamodule = PatchDataModule(data, plan.batch_size, plan.num_workers, augmentation, sampler_factory, seed,
                                 views_of(config))
    mean, std = channel_stats(data.cache.images, data.split.rows["train"], seed)
    classifier = build_classifier(config, datamodule.train_class_counts(), mean, std, start=start, **data.record())
    fit_stain(classifier.stain, data.cache.images, data.split.rows["train"], seed)
    return datamodule, classifier


def fit_member(plan: FitPlan, data: PreparedData, run: TrackedRun, out_dir: Path, ckpt_path: Path | None = None,
               seed: int | None = None, prefix: str = "") -> Fitted:
    """Fit one classifier on train, keeping its best epoch on val (metrics logged to `run` after `prefix`)."""
    datamodule, classifier = make_model_and_data(plan, data, seed, start=ckpt_path is None)
    trainer, checkpoint = make_trainer(plan, out_dir, logger=run.lightning_logger(prefix))
    with warnings.catch_warnings():
        if ckpt_path:  # resuming: the folder holds this run's own checkpoints, as it should
            warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    (clock,) = [callback for callback in trainer.callbacks if isinstance(callback, EpochClock)]
    trainer = single_process(trainer, plan, run, out_dir)
    score = checkpoint.best_model_score
    best_score = float(score) if score is not None else float("nan")
    if not checkpoint.best_model_path:
        log.warning("no checkpoint was saved (fast_dev_run?): testing the last weights")
    return Fitted(datamodule, classifier, trainer, checkpoint.best_model_path or None, best_score,
                  train_seconds=clock.seconds)


def fit_seed_ensemble(plan: FitPlan, data: PreparedData, run: TrackedRun, out_dir: Path, resuming: bool = False
                      ) -> Fitted:
    """Fit `plan.members` classifiers on the same split (`fit_members`), then join their best epochs into one
    `EnsembleClassifier` (mean P(IDC)) scored on val by `plan.monitor`."""
    paths, datamodule, seconds = fit_members(plan, data, run, out_dir, resuming)
    ensemble = EnsembleClassifier([load_classifier(p) for p in paths], 0.5, **data.record())
    (scores,) = one_device_trainer(plan.trainer, out_dir).validate(ensemble, datamodule=datamodule, verbose=False)
    best_score = float(scores[plan.monitor])
    print(f"Seed ensemble of {plan.members}: {plan.monitor} {best_score:.4f} on validation")
    return Fitted(datamodule, ensemble, one_device_trainer(plan.trainer, out_dir, run.lightning_logger()), None,
                  best_score, paths, seconds)


def fit_members(plan: FitPlan, data: PreparedData, run: TrackedRun, out_dir: Path, resuming: bool = False
                ) -> tuple[list[str], PatchDataModule, float]:
    """Train member k seeded with `seed + k` in `out_dir/member_k` (its metrics under `member_k/`); the members'
    best checkpoints, a DataModule of `data` and their training seconds. Resuming, a member this run finished is
    kept and an unfinished one continues from its last checkpoint."""
    paths, datamodule, members, seconds = [], None, plan.members, 0.0
    for k in range(members):
        member_dir, seed = out_dir / f"member_{k}", plan.seed + k
        record = member_dir / MEMBER_FILE
        kept = trained_member(record, run.run_id) if resuming else None
        if kept:
            print(f"Ensemble member {k + 1}/{members} (seed {seed}): trained, kept ({kept[0]})")
            paths.append(kept[0])
            seconds += kept[1]
            continue
        print(f"Ensemble member {k + 1}/{members} (seed {seed})")
        pl.seed_everything(seed, workers=True, verbose=False)
        last = member_dir / LAST_CHECKPOINT
        resume_from = last if resuming and written_since_start(last, out_dir) else None
        fitted = fit_member(plan, data, run, member_dir, resume_from, seed, prefix=f"member_{k}/")
        if not fitted.best_path:
            raise RuntimeError(f"ensemble member {k} saved no checkpoint (fast_dev_run?): an ensemble needs them all")
        run.log_metrics({f"member_{k}/best_{plan.monitor}": fitted.best_score})
        write_json(record, {"run_id": run.run_id, "best_path": fitted.best_path,
                            "train_seconds": fitted.train_seconds})
        paths.append(fitted.best_path)
        datamodule, seconds = fitted.datamodule, seconds + fitted.train_seconds
    return paths, datamodule or PatchDataModule(data, plan.batch_size, plan.num_workers,
                                                neighbourhood=views_of(plan.config)), seconds


def trained_member(record: Path, run_id: str) -> tuple[str, float] | None:
    """The best checkpoint and training seconds of a member that run `run_id` finished, from the member's record:
    None unless the record is that run's and names a file in the member's own checkpoints folder (the member is then
    trained again)."""
    try:
        saved = json.loads(record.read_text())
        best, seconds = saved["best_path"], float(saved.get("train_seconds", 0.0))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (best, seconds) if saved.get("run_id") == run_id and own_checkpoint(best, record.parent) else None


def own_checkpoint(path: object, folder: Path) -> bool:
    """Whether `path` names an existing file in `folder/checkpoints` (a record may name only its own folder's)."""
    if not isinstance(path, str):
        return False
    best = Path(path)
    return best.is_file() and best.parent.resolve() == (folder / "checkpoints").resolve()


def fit(plan: FitPlan, data: PreparedData, run: TrackedRun, out_dir: Path, ckpt_path: Path | None = None
        ) -> Fitted:
    """One model, or with `ensemble.members` > 1 a seed ensemble, fitted on train with epochs chosen on val."""
    if plan.members > 1:
        return fit_seed_ensemble(plan, data, run, out_dir, resuming=ckpt_path is not None)
    return fit_member(plan, data, run, out_dir, ckpt_path)


def fit_and_test(plan: FitPlan, data: PreparedData, run: TrackedRun, out_dir: Path, ckpt_path: Path | None = None,
                 log_fold_model: bool = True) -> FitResult:
    """Fit, calibrate (threshold and context on val), save the operating point with the weights, test and report
    into `run`, and log the model."""
    fitted = fit(plan, data, run, out_dir, ckpt_path)
    classifier, trainer = fitted.classifier, fitted.trainer
    threshold, val_rows, val_probs, val_patch_probs = choose_threshold(
        trainer, classifier, fitted.datamodule, fitted.best_path, plan.threshold, plan.context)
    validation = patch_frame(data, 0, val_rows, val_probs, val_patch_probs).drop(columns="fold")
    run.log_text(validation.to_csv(index=False), VAL_PREDICTIONS)  # what a study's verdict is recomputed from
    model_scores = threshold_free(validation["target"].to_numpy(), val_patch_probs)  # the patches alone
    ensemble_clock = {TRAIN_MINUTES: fitted.train_seconds / 60} if fitted.members else {}  # one model's: per epoch
    run.log_metrics({"threshold": threshold} | ensemble_clock | context_metrics(classifier, plan.context)
                    | {f"val_model_{name}": value for name, value in model_scores.items()})
    best_path = save_operating_point(fitted, threshold, plan.threshold["name"], out_dir, data)
    if best_path:
        run.set_tags({CHECKPOINT_TAG: str(Path(best_path).resolve())})
        run.log_metrics({f"best_{plan.monitor}": fitted.best_score})
        if plan.log_checkpoint:
            run.log_file(best_path, "checkpoints")
    metrics = test_and_report(trainer, classifier, fitted.datamodule, out_dir / "test", run, **plan.report)
    if best_path and plan.log_model and log_fold_model:
        detail(f"Logged MLflow model {log_model(run, best_path)}")
    return FitResult(fitted.best_score, best_path, threshold, val_rows, val_probs, val_patch_probs,
                     classifier.test_rows.numpy(), classifier.test_probs.numpy(), metrics, context_record(classifier),
                     classifier.test_patch_probs.numpy(), fitted.train_seconds)


def save_operating_point(fitted: Fitted, threshold: float, method: str, out_dir: Path, data: PreparedData
                         ) -> str | None:
    """Write the tuned threshold and context into the best checkpoint (or join a seed ensemble's members into one
    ensemble checkpoint holding them); the checkpoint's path."""
    context = context_record(fitted.classifier)
    if fitted.members:
        path = out_dir / "checkpoints" / ENSEMBLE_FILE
        return str(save_ensemble([Path(p) for p in fitted.members], threshold, path, data.record(), context))
    if fitted.best_path:
        store_threshold(fitted.best_path, threshold, method, **context)
    return fitted.best_path
