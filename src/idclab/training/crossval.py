"""Patient-grouped k-fold cross-validation: one parent MLflow run, a child run per fold, pooled out-of-fold report.

The patients of the training and validation splits form the cross-validation pool; the split's test
patients (if any) stay held out. Folds are drawn with scikit-learn's `StratifiedGroupKFold` (grouped by
patient, stratified by class); in each fold a share `cv.val` of the remaining patients (stratified by
their IDC share), or with `cv.val=next_fold` the next fold's patients, picks the epoch and the threshold,
and the fold's own patients are predicted once, out of fold. The fold models together form an ensemble
(mean P(IDC), threshold = mean of the fold thresholds; with spatial context, the mean weight and each
fold's threshold re-tuned at it), saved as one weights-only checkpoint, tested on the held-out test
patients when there are any, and logged as the parent's MLflow model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from sklearn.model_selection import StratifiedGroupKFold

from idclab.classifier.ensemble import ENSEMBLE_FILE, save_ensemble
from idclab.config.build import load_ensemble
from idclab.config.validation import NEXT_FOLD, ConfigError
from idclab.data.datamodule import PatchDataModule, PreparedData
from idclab.data.split import PatientSplit, patch_share, patient_share, stratified_patient_split
from idclab.evaluation.calibrate import one_device_trainer
from idclab.evaluation.oof import RULES, ensemble_operating_point, oof_report, patch_frame
from idclab.evaluation.reporting import headline, test_and_report
from idclab.scoring.thresholds import rule_of
from idclab.tracking.inputs import log_inputs, recorded_start_weights, run_tags, sweep_parent
from idclab.tracking.runs import (
    CHECKPOINT_TAG,
    KIND_TAG,
    TRAIN_MINUTES,
    TrackedRun,
    end_abandoned,
    finish_run,
    log_model,
    run_link,
    run_status,
)
from idclab.training.briefing import header
from idclab.training.fit import FitResult, fit_and_test
from idclab.training.fold_record import kept_fold, save_fold
from idclab.training.plan import FitPlan, FoldPlan
from idclab.training.resume import (
    FOLD_KIND,
    OUTPUT_DIR_TAG,
    ResumePoint,
    find_resume_point,
    write_state,
)

if TYPE_CHECKING:  # only the tracking package talks to MLflow; this is a type name
    from mlflow.tracking import MlflowClient

FOLD_TAG = "idclab.fold"


def patient_folds(patients: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> list[list[str]]:
    """The patients of each fold: grouped by patient, stratified by class, seeded."""
    unique = np.unique(patients)
    if len(unique) < folds:
        raise ConfigError(f"cv.folds={folds} needs at least {folds} patients in train+val, found {len(unique)}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [sorted(np.unique(patients[test]).tolist()) for _, test in splitter.split(patients, labels, patients)]


def fold_split(data: PreparedData, pool: np.ndarray, folds: Sequence[list[str]], fold: int, val: float | str,
               seed: int, train_patients: float = 1.0, train_patches: float = 1.0) -> PatientSplit:
    """Fold `fold`'s split over the pool rows: test = its patients; val = the next fold's patients when `val` is
    `NEXT_FOLD` (over all folds, every patient validates once), else a stratified share `val` of the rest; train =
    the rest, thinned to shares `train_patients` of its patients and `train_patches` of their patches (a learning
    curve: `idclab.data.split.patient_share`, `patch_share`; val and test are unchanged)."""
    patients, labels = data.index.patients, data.index.labels
    fold_patients = folds[fold]
    out_of_fold = pool[np.isin(patients[pool], fold_patients)]
    inner = pool[~np.isin(patients[pool], fold_patients)]
    if val == NEXT_FOLD:
        held = np.isin(patients[inner], folds[(fold + 1) % len(folds)])
        rows = {"train": inner[~held], "val": inner[held], "test": out_of_fold}
        names = {"train": sorted(np.unique(patients[inner[~held]]).tolist()),
                 "val": list(folds[(fold + 1) % len(folds)])}
    else:
        nested = stratified_patient_split(patients[inner], labels[inner], {"train": 1 - val, "val": val}, seed)
        rows = {"train": inner[nested.rows["train"]], "val": inner[nested.rows["val"]], "test": out_of_fold}
        names = {"train": nested.patients["train"], "val": nested.patients["val"]}
    names["test"] = list(fold_patients)
    notes: dict[str, object] = {"fold_of": "cv"}
    if train_patients < 1:
        names["train"] = patient_share(patients[rows["train"]], labels[rows["train"]], train_patients, seed)
        rows["train"] = rows["train"][np.isin(patients[rows["train"]], names["train"])]
        notes["train_patients"] = train_patients
    if train_patches < 1:
        rows["train"] = rows["train"][patch_share(patients[rows["train"]], labels[rows["train"]], train_patches, seed)]
        notes["train_patches"] = train_patches
    split = PatientSplit(names, rows, notes)
    split.check_disjoint()
    return split


def fold_row(fold: int, split: PatientSplit, result: FitResult) -> dict[str, Any]:
    """One fold's line of the per-fold table."""
    keys = ("f1", "balanced_accuracy", "auroc", "auprc")
    return {"fold": fold, "patients": len(split.patients["test"]), "best_val_score": result.best_score,
            "threshold": result.threshold, **{f"test_{k}": float(result.metrics[f"test_{k}"]) for k in keys},
            TRAIN_MINUTES: result.train_seconds / 60}


