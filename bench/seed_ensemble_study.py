"""Seed ensembles: does averaging the P(IDC) of models trained with different seeds beat one model?

The baseline was cross-validated with four seeds on the same folds (`cv.seed=0`): seeds 1 and 2 in the recipe
study (`bench/results/recipe_study.csv`), 3 and 4 in its confirmation (`bench/results/recipe_confirm.csv`). Every
run saved the validation and out-of-fold P(IDC) of its fold models for the same patches, so an ensemble of seeds
needs no training: per fold, the members' P(IDC) are averaged patch by patch (as `idclab.ensemble` averages fold
models), then scored exactly as one run is (`idclab.crossval.context_rules`: max-F1 threshold, and the radius-1
context weight, tuned on each fold's validation patches). Two disjoint replicate ensembles are formed, seeds
{1, 2} and {3, 4}; all four together are reported too, outside the rule. The single seeds' rows reproduce their
runs' `cv/context_rules.csv` (the script checks, column `reproduces_run`).

Rule (fixed 2026-12-01, before the first result): the decision metric is the pooled validation AUROC of the
patches' own P(IDC) (`val_pooled_auroc`, the confirmation stage's `cv_val_pooled_auroc`). An ensemble of two
seeds is called better than one model when, for both replicates, its value exceeds the mean of its two members'
by more than the range of the four single seeds' values; worse when both fall below minus that range. The
radius-1 and OOF columns are reported, not chosen by. A better ensemble doubles the training time (a 5-fold run
takes about 32 min instead of 16; the recipe's single training on the pool about 10 min).

    python bench/seed_ensemble_study.py --tracking-uri sqlite:////work/study/mlflow.db
    # -> bench/results/seed_ensemble_study.csv, and the table printed (docs/seed_ensemble_study.md)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from recipe_study import write_table

from idclab.crossval import context_rules, radius_neighbours
from idclab.reporting import threshold_free

PROJECT = Path(__file__).resolve().parents[1]
RUNS = (PROJECT / "bench" / "results" / "recipe_study.csv", PROJECT / "bench" / "results" / "recipe_confirm.csv")
RESULTS = PROJECT / "bench" / "results" / "seed_ensemble_study.csv"
STRATEGY = "baseline (bce)"
REPLICATES = ((1, 2), (3, 4))
EXPLORATORY = (1, 2, 3, 4)  # all four together: reported, not decided by the rule
METRIC = "val_pooled_auroc"
KEYS = ["fold", "patient", "x", "y", "target"]  # what must match, row by row, between members
CONTEXTS = {"none": (), "radius 1": (radius_neighbours(1),)}


def averaged(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The first frame with `patch_probability` replaced by the members' mean, after checking that every member
    holds the same patches in the same order."""
    first = frames[0]
    for other in frames[1:]:
        if other.shape != first.shape or not (other[KEYS].to_numpy() == first[KEYS].to_numpy()).all():
            raise ValueError("the members' predictions are not of the same patches: were the folds the same?")
    return first.assign(patch_probability=np.mean([f["patch_probability"].to_numpy() for f in frames], axis=0))


def scored(name: str, val: pd.DataFrame, oof: pd.DataFrame) -> pd.DataFrame:
    """One row per context: the runs' own comparison (`context_rules`), plus the pooled validation AUROC."""
    table = context_rules(val, oof, ("max_f1", {}), contexts=CONTEXTS)
    pooled = threshold_free(val["target"].to_numpy().astype(int), val["patch_probability"].to_numpy())
    return table.assign(model=name, val_pooled_auroc=pooled["auroc"])


def verdicts(results: pd.DataFrame) -> pd.DataFrame:
    """Per replicate: its gain in `METRIC` over its members' mean, against the single seeds' range, and the call."""
    none = results[results["context"] == "none"].set_index("model")[METRIC]
    singles = none[[f"seed {s}" for pair in REPLICATES for s in pair]]
    spread = float(singles.max() - singles.min())
    gains = [none[ensemble_name(pair)] - none[[f"seed {s}" for s in pair]].mean() for pair in REPLICATES]
    call = "better" if min(gains) > spread else "worse" if max(gains) < -spread else "no"
    return pd.DataFrame([{"replicate": ensemble_name(pair), METRIC: f"{none[ensemble_name(pair)]:.4f}",
                          "members' mean": f"{none[[f'seed {s}' for s in pair]].mean():.4f}",
                          "gain": f"{gain:+.4f}", "single seeds' range": f"{spread:.4f}", "better": call}
                         for pair, gain in zip(REPLICATES, gains, strict=True)])


def ensemble_name(seeds: tuple[int, ...]) -> str:
    return "seeds " + " + ".join(map(str, seeds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{PROJECT / 'mlflow.db'}")
    args = parser.parse_args()
    runs = pd.concat([pd.read_csv(path) for path in RUNS])
    runs = runs[runs["strategy"] == STRATEGY].set_index("seed")["run_id"]
    missing = sorted({s for pair in REPLICATES for s in pair} - set(runs.index))
    if missing:
        sys.exit(f"no '{STRATEGY}' runs of seeds {missing} in {', '.join(map(str, RUNS))}")
    client = MlflowClient(args.tracking_uri)
    saved = {seed: tuple(pd.read_csv(client.download_artifacts(runs[seed], f"cv/{name}.csv"), dtype={"patient": str})
                         for name in ("val_predictions", "oof_predictions")) for seed in runs.index}
    tables = []
    for seed in runs.index:
        table = scored(f"seed {seed}", *saved[seed])
        logged = pd.read_csv(client.download_artifacts(runs[seed], "cv/context_rules.csv")).set_index("context")
        ours = table.set_index("context")
        table["reproduces_run"] = all(np.allclose(ours[c], logged.loc[ours.index, c], atol=1e-4)
                                      for c in ("val_crossfit_auprc", "auroc", "balanced_accuracy"))
        tables.append(table)
    if not all(table["reproduces_run"].all() for table in tables):
        print("Warning: a single seed differs from its run's cv/context_rules.csv", file=sys.stderr)
    for seeds in (*REPLICATES, EXPLORATORY):
        val, oof = (averaged([saved[s][k] for s in seeds]) for k in (0, 1))
        tables.append(scored(ensemble_name(seeds), val, oof))
    results = pd.concat(tables, ignore_index=True)
    write_table(results, RESULTS)
    columns = ["model", "context", METRIC, "val_crossfit_auprc", "auroc", "auprc", "f1", "balanced_accuracy"]
    print(results[columns].to_markdown(index=False, floatfmt=".4f"))
    print()
    print(verdicts(results).to_markdown(index=False, disable_numparse=True))


if __name__ == "__main__":
    main()
