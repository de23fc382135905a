"""Cost of the patient bootstrap's AUROC: `RankedPatches` (patches ranked once, two bincounts per draw) against
sklearn's `roc_auc_score(..., sample_weight=...)` per draw, on the same draws of a real run's pooled out-of-fold
predictions (a file kept in bench/results/predictions/: 37,182 patches of 230 patients). Prints both times, their
ratio and the largest difference between the two AUROCs.

python bench/bootstrap.py [--draws 300] [--predictions bench/results/predictions/<run_id>-oof.csv.gz]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from idclab.metrics import RankedPatches

KEPT = Path(__file__).resolve().parent / "results" / "predictions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--predictions", type=Path, default=min(KEPT.glob("*-oof.csv.gz"), default=None))
    args = parser.parse_args()
    if args.predictions is None or not args.predictions.is_file():
        parser.error(f"no predictions file: {args.predictions}")  # exit code 2
    frame = pd.read_csv(args.predictions)
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

    print(f"{args.predictions.name}: {len(frame):,} patches, {len(names)} patients, {args.draws} draws")
    print(f"sklearn roc_auc_score per draw  {reference_seconds:8.3f} s")
    print(f"RankedPatches (ranked once)     {fast_seconds:8.3f} s")
    print(f"largest AUROC difference        {np.max(np.abs(np.subtract(fast, reference))):.2e}")
    print(f"SUMMARY speed-up {reference_seconds / fast_seconds:.1f}x")


if __name__ == "__main__":
    main()