class CrossValidated(NamedTuple):
    """A finished cross-validation: its mean best validation score, parent run (id, name) and fold ensemble (None:
    a fold saved no checkpoint)."""

    score: float
    run_id: str
    run_name: str
    model: Path | None


def cross_validate(plan: FitPlan, cv: FoldPlan, data: PreparedData, client: MlflowClient, experiment_id: str,
                   context: dict[str, Any], weights: dict[str, str], resume: ResumePoint | None = None
                   ) -> CrossValidated:
    """Run `cv.folds` folds as child runs of one parent run, recording the starting `weights`. Resuming an
    interrupted one (`resume`), the folds it finished are kept and the one it was training continues."""
    out_dir, config, monitor = cv.out_dir, plan.config, plan.monitor
    pool = np.sort(np.concatenate([data.split.rows["train"], data.split.rows["val"]]))
    folds = patient_folds(data.index.patients[pool], data.index.labels[pool], cv.folds, cv.seed)
    name = " ".join(context["overrides"]) or "defaults"
    tags = run_tags(config, context, weights) | {KIND_TAG: "train", "cv": "parent",
                                                 OUTPUT_DIR_TAG: str(out_dir.resolve())}
    rows, predictions, validations, members, contexts = [], [], [], [], []
    with TrackedRun(client, experiment_id, f"cv{cv.folds} {name}", tags, resume.run_id if resume else None,
                    parent_run_id=sweep_parent(context), system_metrics=plan.system_metrics) as parent:
        print(header(context["overrides"], data.summary(), config["logger"]["experiment_name"],
                     run_link(client.tracking_uri, experiment_id, parent.run_id)), flush=True)
        write_state(out_dir, parent.run_id, config, data.record()["data_fingerprint"])
        if resume is None:
            log_inputs(parent, config, data, weights)
        for fold, fold_patients in enumerate(folds):
            split = fold_split(data, pool, folds, fold, cv.val, cv.seed + fold, cv.train_patients, cv.train_patches)
            fold_data, fold_dir = replace(data, split=split), out_dir / f"fold_{fold}"
            kept = kept_fold(fold_dir, parent.run_id, fold_data) if resume else None
            print(f"Fold {fold + 1}/{len(folds)}: {len(split.patients['train'])} train, "
                  f"{len(split.patients['val'])} val, {len(fold_patients)} out-of-fold patients"
                  + (": finished before the interruption, kept" if kept else ""))
            if kept:
                finish_run(client, kept.run_id)
                row, result = kept.row, kept.result
            else:
                fold_tags = tags | {KIND_TAG: FOLD_KIND, "cv": "fold", FOLD_TAG: str(fold),
                                    OUTPUT_DIR_TAG: str(fold_dir.resolve())}
                row, result = fit_fold(plan, fold_data, fold, parent, f"fold {fold} {name}", fold_tags, fold_dir,
                                       resuming=resume is not None)
            rows.append(row)
            members.append(result.best_path)
            predictions.append(patch_frame(data, fold, result.test_rows, result.test_probs, result.test_patch_probs)
                               .assign(threshold=result.threshold))
            validations.append(patch_frame(data, fold, result.val_rows, result.val_probs, result.val_patch_probs))
            contexts.append(result.context)
        table = pd.DataFrame(rows)
        metrics, text = oof_report(table, pd.concat(predictions), pd.concat(validations), out_dir / "cv",
                                   plan.report["bootstrap_resamples"], RULES | {"configured": rule_of(plan.threshold)})
        print("\n" + text)
        mean_score = float(table["best_val_score"].mean())
        parent.describe(headline(metrics, (f"mean {monitor}", mean_score), prefix="oof_"))
        parent.log_metrics(metrics | {f"best_{monitor}": mean_score, "threshold": float(table["threshold"].mean()),
                                      TRAIN_MINUTES: float(table[TRAIN_MINUTES].sum())})
        for path in sorted((out_dir / "cv").iterdir()):
            parent.log_file(path, "cv")
        threshold, context = float(table["threshold"].mean()), {}
        weight = float(np.mean([c.get("context_weight", 0.0) for c in contexts]))  # 0 where validation chose none
        if plan.context["name"] != "none" and weight > 0:
            radius = int(plan.context["radius"])
            threshold, alone = ensemble_operating_point(pd.concat(validations), rule_of(plan.threshold), radius,
                                                        weight)
            context = {"context_weight": weight, "context_radius": radius, "patch_threshold": alone}
            parent.log_metrics({"context_weight": weight, "ensemble_threshold": threshold})
        model = finish_ensemble(plan, data, parent, members, threshold, out_dir, context)
    return CrossValidated(mean_score, parent.run_id, parent.run_name, model)


