"""Slide-wide context: does blending a patch with the mean of its whole slide add to the radius-1 neighbours?

The recipe blends each patch's P(IDC) with the mean of its 8 neighbours (`context=neighbours`, radius 1). In the
pool 16% of the patches have no neighbour at all, so radius 1 leaves them alone. This study asks whether the
mean P(IDC) of all the patient's other patches (the "slide mean", which every patch with a sibling has) adds to
it. It needs no training: it re-scores the saved validation and out-of-fold predictions of the recipe study's
`baseline + context` runs (seeds 1, 2; `cv/val_predictions.csv`, `cv/oof_predictions.csv`).

Variants, each applied as `(1 - w) * p + w * mean(others' p)` with `w` tuned on validation AUPRC
(`idclab.context.tune_weight`), in sequence when there are two:
- `radius 1`: the recipe (reproduces the run's `cv/context_rules.csv`, which the script checks);
- `slide`: the slide mean alone;
- `radius 1 + slide`: radius 1 at its tuned weight, then the slide mean at a weight tuned on the result.
The validation evidence is `val_crossfit_auprc` (as `idclab.crossval.cross_fitted`: each half of a fold's
validation patients is scored at the weights tuned on the other half). The threshold (max-F1) is then tuned on
each fold's blended validation predictions and applied to its blended out-of-fold patches.

Rule (fixed 2026-12-01, before the first result): a variant is called better than the recipe's `radius 1` when,
for both seeds, its `val_crossfit_auprc` exceeds radius 1's by more than radius 1's seed range of that metric;
worse when every seed's difference is below minus that range (`recipe_study.separated`). The OOF columns are
the estimate, not the chooser.

    python bench/slide_context_study.py --tracking-uri sqlite:////work/study/mlflow.db
    # -> bench/results/slide_context_study.csv, and the table printed (docs/slide_context_study.md)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from recipe_study import separated, write_table  # the study's rule: beyond the seed range, every seed
from scipy.sparse import coo_matrix, csr_matrix

from idclab.context import row_normalised
from idclab.crossval import MatrixBuilder, context_rules, radius_neighbours

PROJECT = Path(__file__).resolve().parents[1]
STUDY = PROJECT / "bench" / "results" / "recipe_study.csv"
RESULTS = PROJECT / "bench" / "results" / "slide_context_study.csv"
RECIPE = "radius 1"


def slide_matrix(patients: np.ndarray) -> csr_matrix:
    """Row-normalised: entry (i, j) is 1/(n_i - 1) for every other patch j of patch i's patient (n_i patches);
    the row of a patient's only patch is empty."""
    _, codes = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    n = len(codes)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    rows, cols = [], []
    for start, stop in zip(starts, np.r_[starts[1:], n], strict=True):
        members = order[start:stop]
        i, j = np.meshgrid(members, members, indexing="ij")
        keep = i != j
        rows.append(i[keep])
        cols.append(j[keep])
    i, j = (np.concatenate(parts) if parts else np.zeros(0, int) for parts in (rows, cols))
    return row_normalised(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr())


def slide(frame: pd.DataFrame) -> csr_matrix:
    return slide_matrix(frame["patient"].to_numpy())


VARIANTS: dict[str, tuple[MatrixBuilder, ...]] = {"none": (), RECIPE: (radius_neighbours(1),), "slide": (slide,),
                                                  "radius 1 + slide": (radius_neighbours(1), slide)}


def study(client: MlflowClient, run_id: str, seed: int) -> pd.DataFrame:
    """Every variant on one cross-validation run's saved predictions, checked against its context_rules.csv."""
    val, oof = (pd.read_csv(client.download_artifacts(run_id, f"cv/{name}.csv"), dtype={"patient": str})
                for name in ("val_predictions", "oof_predictions"))
    table = context_rules(val, oof, ("max_f1", {}), contexts=VARIANTS)  # the runs' rule: max-F1 per fold
    logged = pd.read_csv(client.download_artifacts(run_id, "cv/context_rules.csv")).set_index("context")
    ours = table.set_index("context").loc[["none", RECIPE]]
    table["reproduces_run"] = all(np.allclose(ours[c], logged.loc[ours.index, c], atol=1e-4)
                                  for c in ("val_crossfit_auprc", "auroc", "balanced_accuracy"))
    return table.assign(run_id=run_id, seed=seed)


def verdicts(results: pd.DataFrame) -> pd.DataFrame:
    """Per context in `results`: mean ± std over seeds, each seed's paired gain over radius 1 and the rule's call."""
    recipe = results[results["context"] == RECIPE].set_index("seed")["val_crossfit_auprc"]
    rows = []
    for name in results["context"].unique():
        part = results[results["context"] == name]
        gains = (part.set_index("seed")["val_crossfit_auprc"] - recipe).dropna()
        per_seed = part.reindex(columns=["weight_mean", "weight_mean_2"]).apply(
            lambda seed: "; ".join(f"{w:.2f}" for w in seed.dropna()), axis=1)
        weights = " / ".join(per_seed) if per_seed.str.len().any() else ""
        rows.append({"context": name, "seeds": len(part), "weights (mean over folds, per seed)": weights,
                     **{c: f"{part[c].mean():.4f} ± {part[c].std():.4f}" for c in
                        ("val_crossfit_auprc", "auroc", "auprc", "f1", "balanced_accuracy")},
                     "Δ val_crossfit_auprc vs radius 1 (per seed)":
                         "" if name in ("none", RECIPE) else ", ".join(f"{g:+.4f}" for g in gains),
                     "better than radius 1": "" if name in ("none", RECIPE) else separated(gains, recipe)})
    return pd.DataFrame(rows)


def saved_runs(description: str) -> tuple[MlflowClient, pd.DataFrame]:
    """The command line of a re-scoring study: a client of `--tracking-uri` and the recipe study's rows of
    `--strategy` (whose runs' saved predictions are re-scored); exits with a message when there are none."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{PROJECT / 'mlflow.db'}")
    parser.add_argument("--strategy", default="baseline + context", help="the recipe study rows whose runs to use")
    args = parser.parse_args()
    runs = pd.read_csv(STUDY)
    runs = runs[runs["strategy"] == args.strategy]
    if runs.empty:
        sys.exit(f"no '{args.strategy}' rows in {STUDY}")
    return MlflowClient(args.tracking_uri), runs


def report(results: pd.DataFrame, path: Path) -> None:
    """Warn unless the none/radius 1 rows reproduce the runs, write `results` to `path`, print the verdicts."""
    if not results["reproduces_run"].all():
        print("Warning: the none/radius 1 rows differ from the runs' cv/context_rules.csv", file=sys.stderr)
    write_table(results, path)
    print(verdicts(results).to_markdown(index=False))


def main() -> None:
    client, runs = saved_runs(__doc__)
    report(pd.concat([study(client, run.run_id, int(run.seed)) for run in runs.itertuples()]), RESULTS)


if __name__ == "__main__":
    main()
