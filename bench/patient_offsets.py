"""Where a pooled AUROC loses: pairs of patches within one patient, or across patients.

The pooled AUROC ranks every IDC patch against every other patch of the pool. It is exactly the pair-weighted mean
of two parts: the AUROC over positive-negative pairs of the same patient (the classifier's view of one slide) and
over pairs of different patients (which also needs the scores of different slides to be comparable). A gap between
the two says how much between-patient offsets (stain, scanner, tissue) cost. Reads out-of-fold predictions kept in
`bench/results/predictions/`; no training.

    python bench/patient_offsets.py RUN_ID [RUN_ID ...]   # -> bench/results/patient_offsets.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

PROJECT = Path(__file__).resolve().parents[1]
PREDICTIONS = PROJECT / "bench" / "results" / "predictions"
OUT = PROJECT / "bench" / "results" / "patient_offsets.txt"


def pair_auroc(target: np.ndarray, score: np.ndarray) -> tuple[float, int]:
    """The Mann-Whitney sum over positive-negative pairs (a tie counts one half) and the number of pairs."""
    positives = target == 1
    ranks = rankdata(score)
    count_pos, count_neg = int(positives.sum()), int((~positives).sum())
    wins = ranks[positives].sum() - count_pos * (count_pos + 1) / 2
    return float(wins), count_pos * count_neg


def within_and_across(target: np.ndarray, score: np.ndarray, patient: np.ndarray) -> dict[str, float]:
    """Pooled AUROC, AUROC over same-patient pairs, AUROC over different-patient pairs (NaN without such pairs), and
    the share of pairs that are same-patient (pooled = share * within + (1 - share) * across)."""
    frame = pd.DataFrame({"target": target, "score": score, "patient": patient})
    wins, pairs = pair_auroc(frame["target"].to_numpy(), frame["score"].to_numpy())
    within_wins = within_pairs = 0.0
    for _, group in frame.groupby("patient"):
        group_wins, group_pairs = pair_auroc(group["target"].to_numpy(), group["score"].to_numpy())
        within_wins, within_pairs = within_wins + group_wins, within_pairs + group_pairs
    def share(part: float, total: float) -> float:
        return part / total if total else float("nan")  # no pairs of that kind

    return {"pooled": wins / pairs, "within": share(within_wins, within_pairs),
            "across": share(wins - within_wins, pairs - within_pairs), "within_share": within_pairs / pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run ids with <id>-oof.csv.gz in bench/results/predictions/")
    args = parser.parse_args()
    lines = ["run        patches  pooled  within  across  within-patient share of pairs"]
    for run in args.runs:
        path = PREDICTIONS / f"{run}-oof.csv.gz"
        if not path.is_file():
            raise SystemExit(f"no kept out-of-fold predictions for run {run} ({path})")
        frame = pd.read_csv(path)
        parts = within_and_across(frame["target"].to_numpy(), frame["probability"].to_numpy(),
                                  frame["patient"].astype(str).to_numpy())
        lines.append(f"{run[:8]}  {len(frame):8d}  {parts['pooled']:.4f}  {parts['within']:.4f}  "
                     f"{parts['across']:.4f}  {parts['within_share']:.3f}")
    text = "\n".join([f"python bench/patient_offsets.py {' '.join(args.runs)}", *lines]) + "\n"
    OUT.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
