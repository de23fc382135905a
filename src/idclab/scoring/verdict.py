"""A study's verdict: each strategy against the baseline, decided by a rule fixed before the runs.

For every strategy and seed, the gain is the strategy's validation score minus the baseline's of the same seed.
The mean gain over seeds gets a paired patient-bootstrap interval: validation patients are drawn with replacement
(one draw shared by every seed and by both sides), each run's score is recomputed on the draw, and the gain is
averaged over seeds. The call is `better` when every seed's gain exceeds the margin and the interval lies above 0,
`worse` when every gain is below minus the margin and the interval lies below 0, else `not separated`; a
strategy or baseline missing a seed is `incomplete`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from idclab.scoring.metrics import RankedPatches

# the decision metrics a verdict can recompute from validation predictions -> the score it recomputes
SCORES = {"cv_val_pooled_auroc": "auroc", "cv_val_pooled_auprc": "auprc",  # cross-validation: every fold's pooled
          "val_model_auroc": "auroc", "val_model_auprc": "auprc"}  # one split: the chosen model on validation
CROSS_VALIDATED = ("cv_val_pooled_auroc", "cv_val_pooled_auprc")


@dataclass(frozen=True)
class Rule:
    """The decision rule: every seed's gain beyond `margin` (same sign) and the `confidence` patient-bootstrap
    interval of the mean gain (over `resamples` draws) excluding 0."""

    margin: float = 0.0
    confidence: float = 0.95
    resamples: int = 1000

    def words(self, metric: str) -> str:
        """The rule in one sentence."""
        below = f"-{self.margin:g}" if self.margin else "0"
        return (f"`better` when every seed's gain in {metric} exceeds {self.margin:g} and the {self.confidence:.0%} "
                f"paired patient-bootstrap interval of the mean gain ({self.resamples} draws of the validation "
                f"patients) lies above 0; `worse` when every gain is below {below} and the interval lies below 0; "
                "otherwise `not separated` (`incomplete`: a seed of the strategy or the baseline has no finished "
                "run).")


class RankedScores(RankedPatches):
    """A run's validation patches ranked once by P(IDC): AUROC and AUPRC under any weighting of the patches (a
    bootstrap draw) without sorting again."""

    def auprc(self, weights: np.ndarray) -> float:
        """Average precision (sklearn's `average_precision_score` with `sample_weight`): precision at each
        distinct P(IDC), from the highest down, weighted by the positives found there; NaN without positives."""
        positive = np.bincount(self.level_of, weights * self.positive, self.levels)[::-1]
        negative = np.bincount(self.level_of, weights * ~self.positive, self.levels)[::-1]
        found, called = np.cumsum(positive), np.cumsum(positive + negative)
        if found[-1] <= 0:
            return float("nan")
        precision = np.divide(found, called, out=np.zeros_like(found), where=called > 0)
        return float(positive @ precision / found[-1])

    def score(self, name: str, weights: np.ndarray) -> float:
        return self.auroc(weights) if name == "auroc" else self.auprc(weights)


def own_probability(frame: pd.DataFrame) -> str:
    """The column holding the patches' own P(IDC), before any spatial context (what the metrics are computed on)."""
    return "patch_probability" if "patch_probability" in frame else "probability"


def recompute(frame: pd.DataFrame, score: str) -> float:
    """`score` (auroc or auprc) of one run's validation predictions (columns target and P(IDC))."""
    ranked = RankedScores(frame["target"].to_numpy(), frame[own_probability(frame)].to_numpy(dtype=float))
    return ranked.score(score, np.ones(len(frame)))


def paired_bootstrap(strategy: Sequence[pd.DataFrame], baseline: Sequence[pd.DataFrame], score: str,
                     rule: Rule = Rule(), seed: int = 0) -> tuple[list[float], float, float, float]:
    """Per seed the gain `score(strategy[i]) - score(baseline[i])`, their mean, and the `rule.confidence` interval
    of the mean over `rule.resamples` draws of the validation patients with replacement (one draw for every run;
    a patient's patches count once per time it is drawn; a draw leaving a run without both classes is left out).
    Each frame: one run's validation predictions (patient, target, P(IDC)); `strategy[i]` and `baseline[i]` are
    the same seed's runs."""
    if len(strategy) != len(baseline) or not strategy:
        raise ValueError(f"{len(strategy)} strategy runs against {len(baseline)} baseline runs: pair them by seed")
    runs = [*strategy, *baseline]
    patients = np.unique(np.concatenate([frame["patient"].astype(str).to_numpy() for frame in runs]))
    codes = [np.searchsorted(patients, frame["patient"].astype(str).to_numpy()) for frame in runs]
    ranked = [RankedScores(frame["target"].to_numpy(), frame[own_probability(frame)].to_numpy(dtype=float))
              for frame in runs]
    half = len(strategy)

    def gains(counts: np.ndarray) -> np.ndarray:
        scores = [run.score(score, counts[code].astype(float)) for run, code in zip(ranked, codes, strict=True)]
        return np.subtract(scores[:half], scores[half:])

    per_seed = gains(np.ones(len(patients), dtype=int))
    rng = np.random.default_rng(seed)
    draws = np.array([gains(np.bincount(rng.integers(0, len(patients), len(patients)),
                                        minlength=len(patients))).mean() for _ in range(rule.resamples)])
    draws = draws[~np.isnan(draws)]
    tail = (1 - rule.confidence) / 2
    low, high = (float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))) if len(draws) else (np.nan,) * 2
    return [float(g) for g in per_seed], float(per_seed.mean()), low, high


