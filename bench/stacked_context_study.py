"""Stacked context: does a logistic regression on a patch and its neighbourhood beat the radius-1 blend?

The recipe blends each patch's P(IDC) with the mean of its 8 neighbours at one weight tuned on validation
(`context=neighbours`, radius 1). A blend has one free number; it cannot weigh near and far neighbours apart, nor
trust a patch with many neighbours more than one at the tissue's edge. This study fits, per fold, a logistic
regression (scikit-learn, standardised features, L2 with C=1) on the fold's validation patches, from 7 features
per patch:
- the logit of its own P(IDC);
- for the rings at Chebyshev distance 1, 2 and 3 patch steps: the mean P(IDC) of the patient's patches on the
  ring (0 when none) and the share of the ring's 8k positions they fill.
It needs no training of networks: it re-scores the saved validation and out-of-fold predictions of the recipe
study's `baseline + context` runs (seeds 1, 2), and compares against `none` and `radius 1` computed by
`idclab.crossval.context_rules` on the same predictions (which reproduce each run's `cv/context_rules.csv`; the
script checks).

The validation evidence is `val_crossfit_auprc`: each half of a fold's validation patients is scored by the
regression fitted on the other half (`idclab.crossval.validation_halves`, as for the blend). Out of fold, each
fold's patches are scored by the regression fitted on all its validation patches, at the max-F1 threshold tuned on
that regression's validation probabilities. A half or fold with a single class keeps the patches' own P(IDC).

Rule (fixed 2026-12-01, before the first result): `stacked` is called better than `radius 1` when, for both
seeds, its `val_crossfit_auprc` exceeds radius 1's by more than radius 1's seed range of that metric; worse when
every seed's difference is below minus that range (`recipe_study.separated`). Called better, it would be a
candidate for a `context` option, to be confirmed on new seeds before it enters the recipe. The OOF columns are
the estimate, not the chooser.

    python bench/stacked_context_study.py --tracking-uri sqlite:////work/study/mlflow.db
    # -> bench/results/stacked_context_study.csv (+ _halves.csv), and the table printed (docs/stacked_context_study.md)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from recipe_study import write_table
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from slide_context_study import report, saved_runs

from idclab.context import neighbour_matrix, row_normalised
from idclab.crossval import context_rules, pooled_metrics, radius_neighbours, validation_halves
from idclab.reporting import threshold_free
from idclab.thresholds import tune_threshold

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results" / "stacked_context_study.csv"
HALVES = PROJECT / "bench" / "results" / "stacked_context_halves.csv"
RINGS = (1, 2, 3)  # Chebyshev distances in patch steps
COLUMN = "patch_probability"  # the patches' own P(IDC), before any blending


def ring_matrices(frame: pd.DataFrame) -> list[csr_matrix]:
    """Per ring: the 0/1 adjacency of each patch to the patient's patches at exactly that Chebyshev distance."""
    patients, xs, ys = frame["patient"].to_numpy(), frame["x"].to_numpy(), frame["y"].to_numpy()
    discs = [csr_matrix((len(frame), len(frame)))]
    discs += [(neighbour_matrix(patients, xs, ys, radius) > 0).astype(float) for radius in RINGS]
    return [discs[k] - discs[k - 1] for k in range(1, len(discs))]


