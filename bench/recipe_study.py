"""The recipe study: every strategy by patient-grouped 5-fold cross-validation on the pool, several seeds.

Runs `python train.py ... cv.folds=5` once per (strategy, seed) that is not yet in the results file, one at a
time (the machine has 2 cores), and appends each finished run's pooled out-of-fold metrics, fold mean/std and
wall time to `bench/results/recipe_study.csv`, so a killed study continues where it stopped:

    nohup python bench/recipe_study.py > bench/results/recipe_study.log 2>&1 &
    python bench/recipe_study.py --table     # the table so far, by strategy (mean ± std over seeds)

All strategies share the folds (`cv.seed=0`): differences between them are paired by fold. The seed changes
initialisation, data order and augmentation. Choose by the validation columns only; OOF columns are the
estimate the chosen recipe is reported with.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

PROJECT = Path(__file__).resolve().parents[1]
POOL = PROJECT.parent / "shared" / "data" / "idc-pool"
RESULTS = PROJECT / "bench" / "results" / "recipe_study.csv"
EXPERIMENT = "recipe_study"
COMMON = ["data=idc", f"data.root={POOL}", "cv.folds=5", "cv.seed=0", "split.train=0.85", "split.val=0.15",
          "split.test=0", "trainer.max_epochs=6", "trainer.enable_progress_bar=false", "logger.log_model=false",
          f"logger.experiment_name={EXPERIMENT}", "report.heatmap_patients=0", "report.gallery_size=0"]
STRATEGIES: dict[str, list[str]] = {  # in the order they run: the likeliest to help first
    "baseline (bce)": [],
    "cosine+ema": ["optim.schedule=cosine", "optim.warmup_epochs=1", "averaging=ema"],
    "stain augment": ["augment=stain"],
    "residual wide": ["model.residual=true", "model.widths=[32,64,128]"],
    "logit_adjusted": ["loss=logit_adjusted"],
    "reinhard": ["stain=reinhard"],
    "weighted": ["loss=weighted"],
    "focal": ["loss=focal"],
    "oversample": ["sampler=oversample"],
}
SEEDS = (1, 2)
COLUMNS = ["oof_f1", "oof_balanced_accuracy", "oof_auroc", "oof_auprc", "best_val_auprc", "cv_test_f1_mean",
           "cv_test_f1_std", "oof_f1_ci_low", "oof_f1_ci_high", "oof_balanced_accuracy_ci_low",
           "oof_balanced_accuracy_ci_high", "oof_auroc_ci_low", "oof_auroc_ci_high"]


def done() -> pd.DataFrame:
    return pd.read_csv(RESULTS) if RESULTS.is_file() else pd.DataFrame(columns=["strategy", "seed"])


def run_one(strategy: str, seed: int) -> None:
    """Train one cross-validation and append its parent run's metrics to the results file."""
    overrides = [*COMMON, *STRATEGIES[strategy], f"seed={seed}"]
    start = time.time()
    code = subprocess.call([sys.executable, str(PROJECT / "train.py"), *overrides], cwd=PROJECT,
                           env=os.environ | {"IDCLAB_ROOT": str(PROJECT)})
    minutes = (time.time() - start) / 60
    if code != 0:
        print(f"{strategy} seed {seed}: exit {code} after {minutes:.1f} min", flush=True)
        return
    client = MlflowClient(f"sqlite:///{PROJECT / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.cv = 'parent'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    row = {"strategy": strategy, "seed": seed, "run_id": parent.info.run_id, "minutes": round(minutes, 1),
           "overrides": " ".join(STRATEGIES[strategy])}
    row |= {name: parent.data.metrics.get(name) for name in COLUMNS}
    table = pd.concat([done(), pd.DataFrame([row])], ignore_index=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False)
    print(f"{strategy} seed {seed}: OOF F1 {row['oof_f1']:.4f} BAC {row['oof_balanced_accuracy']:.4f} "
          f"AUROC {row['oof_auroc']:.4f} in {minutes:.1f} min", flush=True)


def summary() -> pd.DataFrame:
    """Mean ± std over seeds per strategy, ranked by the validation metric."""
    table = done()
    grouped = table.groupby("strategy")
    out = grouped[["best_val_auprc", "oof_f1", "oof_balanced_accuracy", "oof_auroc", "oof_auprc"]].agg(["mean", "std"])
    out.columns = [f"{a} {b}" for a, b in out.columns]
    out["seeds"] = grouped.size()
    out["minutes"] = grouped["minutes"].mean()
    return out.sort_values("best_val_auprc mean", ascending=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the results so far and exit")
    parser.add_argument("--only", nargs="*", help="run only these strategies")
    args = parser.parse_args()
    if args.table:
        print(summary().to_markdown(floatfmt=".4f"))
        return
    if not POOL.is_dir():
        raise SystemExit(f"{POOL} is not present")
    for strategy in args.only or STRATEGIES:  # both seeds of a strategy before the next: pairs complete early
        for seed in SEEDS:
            previous = done()
            if ((previous["strategy"] == strategy) & (previous["seed"] == seed)).any():
                continue
            run_one(strategy, seed)


if __name__ == "__main__":
    main()
