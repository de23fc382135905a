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

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from scipy.sparse import csr_matrix
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from idclab.context import neighbour_matrix, smooth, tune_weight
from idclab.data.datamodule import PatchDataModule, PreparedData
from idclab.data.split import PatientSplit, patch_share, patient_share, stratified_patient_split
from idclab.ensemble import ENSEMBLE_FILE, load_ensemble, save_ensemble
from idclab.fileutil import whole_file, write_json, write_text
from idclab.metrics import binary_metrics, imbalance_metrics, interval_lines, patient_bootstrap, report
from idclab.plots import pr_figure, roc_figure, save_figure
from idclab.reporting import report_options, test_and_report, threshold_free
from idclab.thresholds import METHODS, rule_of, tune_threshold
from idclab.tracking import CHECKPOINT_TAG, KIND_TAG, TrackedRun, log_model
from idclab.training import (
    FitResult,
    context_config,
    evaluation_trainer,
    fit_and_test,
    log_inputs,
    run_tags,
    sweep_parent,
)
from idclab.validation import NEXT_FOLD, ConfigError

if TYPE_CHECKING:  # only tracking.py talks to MLflow; this is a type name
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


def pooled_metrics(targets: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Metrics of pooled out-of-fold predictions, each patch labelled at its own fold's threshold."""
    shifted = np.clip(0.5 + (probs - thresholds) / 2, 0, 1)  # >= 0.5 exactly where probs >= threshold
    values = binary_metrics(torch.from_numpy(shifted), torch.from_numpy(targets), 0.5)
    values["auroc"] = float(roc_auc_score(targets, probs))
    values["auprc"] = float(average_precision_score(targets, probs))
    return values


RULES: dict[str, tuple[str, dict[str, Any]]] = {method: (method, {}) for method in METHODS}  # tune_threshold's
# defaults: fixed 0.5, max-F1, Youden, sensitivity 0.9


def threshold_rules(val: pd.DataFrame, oof: pd.DataFrame, rules: dict[str, tuple[str, dict[str, Any]]] = RULES
                    ) -> pd.DataFrame:
    """Each threshold rule (label -> method and options) tuned on every fold's validation predictions and applied
    to that fold's out-of-fold patches: pooled F1, balanced accuracy, sensitivity and specificity per rule, on
    the same models. `val` and `oof` have columns fold, target, probability.
    """
    missing = set(oof["fold"]) - set(val["fold"])
    if missing:
        raise ValueError(f"no validation predictions for fold(s) {sorted(missing)}: cannot tune their threshold")
    rows = []
    for label, (method, options) in rules.items():
        thresholds = {fold: tune_threshold(group["target"].to_numpy(), group["probability"].to_numpy(), method,
                                           **options) for fold, group in val.groupby("fold")}
        at = oof["fold"].map(thresholds).to_numpy()
        values = pooled_metrics(oof["target"].to_numpy().astype(int), oof["probability"].to_numpy(), at)
        rows.append({"rule": label, "threshold_mean": float(np.mean(list(thresholds.values()))),
                     **{k: values[k] for k in ("f1", "balanced_accuracy", "recall", "specificity")}})
    return pd.DataFrame(rows).rename(columns={"recall": "sensitivity"})


CONTEXT_RADII = (1, 2)  # spatial context compared on the same fold models: none, then these radii (in patches)
MatrixBuilder = Callable[[pd.DataFrame], csr_matrix]  # a frame of patches -> its row-normalised neighbour weights


def radius_neighbours(radius: int) -> MatrixBuilder:
    """The builder of `neighbour_matrix` at `radius` for a frame with columns patient, x, y."""
    def build(frame: pd.DataFrame) -> csr_matrix:
        return neighbour_matrix(frame["patient"].to_numpy(), frame["x"].to_numpy(), frame["y"].to_numpy(), radius)
    return build


CONTEXTS: dict[str, tuple[MatrixBuilder, ...]] = {
    "none": (), **{f"radius {radius}": (radius_neighbours(radius),) for radius in CONTEXT_RADII}}


def blend_tuned(frame: pd.DataFrame, probs: np.ndarray, steps: Sequence[MatrixBuilder]
                ) -> tuple[np.ndarray, list[float]]:
    """`probs` of `frame`'s patches blended step by step, each step's weight tuned (`tune_weight`) on the blend
    of the steps before it; the blend and the weights."""
    targets, weights = frame["target"].to_numpy().astype(int), []
    for build in steps:
        neighbours = build(frame)
        weights.append(tune_weight(targets, probs, neighbours))
        probs = smooth(probs, neighbours, weights[-1])
    return probs, weights


def blend_at(frame: pd.DataFrame, probs: np.ndarray, steps: Sequence[MatrixBuilder], weights: Sequence[float]
             ) -> np.ndarray:
    """`probs` of `frame`'s patches blended step by step at the given weights."""
    for build, weight in zip(steps, weights, strict=True):
        probs = smooth(probs, build(frame), weight)
    return probs


def context_rules(val: pd.DataFrame, oof: pd.DataFrame, rule: tuple[str, dict[str, Any]],
                  contexts: Mapping[str, Sequence[MatrixBuilder]] = CONTEXTS) -> pd.DataFrame:
    """Spatial context compared on the same fold models: for each context (no context, then each radius), the
    context weights (`blend_tuned`) and then the threshold (`rule`) tuned on every fold's validation predictions,
    and applied to that fold's out-of-fold patches (blended with their neighbours among them). `val` and `oof`
    have columns fold, patient, x, y, target and the patches' own P(IDC) in `patch_probability` (or
    `probability`). Pooled AUROC, AUPRC, F1, balanced accuracy, sensitivity and specificity per row, the fold
    mean of each step's weight (`weight_mean`, then `weight_mean_2`, ... for contexts of several steps), and the
    validation evidence `val_crossfit_auroc`/`_auprc` (see `cross_fitted`) to choose a context by.
    """
    method, options = rule
    column = "patch_probability" if "patch_probability" in oof else "probability"
    val_targets_all = val["target"].to_numpy().astype(int)
    rows = []
    for name, steps in contexts.items():
        probs, thresholds, weights = np.zeros(len(oof)), np.zeros(len(oof)), []
        for fold, fold_oof in oof.groupby("fold"):
            fold_val = val[val["fold"] == fold]
            val_probs, fold_weights = blend_tuned(fold_val, fold_val[column].to_numpy(dtype=float), steps)
            at = np.flatnonzero(oof["fold"].to_numpy() == fold)
            probs[at] = blend_at(fold_oof, fold_oof[column].to_numpy(dtype=float), steps, fold_weights)
            thresholds[at] = tune_threshold(fold_val["target"].to_numpy().astype(int), val_probs, method, **options)
            weights.append(fold_weights)
        step_means = np.mean(weights, axis=0) if steps else [0.0]
        values = pooled_metrics(oof["target"].to_numpy().astype(int), probs, thresholds)
        crossfit = threshold_free(val_targets_all, cross_fitted(val, column, steps))
        rows.append({"context": name,
                     **{"weight_mean" + (f"_{k + 1}" if k else ""): float(m) for k, m in enumerate(step_means)},
                     **{f"val_crossfit_{k}": v for k, v in crossfit.items()},
                     **{k: values[k] for k in ("auroc", "auprc", "f1", "balanced_accuracy", "recall", "specificity")}})
    return pd.DataFrame(rows).rename(columns={"recall": "sensitivity"})


def validation_halves(val: pd.DataFrame) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each fold, twice: boolean masks over `val`'s rows of one half of that fold's validation patients (the
    half scored) and of the other half (the half tuned on). Halves: alternate patients in sorted order."""
    folds, patients = val["fold"].to_numpy(), val["patient"].to_numpy().astype(str)
    for fold in np.unique(folds):
        names = np.unique(patients[folds == fold])
        first = (folds == fold) & np.isin(patients, names[::2])
        second = (folds == fold) & ~first
        for scored, tuned_on in ((first, second), (second, first)):
            if scored.any():
                yield scored, tuned_on


def cross_fitted(val: pd.DataFrame, column: str, steps: Sequence[MatrixBuilder]) -> np.ndarray:
    """Each fold's validation probabilities blended (`steps`) at the weights tuned on the other half of that
    fold's validation patients (`validation_halves`), so that what spatial context buys is measured on patients
    its weights were not tuned on."""
    probs, out = val[column].to_numpy(dtype=float), val[column].to_numpy(dtype=float).copy()
    for scored, tuned_on in validation_halves(val):
        _, weights = blend_tuned(val[tuned_on], probs[tuned_on], steps)
        out[scored] = blend_at(val[scored], probs[scored], steps, weights)
    return out


def patient_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per out-of-fold patient: patches, IDC share, mean P(IDC), misclassified patches at its fold's threshold
    (false negatives, false positives) and its own AUROC (NaN for a single-class patient); most errors first."""
    rows = []
    for patient, group in predictions.groupby("patient", sort=False):
        targets, probs = group["target"].to_numpy().astype(int), group["probability"].to_numpy()
        labels = probs >= group["threshold"].to_numpy()
        rows.append({"patient": patient, "fold": int(group["fold"].iloc[0]), "patches": len(group),
                     "idc_share": float(targets.mean()), "mean_probability": float(probs.mean()),
                     "errors": int((labels != targets).sum()), "false_negatives": int((~labels & (targets == 1)).sum()),
                     "false_positives": int((labels & (targets == 0)).sum()),
                     "auroc": float(roc_auc_score(targets, probs)) if len(np.unique(targets)) == 2 else float("nan")})
    return pd.DataFrame(rows).sort_values(["errors", "patches"], ascending=[False, False], ignore_index=True)


def oof_report(folds: pd.DataFrame, predictions: pd.DataFrame, val: pd.DataFrame, out_dir: Path, resamples: int,
               rules: dict[str, tuple[str, dict[str, Any]]] = RULES) -> tuple[dict[str, float], str]:
    """The pooled out-of-fold report (text, metrics with 95% patient-bootstrap intervals), fold mean ± std and
    the threshold `rules` compared on the same fold models (`val`: each fold's validation predictions)."""
    targets = predictions["target"].to_numpy().astype(int)
    probs = predictions["probability"].to_numpy()
    thresholds = predictions["threshold"].to_numpy()
    patients = predictions["patient"].to_numpy()
    metrics = {f"oof_{k}": v for k, v in pooled_metrics(targets, probs, thresholds).items()}
    labels = (probs >= thresholds).astype(float)  # each patch at its fold's threshold
    class_text, _ = report(targets, labels, 0.5)
    imbalance_text, imbalance = imbalance_metrics(targets, labels, 0.5)
    metrics |= {f"oof_{k}": v for k, v in imbalance.items()}
    intervals = patient_bootstrap(targets, probs, patients, thresholds, resamples)
    for name, (low, high) in intervals.items():
        metrics |= {f"oof_{name}_ci_low": low, f"oof_{name}_ci_high": high}
    numeric = folds.drop(columns=["fold", "patients"])
    for column in numeric:
        metrics[f"cv_{column}_mean"] = float(numeric[column].mean())
        metrics[f"cv_{column}_std"] = float(numeric[column].std(ddof=1)) if len(numeric) > 1 else float("nan")
    ci_text = interval_lines(metrics, intervals, "oof_")
    compared = threshold_rules(val, predictions, rules)
    # the patches' own probabilities: with context, the blended ones were tuned on these very patients
    val_targets = val["target"].to_numpy().astype(int)
    val_probs = val["patch_probability" if "patch_probability" in val else "probability"].to_numpy()
    if len(np.unique(val_targets)) == 2:  # every fold's validation pooled: steadier than a mean of small sets
        metrics["cv_val_pooled_auroc"] = float(roc_auc_score(val_targets, val_probs))
        metrics["cv_val_pooled_auprc"] = float(average_precision_score(val_targets, val_probs))
    context_text = ""
    if not np.array_equal(predictions["patch_probability"], predictions["probability"]):  # the run used context
        alone = threshold_free(targets, predictions["patch_probability"].to_numpy())
        metrics |= {f"oof_without_context_{name}": value for name, value in alone.items()}
        context_text = (f"Without spatial context (same fold models): AUROC {metrics['oof_without_context_auroc']:.4f}"
                        f"  AUPRC {metrics['oof_without_context_auprc']:.4f}\n")
    contexts = context_rules(val, predictions, rules.get("configured", ("max_f1", {})))
    for values in contexts.to_dict("records"):
        label = values.pop("context").replace(" ", "_")
        metrics |= {f"oof_context_{label}_{k}": float(v) for k, v in values.items()}
    patients_table = patient_table(predictions)
    worst = patients_table.head(5)
    worst_share = worst["errors"].sum() / max(patients_table["errors"].sum(), 1)
    for label, values in compared.set_index("rule").to_dict("index").items():
        metrics |= {f"oof_rule_{label}_{k}": float(v) for k, v in values.items()}
    text = (f"Out-of-fold: {len(targets)} patches from {len(np.unique(patients))} patients in {len(folds)} folds "
            f"(each patch labelled at its fold's validation threshold)\n\n{class_text}\n{imbalance_text}\n"
            f"MCC {metrics['oof_mcc']:.4f}  AUROC {metrics['oof_auroc']:.4f}  AUPRC {metrics['oof_auprc']:.4f}\n"
            f"{context_text}\n"
            f"Patient-bootstrap 95% intervals ({resamples} resamples of patients):\n{ci_text}\n\n"
            f"Per fold (mean ± std):\n{folds.to_string(index=False, float_format='%.4f')}\n\n"
            f"Threshold rules, each tuned on every fold's validation patients (same models):\n"
            f"{compared.to_string(index=False, float_format='%.4f')}\n\n"
            f"Spatial context (neighbours within a radius in patches), weight then threshold tuned on every fold's "
            f"validation patients (same models):\n{contexts.to_string(index=False, float_format='%.4f')}\n\n"
            f"The {len(worst)} patients with the most misclassified patches ({worst_share:.0%} of all errors; every "
            f"patient in cv/oof_patients.csv):\n{worst.to_string(index=False, float_format='%.3f')}\n")
    write_text(out_dir / "oof_report.txt", text)
    write_json(out_dir / "oof_metrics.json", metrics)
    tables = {"folds.csv": folds, "oof_predictions.csv": predictions, "val_predictions.csv": val,
              "threshold_rules.csv": compared, "context_rules.csv": contexts, "oof_patients.csv": patients_table}
    for name, table in tables.items():
        with whole_file(out_dir / name) as partial:
            table.to_csv(partial, index=False)
    save_figure(roc_figure(targets, probs, float(np.mean(thresholds))), out_dir / "oof_roc_curve.png")
    save_figure(pr_figure(targets, probs, float(np.mean(thresholds))), out_dir / "oof_pr_curve.png")
    return metrics, text


def patch_frame(data: PreparedData, fold: int, rows: np.ndarray, probs: np.ndarray, patch_probs: np.ndarray
                ) -> pd.DataFrame:
    """One fold's predictions of index `rows`: fold, patient, file, x, y, target, probability (what the fold's
    threshold applies to) and patch_probability (the patch alone, before any spatial context)."""
    index = data.index
    return pd.DataFrame({"fold": fold, "patient": index.patients[rows].astype(str),
                         "file": [index.paths[i] for i in rows], "x": index.xs[rows], "y": index.ys[rows],
                         "target": index.labels[rows], "probability": probs, "patch_probability": patch_probs})


def fold_row(fold: int, split: PatientSplit, result: FitResult) -> dict[str, Any]:
    """One fold's line of the per-fold table."""
    keys = ("f1", "balanced_accuracy", "auroc", "auprc")
    return {"fold": fold, "patients": len(split.patients["test"]), "best_val_score": result.best_score,
            "threshold": result.threshold, **{f"test_{k}": float(result.metrics[f"test_{k}"]) for k in keys}}


def cross_validate(cfg: DictConfig, config: dict[str, Any], data: PreparedData, client: MlflowClient,
                   experiment_id: str, context: dict[str, Any]) -> float:
    """Run `cfg.cv.folds` folds as child runs of one parent run; return the mean best validation score."""
    out_dir = Path(cfg.paths.output_dir)
    pool = np.sort(np.concatenate([data.split.rows["train"], data.split.rows["val"]]))
    folds = patient_folds(data.index.patients[pool], data.index.labels[pool], cfg.cv.folds, cfg.cv.seed)
    name = " ".join(context["overrides"]) or "defaults"
    tags = run_tags(config, context) | {KIND_TAG: "train", "cv": "parent"}
    rows, predictions, validations, members, contexts = [], [], [], [], []
    with TrackedRun(client, experiment_id, f"cv{cfg.cv.folds} {name}", tags, parent_run_id=sweep_parent(context),
                    system_metrics=cfg.logger.system_metrics_interval) as parent:
        log_inputs(parent, config, data)
        for fold, fold_patients in enumerate(folds):
            split = fold_split(data, pool, folds, fold, cfg.cv.val, cfg.cv.seed + fold,
                               cfg.cv.get("train_patients", 1.0), cfg.cv.get("train_patches", 1.0))
            fold_data = replace(data, split=split)
            print(f"Fold {fold + 1}/{len(folds)}: {len(split.patients['train'])} train, "
                  f"{len(split.patients['val'])} val, {len(fold_patients)} out-of-fold patients")
            fold_tags = tags | {KIND_TAG: "cv_fold", "cv": "fold", FOLD_TAG: str(fold)}
            with TrackedRun(client, experiment_id, f"fold {fold} {name}", fold_tags, parent_run_id=parent.run_id,
                            system_metrics=cfg.logger.system_metrics_interval) as child:
                log_inputs(child, config, fold_data)
                result = fit_and_test(cfg, config, fold_data, child, out_dir / f"fold_{fold}", log_fold_model=False)
            rows.append(fold_row(fold, split, result))
            members.append(result.best_path)
            predictions.append(patch_frame(data, fold, result.test_rows, result.test_probs, result.test_patch_probs)
                               .assign(threshold=result.threshold))
            validations.append(patch_frame(data, fold, result.val_rows, result.val_probs, result.val_patch_probs))
            contexts.append(result.context)
        table = pd.DataFrame(rows)
        metrics, text = oof_report(table, pd.concat(predictions), pd.concat(validations), out_dir / "cv",
                                   int(cfg.report.bootstrap_resamples), RULES | {"configured": rule_of(cfg.threshold)})
        print("\n" + text)
        mean_score = float(table["best_val_score"].mean())
        parent.log_metrics(metrics | {f"best_{cfg.checkpoint.monitor}": mean_score,
                                      "threshold": float(table["threshold"].mean())})
        for path in sorted((out_dir / "cv").iterdir()):
            parent.log_file(path, "cv")
        threshold, context = float(table["threshold"].mean()), {}
        context_cfg = context_config(cfg)
        weight = float(np.mean([c.get("context_weight", 0.0) for c in contexts]))  # 0 where validation chose none
        if context_cfg.name != "none" and weight > 0:
            threshold, alone = ensemble_operating_point(pd.concat(validations), rule_of(cfg.threshold),
                                                        context_cfg.radius, weight)
            context = {"context_weight": weight, "context_radius": int(context_cfg.radius), "patch_threshold": alone}
            parent.log_metrics({"context_weight": weight, "ensemble_threshold": threshold})
        finish_ensemble(cfg, data, parent, members, threshold, out_dir, context)
    return mean_score


def ensemble_operating_point(val: pd.DataFrame, rule: tuple[str, dict[str, Any]], radius: int, weight: float
                             ) -> tuple[float, float]:
    """The ensemble's threshold and its threshold without context: the means over folds of the thresholds `rule`
    gives on each fold's validation patches blended at the ensemble's `weight`, and on them alone (context or
    not, as the ensemble applies it). An approximation: each is tuned on one fold model's P(IDC), while the
    ensemble averages every fold model's; no patient is left to tune on the average itself, since every pool
    patient trained some member."""
    method, options = rule
    blended, alone = [], []
    for _, fold_val in val.groupby("fold"):
        targets, probs = fold_val["target"].to_numpy().astype(int), fold_val["patch_probability"].to_numpy()
        blended.append(tune_threshold(targets, blend_at(fold_val, probs, (radius_neighbours(radius),), [weight]),
                                      method, **options))
        alone.append(tune_threshold(targets, probs, method, **options))
    return float(np.mean(blended)), float(np.mean(alone))


def finish_ensemble(cfg: DictConfig, data: PreparedData, parent: TrackedRun, members: list[str | None],
                    threshold: float, out_dir: Path, context: dict[str, Any] | None = None) -> None:
    """Save the fold models as one ensemble checkpoint, test it on the held-out patients, log it as a model."""
    if not all(members):
        return
    record = data.record()  # every pool patient trained some member: none is left for an honest validation
    names = record["split_patients"]
    names["train"], names["val"] = sorted(names["train"] + names["val"]), []
    path = save_ensemble([Path(p) for p in members if p], threshold, out_dir / "checkpoints" / ENSEMBLE_FILE, record,
                         context)
    parent.set_tags({CHECKPOINT_TAG: str(path.resolve())})
    if cfg.logger.log_checkpoint:
        parent.log_file(path, "checkpoints")
    if len(data.split.rows["test"]):
        ensemble = load_ensemble(path)
        datamodule = PatchDataModule(data, cfg.data.batch_size, cfg.data.num_workers,
                                     neighbourhood=ensemble.input_views)
        test_and_report(evaluation_trainer(cfg, out_dir, parent), ensemble, datamodule, out_dir / "test", parent,
                        **report_options(cfg.report))
    if cfg.logger.log_model:
        print(f"Logged MLflow ensemble model {log_model(parent, path)}")