def features(frame: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    """The 7 features of every patch: own logit, then per ring its mean P(IDC) and the share of it filled."""
    clipped = np.clip(probs, 1e-6, 1 - 1e-6)
    columns = [np.log(clipped / (1 - clipped))]
    for distance, ring in zip(RINGS, ring_matrices(frame), strict=True):
        count = np.asarray(ring.sum(axis=1)).ravel()
        columns += [row_normalised(ring) @ probs, count / (8 * distance)]
    return np.column_stack(columns)


def fitted(frame: pd.DataFrame) -> Pipeline | None:
    """The regression fitted on `frame`'s patches, or None when they hold a single class."""
    targets = frame["target"].to_numpy().astype(int)
    if len(np.unique(targets)) < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    return model.fit(features(frame, frame[COLUMN].to_numpy(dtype=float)), targets)


def scored(model: Pipeline | None, frame: pd.DataFrame) -> np.ndarray:
    """P(IDC) of `frame`'s patches under `model` (their own P(IDC) without one)."""
    probs = frame[COLUMN].to_numpy(dtype=float)
    return probs if model is None else model.predict_proba(features(frame, probs))[:, 1]


def stacked_row(val: pd.DataFrame, oof: pd.DataFrame) -> dict:
    """Validation evidence and pooled OOF metrics of the stacked context (max-F1 threshold per fold)."""
    crossfit = val[COLUMN].to_numpy(dtype=float).copy()
    for half, other in validation_halves(val):
        crossfit[half] = scored(fitted(val[other]), val[half])
    probs, thresholds = np.zeros(len(oof)), np.zeros(len(oof))
    for fold, fold_oof in oof.groupby("fold"):
        fold_val = val[val["fold"] == fold]
        model = fitted(fold_val)
        at = np.flatnonzero(oof["fold"].to_numpy() == fold)
        probs[at] = scored(model, fold_oof)
        thresholds[at] = tune_threshold(fold_val["target"].to_numpy().astype(int), scored(model, fold_val), "max_f1")
    values = pooled_metrics(oof["target"].to_numpy().astype(int), probs, thresholds)
    return {"context": "stacked",
            **{f"val_crossfit_{k}": v for k, v in threshold_free(val["target"].to_numpy().astype(int),
                                                                 crossfit).items()},
            **{k: values[k] for k in ("auroc", "auprc", "f1", "balanced_accuracy")},
            "sensitivity": values["recall"], "specificity": values["specificity"]}


def halves(val: pd.DataFrame) -> pd.DataFrame:
    """Diagnostics of the cross-fitting, per validation half: its size and IDC share, the size of the half the
    regression was fitted on, and AUPRC and mean P(IDC) of the patches' own P(IDC) and of the regression's. A
    half's own AUPRC does not depend on calibration; the pooled one does."""
    rows = []
    for half, other in validation_halves(val):
        part, targets = val[half], val[half]["target"].to_numpy().astype(int)
        own, stacked = part[COLUMN].to_numpy(dtype=float), scored(fitted(val[other]), part)
        rows.append({"fold": int(part["fold"].iloc[0]), "patches": int(half.sum()), "fitted_on": int(other.sum()),
                     "idc_share": float(targets.mean()), "own_auprc": threshold_free(targets, own)["auprc"],
                     "stacked_auprc": threshold_free(targets, stacked)["auprc"], "own_mean_p": float(own.mean()),
                     "stacked_mean_p": float(stacked.mean())})
    return pd.DataFrame(rows)


def study(client: MlflowClient, run_id: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """none, radius 1 and stacked on one cross-validation run's saved predictions, checked against the run, and
    the per-half diagnostics (`halves`)."""
    val, oof = (pd.read_csv(client.download_artifacts(run_id, f"cv/{name}.csv"), dtype={"patient": str})
                for name in ("val_predictions", "oof_predictions"))
    blends = context_rules(val, oof, ("max_f1", {}), contexts={"none": (), "radius 1": (radius_neighbours(1),)})
    logged = pd.read_csv(client.download_artifacts(run_id, "cv/context_rules.csv")).set_index("context")
    ours = blends.set_index("context")
    reproduces = all(np.allclose(ours[c], logged.loc[ours.index, c], atol=1e-4)
                     for c in ("val_crossfit_auprc", "auroc", "balanced_accuracy"))
    table = pd.concat([blends, pd.DataFrame([stacked_row(val, oof)])], ignore_index=True)
    return table.assign(reproduces_run=reproduces, run_id=run_id, seed=seed), halves(val).assign(seed=seed)


def main() -> None:
    client, runs = saved_runs(__doc__)
    tables, diagnostics = zip(*(study(client, run.run_id, int(run.seed)) for run in runs.itertuples()), strict=True)
    write_table(pd.concat(diagnostics), HALVES)
    report(pd.concat(tables), RESULTS)


if __name__ == "__main__":
    main()
