"""Exploratory, no rule: cross-validation runs of the same folds averaged as one ensemble, scored as one run is.

Each run's validation and out-of-fold P(IDC) (kept in `bench/results/predictions/`, else read from the store) are
averaged patch by patch (as `idclab.ensemble` averages its members), then scored like the runs themselves: the
pooled validation AUROC of the patches' own P(IDC) (the screens' metric), and out of fold with the threshold rule
and spatial-context weight tuned on each fold's validation patches (`idclab.crossval.context_rules`). Two recipe
runs of seeds 1 and 3 (members of seeds 1, 2 and 3, 4) make a four-member recipe:

    python bench/ensemble_of_runs.py 4ac38df202a14fc38b2ecb884eecc90c 3093aebe6798402fb39d07ea30dff72c \
        --out bench/results/recipe_four_members.md
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient
from neighbourhood_screen import validation_predictions
from recipe_study import PREDICTIONS
from seed_ensemble_study import averaged

from idclab.crossval import context_rules, radius_neighbours
from idclab.reporting import threshold_free

PROJECT = Path(__file__).resolve().parents[1]
CONTEXTS = {"none": (), "radius 1": (radius_neighbours(1),)}
COLUMNS = ["model", "context", "val_pooled_auroc", "auroc", "auprc", "f1", "balanced_accuracy"]


def oof_predictions(client: MlflowClient, run_id: str, kept: Path = PREDICTIONS) -> pd.DataFrame:
    """A cross-validation parent run's out-of-fold predictions: the kept copy, else the store's."""
    if (kept / f"{run_id}-oof.csv.gz").is_file():
        return pd.read_csv(kept / f"{run_id}-oof.csv.gz", dtype={"patient": str})
    with tempfile.TemporaryDirectory() as folder:
        return pd.read_csv(client.download_artifacts(run_id, "cv/oof_predictions.csv", folder), dtype={"patient": str})


def scored(name: str, val: pd.DataFrame, oof: pd.DataFrame, threshold: str) -> pd.DataFrame:
    """One row per context (none, radius 1): out-of-fold metrics, with the pooled validation AUROC."""
    table = context_rules(val, oof, (threshold, {}), contexts=CONTEXTS)
    pooled = threshold_free(val["target"].to_numpy().astype(int), val["patch_probability"].to_numpy())["auroc"]
    return table.assign(model=name, val_pooled_auroc=pooled)[COLUMNS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_ids", nargs="+", help="cross-validation parent runs of the same folds")
    parser.add_argument("--threshold", default="youden", choices=["youden", "max_f1"], help="the threshold rule")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{PROJECT / 'mlflow.db'}")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    if len(args.run_ids) < 2:
        parser.error("give two runs or more to average")
    client = MlflowClient(args.tracking_uri)
    runs = {run_id: (validation_predictions(client, run_id).astype({"patient": str}), oof_predictions(client, run_id))
            for run_id in args.run_ids}
    tables = [scored(run_id[:8], val, oof, args.threshold) for run_id, (val, oof) in runs.items()]
    vals, oofs = zip(*runs.values(), strict=True)
    tables.append(scored("average of all", averaged(list(vals)), averaged(list(oofs)), args.threshold))
    table = pd.concat(tables, ignore_index=True).to_markdown(index=False, floatfmt=".4f")
    text = (f"Exploratory (no rule): `python bench/ensemble_of_runs.py {' '.join(args.run_ids)}` "
            f"(threshold {args.threshold}).\n\n{table}\n")
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
