"""Exploratory, no rule, no training: do two single models of different configurations average better than two seeds?

The single-model screens (5x5 view, cosine+EMA, 6 epochs unless named; the same folds, `cv.seed=0`) kept every
run's pooled validation predictions in `bench/results/predictions/`. Every pair of those runs is averaged patch by
patch (as `idclab.ensemble` averages members) and scored by the screens' metric, the pooled validation AUROC;
the gain is measured against the better of the two members. If configurations erred on different patches, a mixed
pair would gain more than a pair of seeds of one configuration. Validation only: nothing here is out of fold.

    python bench/pair_ensembles.py   # -> bench/results/pair_ensembles.csv, docs/pair_ensembles.md
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
from recipe_study import PREDICTIONS, write_table
from seed_ensemble_study import averaged

from idclab.reporting import threshold_free

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
SCREENS = {"cosine+ema": "schedule_screen", "depth 3": "depth_screen", "wide": "width_screen",
           "decay 0.05": "decay_screen", "views 1+2": "views_screen", "mixup": "mixup_screen",
           "ranking": "ranking_screen", "20 epochs": "length_screen"}
OUT, DOC = RESULTS / "pair_ensembles.csv", PROJECT / "docs" / "pair_ensembles.md"


def pooled_auroc(frame: pd.DataFrame) -> float:
    return threshold_free(frame["target"].to_numpy().astype(int), frame["patch_probability"].to_numpy())["auroc"]


def pair_table(models: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Every pair of (configuration, seed) models: each one's pooled AUROC, their average's, and its gain over the
    better member; `same` says whether the pair is two seeds of one configuration."""
    single = {key: pooled_auroc(frame) for key, frame in models.items()}
    rows = []
    for a, b in itertools.combinations(models, 2):
        average = pooled_auroc(averaged([models[a], models[b]]))
        rows.append({"a": f"{a[0]} s{a[1]}", "b": f"{b[0]} s{b[1]}", "same": a[0] == b[0], "auroc_a": single[a],
                     "auroc_b": single[b], "average": average,
                     "gain_over_better": average - max(single[a], single[b])})
    return pd.DataFrame(rows).sort_values("average", ascending=False, ignore_index=True)


def main() -> None:
    models = {}
    for name, stem in SCREENS.items():
        runs = pd.read_csv(RESULTS / f"{stem}.csv")
        if runs["strategy"].nunique() != 1:
            raise SystemExit(f"error: {stem}.csv holds {runs['strategy'].nunique()} strategies; one is expected")
        for row in runs.itertuples():  # kept predictions only: a missing file is named by the error
            models[(name, int(row.seed))] = pd.read_csv(PREDICTIONS / f"{row.run_id}-val.csv.gz")
    table = pair_table(models)
    write_table(table, OUT)
    summary = table.groupby("same")["gain_over_better"].agg(["count", "mean", "min", "max"]).astype({"count": int})
    DOC.write_text(
        "# Pairs of single models averaged (exploratory, no rule, validation only)\n\n"
        f"`python bench/pair_ensembles.py`: {len(models)} single-model runs of the screens, {len(table)} pairs, "
        "each pair's P(IDC) averaged patch by patch and scored by the pooled validation AUROC.\n\n"
        "Gain of the average over the better member, by whether the pair is two seeds of one configuration:\n\n"
        f"{summary.to_markdown(floatfmt=('', '.0f', '.4f', '.4f', '.4f'))}\n\nThe ten best pairs:\n\n"
        f"{table.head(10).to_markdown(index=False, floatfmt='.4f')}\n")
    print(DOC.read_text())


if __name__ == "__main__":
    main()
