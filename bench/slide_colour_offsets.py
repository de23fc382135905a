"""Exploratory, no rule, no training: do a slide's colour statistics explain its patients' score offsets?

The recipe ranks patches within a slide at 0.95 AUROC and across slides at 0.93 (`bench/results/
patient_offsets.txt`): each slide's scores sit higher or lower than its labels warrant. If stain or scanner
colour caused those offsets, a slide-level colour input (a "slide view" beside the 5x5 one) could remove them.
This asks first, without building it: on the pooled validation predictions of kept runs, a logistic regression
from each patch's logit plus its slide's colour statistics (mean and spread of the patches' mean RGB, the mean
within-patch RGB spread, the share of near-white patches), cross-fitted over patients (5 groups), against the
same regression on the logit alone and with the slide's mean logit. Validation only; nothing out of fold.

    python bench/slide_colour_offsets.py RUN_ID ...   # -> docs/slide_colour_offsets.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from recipe_study import POOL, PREDICTIONS
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from idclab.data.cache import load_or_build
from idclab.data.layout import scan
from idclab.reporting import threshold_free

PROJECT = Path(__file__).resolve().parents[1]
COLOUR = ["r", "g", "b", "spread_r", "spread_g", "spread_b", "texture_r", "texture_g", "texture_b", "white"]
FEATURES = {"logit alone": ["logit"], "logit + slide colour": ["logit", *COLOUR],
            "logit + slide mean logit": ["logit", "slide_logit"],
            "logit + slide mean logit + colour": ["logit", "slide_logit", *COLOUR]}
WHITE = 220  # a patch whose mean grey level is above this is mostly background


def slide_colours(pool: Path, cache_dir: Path = PROJECT / "data" / "cache") -> pd.DataFrame:
    """Per patient of `pool`: the mean and spread over its patches of their mean R, G, B, the mean within-patch
    spread of R, G, B, and the share of near-white patches; pixels from the project's decode cache (`cache_dir`,
    built on first use; patches that did not decode are left out, border patches as padded for training)."""
    index = scan(pool)
    cache = load_or_build(index, cache_dir)
    rows = np.flatnonzero(cache.usable)
    pixels = np.asarray(cache.images[rows], dtype=np.float32).reshape(len(rows), -1, 3)
    means, spreads = pixels.mean(1), pixels.std(1)
    patches = pd.DataFrame(np.column_stack([means, spreads, means.mean(1) > WHITE]),
                           columns=["r", "g", "b", "texture_r", "texture_g", "texture_b", "white"])
    patches["patient"] = index.patients[rows].astype(str)
    by_patient = patches.groupby("patient")
    spread = by_patient[["r", "g", "b"]].std(ddof=0).add_prefix("spread_")
    return by_patient.mean().join(spread).reset_index()[["patient", *COLOUR]]


def cross_fitted_auroc(frame: pd.DataFrame, features: list[str], groups: int = 5) -> float:
    """Pooled AUROC of a logistic regression's scores from `features`, each patient scored by the regression fitted
    on the other groups of patients."""
    scores = np.zeros(len(frame))
    targets = frame["target"].to_numpy().astype(int)
    for fit, held in GroupKFold(groups).split(frame, targets, frame["patient"]):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(frame[features].to_numpy()[fit], targets[fit])
        scores[held] = model.decision_function(frame[features].to_numpy()[held])
    return threshold_free(targets, scores)["auroc"]


def with_logits(predictions: pd.DataFrame, colours: pd.DataFrame) -> pd.DataFrame:
    """Validation predictions with each patch's logit, its slide's mean logit and its slide's colours."""
    frame = predictions.merge(colours, on="patient", validate="many_to_one")
    probability = frame["patch_probability"].clip(1e-6, 1 - 1e-6)
    frame["logit"] = np.log(probability / (1 - probability))
    frame["slide_logit"] = frame.groupby("patient")["logit"].transform("mean")
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_ids", nargs="+", help="cross-validation runs with kept validation predictions")
    parser.add_argument("--pool", type=Path, default=POOL)
    args = parser.parse_args()
    if not args.pool.is_dir():
        parser.exit(2, f"error: no pool of patches at {args.pool}\n")
    colours = slide_colours(args.pool)
    rows = []
    for run_id in args.run_ids:
        frame = with_logits(pd.read_csv(PREDICTIONS / f"{run_id}-val.csv.gz", dtype={"patient": str}), colours)
        row = {"run": run_id[:8], "patches' own P(IDC)": threshold_free(frame["target"].to_numpy().astype(int),
                                                                       frame["logit"].to_numpy())["auroc"]}
        rows.append(row | {name: cross_fitted_auroc(frame, features) for name, features in FEATURES.items()})
    table = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f")
    text = (f"# Slide colour and patient offsets (exploratory, validation only)\n\n"
            f"`python bench/slide_colour_offsets.py {' '.join(args.run_ids)}`: pooled validation AUROC of the "
            f"patches' own P(IDC), then of logistic regressions cross-fitted over patients.\n\n{table}\n")
    (PROJECT / "docs" / "slide_colour_offsets.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
