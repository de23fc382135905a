"""Cost of the patient bootstrap's AUROC: `RankedPatches` (patches ranked once, two bincounts per draw) against
sklearn's `roc_auc_score(..., sample_weight=...)` per draw, on the same draws. Prints both times, their ratio and the
largest difference between the two AUROCs.

Input: a cross-validation run's pooled out-of-fold predictions (its `cv/oof_predictions.csv` artifact: patient,
target, probability), or by default synthetic predictions of the pool's size (37,182 patches of 230 patients, about 25%
IDC, a score offset per patient).

python bench/bootstrap.py [--draws 300] [--predictions PATH/cv/oof_predictions.csv]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from idclab.scoring.metrics import RankedPatches

PATCHES, PATIENTS, IDC_SHARE = 37_182, 230, 0.255


def synthetic_predictions(seed: int = 0) -> pd.DataFrame:
    """Out-of-fold-like predictions: uneven patient sizes, IDC share by patient, scores with a patient offset."""
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(0.0, 0.8, PATIENTS)
    patient = np.sort(rng.choice(PATIENTS, PATCHES, p=sizes / sizes.sum()))
    share = rng.beta(IDC_SHARE * 4, (1 - IDC_SHARE) * 4, PATIENTS)
    target = (rng.random(PATCHES) < share[patient]).astype(int)
    logit = 1.2 * (2 * target - 1) + rng.normal(0, 0.6, PATIENTS)[patient] + rng.normal(0, 1.2, PATCHES)
    return pd.DataFrame({"patient": patient.astype(str), "target": target, "probability": 1 / (1 + np.exp(-logit))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--predictions", type=Path, help="a run's cv/oof_predictions.csv (default: synthetic)")
    args = parser.parse_args()
    if args.predictions is not None and not args.predictions.is_file():
        parser.error(f"no predictions file: {args.predictions}")  # exit code 2
    frame = synthetic_predictions() if args.predictions is None else pd.read_csv(args.predictions)
    source = "synthetic predictions" if args.predictions is None else args.predictions.name
    targets, probs = frame["target"].to_numpy(), frame["probability"].to_numpy()
    names, patient_of = np.unique(frame["patient"].astype(str), return_inverse=True)
    rng = np.random.default_rng(0)
    weights = [np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))[patient_of]
               for _ in range(args.draws)]

    start = time.perf_counter()
    ranked = RankedPatches(targets, probs)
    fast = [ranked.auroc(w) for w in weights]
    fast_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reference = [roc_auc_score(targets, probs, sample_weight=w) for w in weights]
    reference_seconds = time.perf_counter() - start

    print(f"{source}: {len(frame):,} patches, {len(names)} patients, {targets.mean():.1%} IDC, {args.draws} draws")
    print(f"sklearn roc_auc_score per draw  {reference_seconds:8.3f} s")
    print(f"RankedPatches (ranked once)     {fast_seconds:8.3f} s")
    print(f"largest AUROC difference        {np.max(np.abs(np.subtract(fast, reference))):.2e}")
    print(f"SUMMARY speed-up {reference_seconds / fast_seconds:.1f}x")


if __name__ == "__main__":
    main()