def fit_fold(plan: FitPlan, data: PreparedData, fold: int, parent: TrackedRun, name: str, tags: dict[str, str],
             fold_dir: Path, resuming: bool) -> tuple[dict[str, Any], FitResult]:
    """Fit and test fold `fold` (split in `data`) in a child run of `parent` and record it in `fold_dir`; its own
    interrupted run continues from its last checkpoint when `resuming` finds one. The fold's row and result."""
    resume = None
    if resuming:  # the fold's own interrupted run, a child of `parent` (gone from the store: the fold starts afresh)
        resume = find_resume_point(fold_dir, None, partial(run_status, parent.client), parent.run_id,
                                   abandon=partial(end_abandoned, parent.client))
    if resume:
        print(f"Resuming the fold's MLflow run {resume.run_id} from {resume.checkpoint}")
    with TrackedRun(parent.client, parent.experiment_id, name, tags, resume.run_id if resume else None,
                    parent_run_id=parent.run_id, system_metrics=plan.system_metrics) as child:
        write_state(fold_dir, child.run_id, plan.config, data.record()["data_fingerprint"])
        if resume is None:
            log_inputs(child, plan.config, data, recorded_start_weights(tags))
        pl.seed_everything(plan.seed, workers=True, verbose=False)  # each fold from the run's seed, resumed or not
        result = fit_and_test(plan, data, child, fold_dir, resume.checkpoint if resume else None,
                              log_fold_model=False)
        child.describe(headline(result.metrics, (plan.monitor, result.best_score)))
        row = fold_row(fold, data.split, result)
        save_fold(fold_dir, parent.run_id, child.run_id, data, row, result)
    return row, result


def finish_ensemble(plan: FitPlan, data: PreparedData, parent: TrackedRun, members: list[str | None],
                    threshold: float, out_dir: Path, context: dict[str, Any] | None = None) -> Path | None:
    """Save the fold models as one ensemble checkpoint, test it on the held-out patients, log it as a model; its
    path (None if a fold saved no checkpoint)."""
    if not all(members):
        return None
    record = data.record()  # every pool patient trained some member: none is left for an honest validation
    names = record["split_patients"]
    names["train"], names["val"] = sorted(names["train"] + names["val"]), []
    path = save_ensemble([Path(p) for p in members if p], threshold, out_dir / "checkpoints" / ENSEMBLE_FILE, record,
                         context)
    parent.set_tags({CHECKPOINT_TAG: str(path.resolve())})
    if plan.log_checkpoint:
        parent.log_file(path, "checkpoints")
    if len(data.split.rows["test"]):
        ensemble = load_ensemble(path)
        datamodule = PatchDataModule(data, plan.batch_size, plan.num_workers, neighbourhood=ensemble.input_views)
        trainer = one_device_trainer(plan.trainer, out_dir, parent.lightning_logger())
        test_and_report(trainer, ensemble, datamodule, out_dir / "test", parent, **plan.report)
    if plan.log_model:
        print(f"Logged MLflow ensemble model {log_model(parent, path)}")
    return path
