"""Which threshold rule should the recipe use: max-F1 (its rule so far) or Youden's J (maximum balanced accuracy)?

The issue's targets are balanced accuracy (BAC) and AUROC; the threshold does not change AUROC. Out of fold,
Youden's rule gave about +0.02 BAC on every model of the recipe study, with F1 no lower, but out-of-fold numbers
must not choose. This study asks the validation patients instead: per fold, the radius-1 context weight and the
threshold are tuned on one half of the validation patients and applied to the other half, then the halves swap
(`idclab.crossval.validation_halves`, as the context's `val_crossfit_*` metrics); the scored halves of all folds
are pooled into one F1, BAC, sensitivity and specificity per rule. No training: the recipe's model runs
("2-seed ensemble + context", seeds 1 and 3, `bench/results/recipe_study.csv`) saved their validation and
out-of-fold predictions.

Rule (fixed 2026-12-02, before the first result): the recipe's threshold becomes Youden's when its cross-fitted
validation BAC exceeds max-F1's for both seeds; otherwise the recipe keeps max-F1. F1 is reported beside it, and
the fixed 0.5 and sensitivity-0.9 rules for reference only. The OOF columns (rules tuned on each fold's whole
validation, as a run does) are the estimate, not the chooser.

    python bench/threshold_rule_study.py --tracking-uri sqlite:////work/study/mlflow.db
    # -> bench/results/threshold_rule_study.csv and docs/threshold_rule_study.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from recipe_study import write_table

from idclab.crossval import (
    MatrixBuilder,
    blend_at,
    blend_tuned,
    context_rules,
    pooled_metrics,
    radius_neighbours,
    validation_halves,
)
from idclab.thresholds import tune_threshold

PROJECT = Path(__file__).resolve().parents[1]
RUNS = PROJECT / "bench" / "results" / "recipe_study.csv"
RESULTS = PROJECT / "bench" / "results" / "threshold_rule_study.csv"
DOC = PROJECT / "docs" / "threshold_rule_study.md"
STRATEGY = "2-seed ensemble + context"  # the recipe's model
SEEDS = (1, 3)
INCUMBENT, CHALLENGER = "max_f1", "youden"
RULES: dict[str, tuple[str, dict[str, Any]]] = {"max_f1": ("max_f1", {}), "youden": ("youden", {}),
                                                "fixed 0.5": ("fixed", {"value": 0.5}),
                                                "sensitivity 0.9": ("sensitivity", {"target_sensitivity": 0.9})}
RADIUS_1 = (radius_neighbours(1),)
REPORTED = ("f1", "balanced_accuracy", "recall", "specificity")


def cross_fitted_operating_point(val: pd.DataFrame, rule: tuple[str, dict[str, Any]],
                                 steps: Sequence[MatrixBuilder]) -> dict[str, float]:
    """Pooled metrics of every fold's validation patients, each half blended (`steps`) and labelled at the weights
    and threshold (`rule`) tuned on the other half of its fold's validation patients."""
    method, options = rule
    probs, targets = val["patch_probability"].to_numpy(dtype=float), val["target"].to_numpy().astype(int)
    blended, thresholds = probs.copy(), np.zeros(len(val))
    for scored, tuned_on in validation_halves(val):
        tuned_probs, weights = blend_tuned(val[tuned_on], probs[tuned_on], steps)
        thresholds[scored] = tune_threshold(targets[tuned_on], tuned_probs, method, **options)
        blended[scored] = blend_at(val[scored], probs[scored], steps, weights)
    return pooled_metrics(targets, blended, thresholds)


def verdict(table: pd.DataFrame) -> str:
    """`CHALLENGER` when its cross-fitted validation BAC beats `INCUMBENT`'s for every seed, else `INCUMBENT`."""
    bac = table.pivot(index="seed", columns="rule", values="val_crossfit_balanced_accuracy")
    return CHALLENGER if (bac[CHALLENGER] > bac[INCUMBENT]).all() else INCUMBENT


def scored_run(val: pd.DataFrame, oof: pd.DataFrame) -> pd.DataFrame:
    """One row per rule: cross-fitted validation metrics, and the OOF metrics of the rule as a run applies it."""
    rows = []
    for label, rule in RULES.items():
        crossfit = cross_fitted_operating_point(val, rule, RADIUS_1)
        (oof_row,) = context_rules(val, oof, rule, contexts={"radius 1": RADIUS_1}).to_dict("records")
        rows.append({"rule": label, **{f"val_crossfit_{k}": crossfit[k] for k in REPORTED},
                     **{f"oof_{k}": oof_row["sensitivity" if k == "recall" else k] for k in REPORTED}})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{PROJECT / 'mlflow.db'}")
    args = parser.parse_args()
    runs = pd.read_csv(RUNS)
    runs = runs[runs["strategy"] == STRATEGY].set_index("seed")["run_id"]
    if not set(SEEDS) <= set(runs.index):
        sys.exit(f"no '{STRATEGY}' runs of seeds {sorted(set(SEEDS) - set(runs.index))} in {RUNS}")
    client = MlflowClient(args.tracking_uri)
    tables = []
    for seed in SEEDS:
        val, oof = (pd.read_csv(client.download_artifacts(runs[seed], f"cv/{kind}.csv"), dtype={"patient": str})
                    for kind in ("val_predictions", "oof_predictions"))
        tables.append(scored_run(val, oof).assign(seed=seed))
    table = pd.concat(tables, ignore_index=True)
    write_table(table, RESULTS)
    means = table.groupby("rule", sort=False).agg(["mean", "std"])
    shown = pd.DataFrame({name: [f"{m:.4f} ± {s:.4f}" for m, s in means[name].to_numpy()]
                          for name in table.columns if name not in ("rule", "seed")}, index=means.index)
    bac = table.pivot(index="seed", columns="rule", values="val_crossfit_balanced_accuracy")
    gains = ", ".join(f"{g:+.4f}" for g in bac[CHALLENGER] - bac[INCUMBENT])
    text = (f"# Threshold rule for the recipe: cross-fitted on validation patients\n\n`python "
            f"bench/threshold_rule_study.py --tracking-uri sqlite:////work/study/mlflow.db` (rule in the script's "
            f"docstring, fixed before the first result). The recipe's model ({STRATEGY}, seeds {SEEDS}), radius-1 "
            f"context; mean ± std over seeds. `recall` is sensitivity.\n\n{shown.to_markdown()}\n\n"
            f"Cross-fitted validation BAC, {CHALLENGER} minus {INCUMBENT}, per seed: {gains}. "
            f"**Verdict: {verdict(table)}.**\n")
    DOC.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