def call(gains: Sequence[float], low: float, high: float, margin: float) -> str:
    """`better`, `worse` or `not separated` by the rule (see the module docstring)."""
    if all(g > margin for g in gains) and low > 0:
        return "better"
    if all(g < -margin for g in gains) and high < 0:
        return "worse"
    return "not separated"


def verdict_table(predictions: Mapping[tuple[str, int], pd.DataFrame], strategies: Sequence[str], baseline: str,
                  seeds: Sequence[int], metric: str, rule: Rule = Rule()) -> pd.DataFrame:
    """One row per strategy other than the baseline: strategy, metric, gain_seed_<S> per seed, mean_gain, ci_low,
    ci_high and the verdict. `predictions[(strategy, seed)]`: the validation predictions of that finished run
    (a missing pair makes its strategy `incomplete`: its gains are shown, no interval)."""
    score = SCORES[metric]
    rows = []
    for strategy in (s for s in strategies if s != baseline):
        row: dict[str, object] = {"strategy": strategy, "metric": metric}
        paired = [s for s in seeds if (strategy, s) in predictions and (baseline, s) in predictions]
        if len(paired) == len(seeds):
            gains, mean, low, high = paired_bootstrap([predictions[(strategy, s)] for s in seeds],
                                                      [predictions[(baseline, s)] for s in seeds], score, rule)
            verdict = call(gains, low, high, rule.margin)
        else:
            gains = [recompute(predictions[(strategy, s)], score) - recompute(predictions[(baseline, s)], score)
                     for s in paired]
            mean, low, high, verdict = float(np.mean(gains)) if gains else np.nan, np.nan, np.nan, "incomplete"
        by_seed = dict(zip(paired, gains, strict=True))
        row |= {f"gain_seed_{s}": by_seed.get(s, np.nan) for s in seeds}
        rows.append(row | {"mean_gain": mean, "ci_low": low, "ci_high": high, "verdict": verdict})
    return pd.DataFrame(rows)


def separated(table: pd.DataFrame, baseline: str) -> list[str]:
    """`focal better than bce`, `weighted worse than bce`: the strategies separated from the baseline, by kind."""
    return [f"{', '.join(table.loc[table['verdict'] == kind, 'strategy'])} {kind} than {baseline}"
            for kind in ("better", "worse") if (table["verdict"] == kind).any()]


def headline(table: pd.DataFrame, baseline: str) -> str:
    """The verdict in one line, as the MLflow runs table shows a description: what separates, what is missing."""
    missing = list(table.loc[table["verdict"] == "incomplete", "strategy"])
    parts = separated(table, baseline)
    text = "; ".join(parts) if parts else "no verdict yet" if len(missing) == len(table) else \
        f"nothing separates from {baseline}"
    return text + (f" (incomplete: {', '.join(missing)})" if missing and len(missing) < len(table) else "")


def conclusion(table: pd.DataFrame, baseline: str) -> str:
    """The verdict in plain words: which strategies are separated from the baseline, either way."""
    parts = separated(table, baseline)
    missing = list(table.loc[table["verdict"] == "incomplete", "strategy"])
    if parts:
        text = "; ".join(parts) + "."
    else:
        text = "No verdict yet." if len(missing) == len(table) else f"Nothing separates from {baseline}."
    if missing:
        text += f" Incomplete (a seed without a finished run): {', '.join(missing)}; rerun the study to finish them."
    return text


def verdict_markdown(table: pd.DataFrame, name: str, baseline: str, metric: str, rule: Rule) -> str:
    """The verdict as markdown: the rule in words, the table (gains with 4 decimals) and the conclusion."""
    shown = table.copy()
    numbers = [c for c in shown.columns if c.startswith("gain_seed_") or c in ("mean_gain", "ci_low", "ci_high")]
    for column in numbers:
        shown[column] = [f"{v:+.4f}" if pd.notna(v) else "-" for v in shown[column]]
    return (f"# Study {name}: {headline(table, baseline)}\n\n"
            f"Each strategy against the baseline `{baseline}`, same seeds. "
            f"{rule.words(metric)}\n\n{shown.to_markdown(index=False)}\n\n**{conclusion(table, baseline)}**\n")
