"""Screen: does the neighbourhood view (`data.neighbourhood=1`) beat the baseline? Decided against seed noise and
against the noise of which patients happen to be in validation.

Why: a 50x50 patch shows a few cells. Blending a patch's P(IDC) with its neighbours' (`context=neighbours`) was the
one change separated so far (+0.015 OOF AUROC), and between-patient offsets cost about 0.025 AUROC
(docs/slide_stain_screen.md). `data.neighbourhood=1` shows the model the 3x3 patches around each one, averaged down
to 50x50, as three more input channels (`idclab.data.neighbourhood`): the tissue around a patch, at a third of the
resolution, for about the cost of the patch alone.

Why a new chooser: every study run shares the folds and the validation patients (`cv.seed=0`), so the baseline's
seed range (0.0051 of `cv_val_pooled_auroc`) measures training noise only. Per-slide Reinhard gained validation
AUROC on all four seeds and lost out of fold on three (docs/slide_stain_screen.md): a gain on these ~117
validation patients need not hold on others. So the rule adds a paired patient bootstrap of the gain
(`paired_patient_bootstrap`): validation patients are drawn with replacement (one draw shared by every seed and
both strategies, a patient's patches of every fold together), the pooled validation AUROC of each run is
recomputed on the draw, and the gain is averaged over seeds; 2000 draws give a 95% interval.

Rule (fixed 2026-12-02, before the candidate's first run): candidate "neighbourhood 1" (the baseline with
`data.neighbourhood=1`) against "baseline (bce)" re-run at the same code, seeds 1 and 2, the study's settings
(`recipe_study.COMMON`: 5 folds, `cv.seed=0`, 6 epochs). The candidate is `better` when (a) for both seeds its
`cv_val_pooled_auroc` exceeds the baseline's of the same seed by more than 0.0051 (the baseline's four-seed range,
`recipe_study.csv` and `recipe_confirm.csv`) and (b) the bootstrap interval of the mean gain lies above 0;
`worse` when both hold with the signs reversed; otherwise not separated. OOF columns are the estimate, reported
only. A `better` neighbourhood view would next be confirmed in the recipe's own configuration (two-seed ensemble +
context, seeds 1 and 3) under the same rule before the recipe changes.

Confirmation (fixed 2026-12-02, before the screen's candidate runs finished, to run only if the screen calls it
`better`): "2-seed ensemble + neighbourhood + context" (`ensemble.members=2 data.neighbourhood=1
context=neighbours`, the study's 6 epochs) against the recipe's model as measured, "2-seed ensemble + context"
(`recipe_study.csv`, seeds 1 and 3, store /work/study), by the same rule (both seeds' gains beyond 0.0051, the
bootstrap interval of the mean gain above 0). `better` there adds `data.neighbourhood=1` to
`conf/experiment/recipe.yaml` (if the recipe still trains on the pool within 30 minutes).

Result (2026-12-02): both seeds gain beyond the seed range (+0.0076, +0.0139), but the patient-bootstrap interval
of the mean gain is [-0.0076, +0.0247]: **not separated**, so the confirmation did not run and the recipe is
unchanged. Exploratory follow-ups (fixed before they ran; estimates for the next session, no decision, written
to this file's results with `--explore`): "2-seed ensemble + neighbourhood + context" seed 1 (the recipe's
configuration, against the recipe's measured seed 1), then "neighbourhood 2" seed 1 (the 5x5 view, against
"neighbourhood 1" seed 1), then the recipe's configuration with the view on seed 3 (added after seed 1's result,
before its run: a second seed of the same estimate).

Seed 1 in the recipe's configuration (2026-12-02): pooled validation AUROC 0.9040 against the recipe's 0.8966
(+0.0074, patient-bootstrap interval [-0.0101, +0.0236]); out of fold AUROC 0.921 [0.891, 0.950] against 0.911,
BAC 0.826 against 0.810 (Youden's threshold 0.840 against 0.833), F1 0.730 against 0.710; 23.9 min against 24.4.

"neighbourhood 2" seed 1 (2026-12-02, exploratory): pooled validation AUROC 0.9087 against the baseline's 0.8928
(+0.0159, interval [+0.0023, +0.0275]) and neighbourhood 1's 0.9005 (+0.0082, [-0.0010, +0.0163]); out of fold
AUROC 0.928 [0.905, 0.948], BAC 0.832 (Youden 0.853), F1 0.738. A lead, chosen on seed 1's validation patients, so
its confirmation must come from a new run: rule (fixed 2026-12-02, before seed 2 ran) `--rings-2`: "neighbourhood 2"
is `better` than the baseline when its seed 2 alone exceeds the baseline's seed 2 by more than 0.0051 in
`cv_val_pooled_auroc` and that seed's own patient-bootstrap interval lies above 0; the two seeds' mean gain and
interval are reported beside it. A `better` here earns the view a confirmation in the recipe's configuration (as
above, with `data.neighbourhood=2`) before the recipe changes: "2-seed ensemble + neighbourhood 2 + context", seeds
1 and 3, against "2-seed ensemble + context", by the confirmation's rule (`--confirm --rings-2`). Seed 1 was
started on 2026-12-02 and stopped at 20.7 min (2 of 5 folds; about 50 min per seed), at the session's end.

Amendment (2026-12-02, next session, before any confirmation run finished): the machine was replaced and both
study stores went with it, so the reference's validation predictions (which the patient bootstrap needs) are gone.
The confirmation's reference, "2-seed ensemble + context" seeds 1 and 3, is re-run at the current code (its
default path unchanged since it was measured) into this file's results; the rule is otherwise as fixed above. From
now on every run's pooled validation and out-of-fold predictions are kept in the repository
(`bench/results/predictions/<run_id>-{val,oof}.csv.gz`, `recipe_study.keep_predictions`) and verdicts read them
first, so no decision depends on a store again. `--confirm --rings-2 [--seed N]` trains the reference's and then
the candidate's run of each seed.

    python bench/neighbourhood_screen.py       # train the missing runs (about 15-25 min each) into ./mlflow.db
    python bench/neighbourhood_screen.py --verdict --tracking-uri sqlite:///STORE   # -> docs/neighbourhood_screen.md
    python bench/neighbourhood_screen.py --verdict --tracking-uri sqlite:///STORE \
        --check-slide-stain --reference-store sqlite:///SLIDE_STORE   # -> docs/chooser_check.md
    python bench/neighbourhood_screen.py --confirm     # the confirmation's runs, into ./mlflow.db
    python bench/neighbourhood_screen.py --verdict --confirm --tracking-uri sqlite:///STORE \
        --reference-store sqlite:///RECIPE_STORE      # -> docs/neighbourhood_confirm.md
    python bench/neighbourhood_screen.py --confirm --rings-2 [--seed N]   # the 5x5 confirmation (amended above)
    python bench/neighbourhood_screen.py --rings-3 [--seed N]             # the 7x7 screen (below)
    python bench/neighbourhood_screen.py --verdict --rings-3              # -> docs/neighbourhood_rings3.md

The 7x7 screen (rule fixed 2026-12-02, before any run of it, when `data.neighbourhood=3` was added): the 3x3 view
gained over the patch alone and the 5x5 over the 3x3 (+0.0082 on seed 1, exploratory), so a wider view may gain
again. "neighbourhood 3" (`data.neighbourhood=3`) against "neighbourhood 2", both run at the same code into their
own file (`bench/results/neighbourhood_rings3.csv`; the 5x5 rows above lost their predictions with the old store),
seeds 1 and 2, the study's settings; `better` by the screen's rule (both seeds' `cv_val_pooled_auroc` gains beyond
0.0051 and the paired patient-bootstrap interval of the mean gain above 0). A `better` 7x7 view would then need its
own confirmation in the recipe's configuration before the recipe uses it.

The study ran in a clone (/work/study2, its store `mlflow.db`); the baseline's two runs were made there by
`python bench/recipe_study.py --only "baseline (bce)" --rerun` at fae241b (the default path is unchanged since) and
copied into this file's results.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from recipe_study import PREDICTIONS, SEEDS, done, mean_std, rows_of, run_one

from idclab.metrics import RankedPatches

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results" / "neighbourhood_screen.csv"
DOC = PROJECT / "docs" / "neighbourhood_screen.md"
CHECK_DOC = PROJECT / "docs" / "chooser_check.md"
CANDIDATE, REFERENCE = "neighbourhood 1", "baseline (bce)"
SEED_RANGE = 0.0051  # the baseline's four seeds, cv_val_pooled_auroc (recipe_study.csv, recipe_confirm.csv)
RESAMPLES = 2000
METRIC = "cv_val_pooled_auroc"
REPORTED = ("minutes", METRIC, "oof_auroc", "oof_balanced_accuracy", "oof_rule_youden_balanced_accuracy",
            "oof_context_radius_1_auroc", "oof_context_radius_1_balanced_accuracy")


def paired_patient_bootstrap(candidate: Sequence[pd.DataFrame], reference: Sequence[pd.DataFrame],
                             resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """The mean over seeds of the candidate's pooled validation AUROC minus the reference's, and its 95% interval
    over `resamples` draws of the validation patients with replacement (one draw for all runs; every row of a
    drawn patient counts once per time it is drawn). Each frame: one run's `cv/val_predictions.csv` (patient,
    target, and the patches' own P(IDC), `patch_probability`, or `probability` in older files: `METRIC` is
    computed before spatial context); `candidate[i]` and `reference[i]` are the same seed's runs. A draw without
    both classes (no AUROC) is left out of the interval."""
    if len(candidate) != len(reference):
        raise ValueError(f"{len(candidate)} candidate runs against {len(reference)} reference runs: pair them by seed")
    runs = [*candidate, *reference]
    patients = np.unique(np.concatenate([frame["patient"].astype(str).to_numpy() for frame in runs]))
    codes = [np.searchsorted(patients, frame["patient"].astype(str).to_numpy()) for frame in runs]
    half = len(candidate)

    ranked = [RankedPatches(frame["target"].to_numpy(), frame[own_probability(frame)].to_numpy()) for frame in runs]

    def gain(weights: np.ndarray) -> float:
        scores = [run.auroc(weights[code]) for run, code in zip(ranked, codes, strict=True)]
        return float(np.mean(np.subtract(scores[:half], scores[half:])))

    rng = np.random.default_rng(seed)
    draws = np.array([gain(np.bincount(rng.integers(0, len(patients), len(patients)), minlength=len(patients)))
                      for _ in range(resamples)])
    draws = draws[~np.isnan(draws)]  # a draw without both classes has no AUROC
    return gain(np.ones(len(patients))), float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))


def own_probability(frame: pd.DataFrame) -> str:
    """The column of a validation-predictions frame holding the patches' own P(IDC), before spatial context."""
    return "patch_probability" if "patch_probability" in frame else "probability"


def verdict(gains: Sequence[float], low: float, high: float, seed_range: float = SEED_RANGE) -> str:
    """`better` when every seed's gain exceeds `seed_range` and the bootstrap interval (low, high) of the mean gain
    lies above 0; `worse` with the signs reversed; else `not separated`."""
    if all(g > seed_range for g in gains) and low > 0:
        return "better"
    if all(g < -seed_range for g in gains) and high < 0:
        return "worse"
    return "not separated"


def settled(gains: Sequence[float], seed_range: float = SEED_RANGE) -> bool:
    """Whether the seeds done already fix the call at `not separated`, whatever the missing seeds give: `verdict`
    asks every seed to pass the seed range the same way, so one gain within it (or gains beyond it on both sides)
    decides."""
    return any(abs(g) <= seed_range for g in gains) or (any(g > seed_range for g in gains)
                                                        and any(g < -seed_range for g in gains))


def small_effect_margin(seeds: int, seed_range: float = SEED_RANGE) -> float:
    """The seed range of a mean over `seeds` seeds: one seed's range over the square root of their number."""
    return seed_range / np.sqrt(seeds)


def small_effect_verdict(gains: Sequence[float], low: float, high: float, seed_range: float = SEED_RANGE) -> str:
    """For an effect smaller than one seed's noise: `better` when every seed's gain is above 0, the mean gain
    exceeds `small_effect_margin` of the seeds and the bootstrap interval (low, high) lies above 0; `worse` with the
    signs reversed; else `not separated`."""
    margin = small_effect_margin(len(gains), seed_range)
    if all(g > 0 for g in gains) and np.mean(gains) > margin and low > 0:
        return "better"
    if all(g < 0 for g in gains) and np.mean(gains) < -margin and high < 0:
        return "worse"
    return "not separated"


def small_effect_settled(gains: Sequence[float]) -> bool:
    """Whether the seeds done already fix `small_effect_verdict` at `not separated`: every gain must be above 0, or
    every gain below 0, so a gain of exactly 0 or two gains of opposite signs decide."""
    return any(g >= 0 for g in gains) and any(g <= 0 for g in gains)


def seed_gains(runs: pd.DataFrame, candidate: str, reference: str, seeds: Sequence[int]) -> list[float]:
    """Per seed, the candidate's `METRIC` minus the reference's (unrounded: the rule reads these)."""
    by_run = runs.set_index(["strategy", "seed"])[METRIC]
    return [float(by_run.loc[(candidate, seed)] - by_run.loc[(reference, seed)]) for seed in seeds]


def validation_predictions(client: MlflowClient, run_id: str, kept: Path = PREDICTIONS) -> pd.DataFrame:
    """A cross-validation parent run's pooled validation predictions: the copy kept in the repository
    (`recipe_study.keep_predictions`), else `cv/val_predictions.csv` from the run's store."""
    if (kept / f"{run_id}-val.csv.gz").is_file():
        return pd.read_csv(kept / f"{run_id}-val.csv.gz")
    with tempfile.TemporaryDirectory() as folder:
        return pd.read_csv(client.download_artifacts(run_id, "cv/val_predictions.csv", folder))


def decide(runs: pd.DataFrame, candidate: str, reference: str, seeds: Sequence[int], client: MlflowClient,
           candidate_client: MlflowClient | None = None, small_effect_seeds: int = 0) -> tuple[pd.DataFrame, str]:
    """Per seed: both runs' `METRIC` and the gain; then the bootstrap interval and the call, as markdown: by
    `verdict`, or by `small_effect_verdict` when `small_effect_seeds` (the seeds its rule names) is set. The
    candidate's predictions come from `candidate_client` when its runs are in another store."""
    clients = {candidate: candidate_client or client, reference: client}
    by_run = runs.set_index(["strategy", "seed"])
    rows, gains, predictions = [], seed_gains(runs, candidate, reference, seeds), {candidate: [], reference: []}
    for seed, gain in zip(seeds, gains, strict=True):
        rows.append({"seed": seed, candidate: f"{by_run.loc[(candidate, seed), METRIC]:.4f}",
                     reference: f"{by_run.loc[(reference, seed), METRIC]:.4f}", "gain": f"{gain:+.4f}"})
        for strategy in (candidate, reference):
            predictions[strategy].append(validation_predictions(clients[strategy],
                                                                by_run.loc[(strategy, seed), "run_id"]))
    mean, low, high = paired_patient_bootstrap(predictions[candidate], predictions[reference])
    call = (small_effect_verdict if small_effect_seeds else verdict)(gains, low, high)
    patients = len(np.unique(np.concatenate([f["patient"].astype(str) for f in predictions[reference]])))
    rule = (f"small-effect rule: every seed's gain of one sign, their mean ({np.mean(gains):+.4f}) beyond "
            f"±{small_effect_margin(small_effect_seeds):.4f} (the seed range {SEED_RANGE} over the square root of "
            f"{small_effect_seeds} seeds) and the interval on the same side of 0" if small_effect_seeds
            else f"seed range {SEED_RANGE}")
    text = (f"Mean gain {mean:+.4f}, 95% patient-bootstrap interval [{low:+.4f}, {high:+.4f}] ({RESAMPLES} draws of "
            f"{patients} validation patients); {rule}. **Call: {call}.**")
    return pd.DataFrame(rows), text


def paired_seeds(runs: pd.DataFrame, candidate: str, reference: str, seeds: Sequence[int]
                 ) -> tuple[list[int], list[int]]:
    """The `seeds` both strategies have finished, and those still missing (a stage decides on all or none)."""
    finished = [s for s in seeds if all(rows_of(runs, name, s).any() for name in (candidate, reference))]
    return finished, [s for s in seeds if s not in finished]


def summary(runs: pd.DataFrame, strategies: Sequence[str], seeds: Sequence[int]) -> pd.DataFrame:
    """Mean ± std over `seeds` of the reported columns, with the OOF patient-bootstrap intervals' means."""
    rows = []
    for strategy in strategies:
        group = runs[(runs["strategy"] == strategy) & runs["seed"].isin(seeds)]
        row = {"strategy": strategy, "seeds": ", ".join(str(s) for s in group["seed"])}
        row |= {name: mean_std(group[name].dropna()) for name in REPORTED}
        row["oof_auroc CI"] = f"[{group['oof_auroc_ci_low'].mean():.3f}, {group['oof_auroc_ci_high'].mean():.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def rings_2_verdict(client: MlflowClient) -> None:
    """The 5x5 view's call by its confirming seed alone, both seeds reported (docs/neighbourhood_rings2.md)."""
    runs = done(RESULTS)
    candidate, seed = RINGS_2
    confirming, call_text = decide(runs, candidate, REFERENCE, (seed,), client)  # the rule: this seed alone
    both, both_text = decide(runs, candidate, REFERENCE, SEEDS, client)
    doc = (f"# The 5x5 neighbourhood view (`data.neighbourhood=2`): confirming seed\n\nRule in "
           f"`bench/neighbourhood_screen.py` (fixed before seed {seed} ran; seed 1 was the exploratory lead). "
           f"Mean ± std over seeds; OOF columns are the estimate.\n\n"
           f"{summary(runs, (REFERENCE, 'neighbourhood 1', candidate), SEEDS).to_markdown(index=False)}\n\n"
           f"Per seed, by `{METRIC}`:\n\n{both.to_markdown(index=False, disable_numparse=True)}\n\n"
           f"Seed {seed} alone, the rule: {call_text}\n\nBoth seeds, reported only: "
           f"{both_text.split(' **Call')[0]}\n")
    (PROJECT / "docs" / "neighbourhood_rings2.md").write_text(doc)
    print(doc)


@dataclass(frozen=True)
class Stage:
    """A candidate against a reference on the same seeds; the reference's rows come from `reference_results`."""

    candidate: str
    reference: str
    seeds: tuple[int, ...]
    reference_results: Path
    title: str
    doc: Path
    results: Path = RESULTS  # the candidate's rows (and the reference's, when `reference_results` is this file)
    script: str = "bench/neighbourhood_screen.py"  # where the stage's rule is written
    small_effect: bool = False  # decided by `small_effect_verdict` instead of `verdict`
    earlier: tuple[tuple[str, Path], ...] = ()  # (strategy, file): that strategy's rows an earlier screen recorded
    reported_seeds: tuple[int, ...] = ()  # earlier seeds shown beside the call, never deciding it


EXPLORATORY = (("2-seed ensemble + neighbourhood + context", 1), ("neighbourhood 2", 1),
               ("2-seed ensemble + neighbourhood + context", 3))
RINGS_2 = ("neighbourhood 2", 2)  # the lead's confirming run (`--rings-2`)
SCREEN = Stage(CANDIDATE, REFERENCE, SEEDS, RESULTS, "Neighbourhood view screen", DOC)
CONFIRM_2 = Stage("2-seed ensemble + neighbourhood 2 + context", "2-seed ensemble + context", (1, 3),
                  RESULTS,  # the reference re-run here (the amendment above)
                  "The 5x5 neighbourhood view in the recipe's configuration",
                  PROJECT / "docs" / "neighbourhood_rings2_confirm.md")
RINGS_3_RESULTS = PROJECT / "bench" / "results" / "neighbourhood_rings3.csv"
RINGS_3 = Stage("neighbourhood 3", "neighbourhood 2", SEEDS, RINGS_3_RESULTS,
                "The 7x7 neighbourhood view against the 5x5",
                PROJECT / "docs" / "neighbourhood_rings3.md", RINGS_3_RESULTS)
CONFIRM = Stage("2-seed ensemble + neighbourhood + context", "2-seed ensemble + context", (1, 3),
                PROJECT / "bench" / "results" / "recipe_study.csv", "Neighbourhood view in the recipe's configuration",
                PROJECT / "docs" / "neighbourhood_confirm.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdict", action="store_true", help="decide from the runs done (no training)")
    parser.add_argument("--confirm", action="store_true", help="the confirmation in the recipe's configuration")
    parser.add_argument("--explore", action="store_true", help="the exploratory follow-ups' runs (no decision)")
    parser.add_argument("--rings-2", action="store_true",
                        help="the 5x5 view's confirming run, or with --verdict its call")
    parser.add_argument("--rings-3", action="store_true", help="the 7x7 screen's runs, or with --verdict its call")
    parser.add_argument("--seed", type=int, help="train only this seed of the stage (a session's time is limited)")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{PROJECT / 'mlflow.db'}",
                        help="the store holding the candidate's runs (and the screen's reference runs)")
    parser.add_argument("--reference-store", metavar="STORE",
                        help="with --verdict: the store holding the reference's runs, if not --tracking-uri")
    parser.add_argument("--check-slide-stain", action="store_true",
                        help="with --verdict: apply the chooser to the slide-stain screen's seeds 1 and 2 against the "
                             "screen's baseline (candidate runs in --reference-store)")
    args = parser.parse_args()
    stage = RINGS_3 if args.rings_3 else (CONFIRM_2 if args.rings_2 else CONFIRM) if args.confirm else SCREEN
    if args.explore or (args.rings_2 and not args.verdict and not args.confirm):
        for strategy, seed in [RINGS_2] if args.rings_2 else EXPLORATORY:
            if not rows_of(done(RESULTS), strategy, seed).any():
                run_one(strategy, seed, RESULTS)
        return
    if not args.verdict:
        train_stage(stage, stage.seeds if args.seed is None else (args.seed,))
        return
    client = MlflowClient(args.tracking_uri)
    other = MlflowClient(args.reference_store) if args.reference_store else client
    if args.rings_2 and not args.confirm:
        rings_2_verdict(client)
        return
    if args.check_slide_stain:
        stain = pd.read_csv(PROJECT / "bench" / "results" / "recipe_study.csv")
        candidate = "slide reinhard (exploratory)"
        runs = pd.concat([done(RESULTS).query("strategy == @REFERENCE"), stain.query("strategy == @candidate")])
        table, text = decide(runs, candidate, REFERENCE, SEEDS, client, other)
        doc = (f"# The patient-bootstrap chooser applied to the slide-stain screen\n\n"
               f"`bench/neighbourhood_screen.py --check-slide-stain` (no training): per-slide Reinhard's runs of "
               f"seeds 1 and 2 (docs/slide_stain_screen.md) against the baseline re-run for the neighbourhood "
               f"screen, by the screen's rule. The slide screen's own rule (seed gains only) had found every "
               f"seed's gain beyond the seed range, and out of fold it was lower. A check of the chooser, not a new "
               f"decision.\n\n{table.to_markdown(index=False, disable_numparse=True)}\n\n{text}\n")
        CHECK_DOC.write_text(doc)
        print(doc)
        return
    print(stage_verdict(stage, other, client))


def train_stage(stage: Stage, seeds: Sequence[int]) -> None:
    """Train the stage's missing runs of `seeds` (the reference's too when its rows belong to the stage's file)."""
    reruns_reference = stage.reference_results == stage.results
    strategies = (stage.reference, stage.candidate) if reruns_reference else (stage.candidate,)
    for seed in seeds:
        for strategy in strategies:
            if not rows_of(stage_runs(stage), strategy, seed).any():
                run_one(strategy, seed, stage.results)


def stage_runs(stage: Stage) -> pd.DataFrame:
    """The rows of a stage's candidate (from `stage.results`) and reference (from `stage.reference_results`), with
    those `stage.earlier` names. The same run recorded in two files counts once; two runs of one strategy and seed
    are an error (which one decides must not depend on the order of the files)."""
    sources = [(stage.candidate, stage.results), (stage.reference, stage.reference_results), *stage.earlier]
    runs = pd.concat([done(path).query("strategy == @strategy") for strategy, path in sources], ignore_index=True)
    if "run_id" in runs:
        runs = runs.drop_duplicates(["strategy", "seed", "run_id"], ignore_index=True)
    twice = runs[runs.duplicated(["strategy", "seed"], keep=False)]
    if len(twice):
        first = twice.iloc[0]
        raise ValueError(f"{first['strategy']!r} seed {first['seed']} has {len(twice)} different runs in the stage's "
                         f"files ({', '.join(str(path) for _, path in sources)}): keep one")
    return runs


def stage_verdict(stage: Stage, client: MlflowClient, candidate_client: MlflowClient | None = None) -> str:
    """Decide a stage from its finished runs (no call while a seed is missing), write `stage.doc`, return it.
    Predictions not kept in the repository come from `client`'s store (the candidate's from `candidate_client`)."""
    runs = stage_runs(stage)
    finished, missing = paired_seeds(runs, stage.candidate, stage.reference, stage.seeds)
    if not finished:
        raise SystemExit(f"no seed of {stage.seeds} has both {stage.candidate!r} and {stage.reference!r} finished")
    table, text = decide(runs, stage.candidate, stage.reference, finished, client, candidate_client,
                         len(stage.seeds) if stage.small_effect else 0)
    gains = seed_gains(runs, stage.candidate, stage.reference, finished)
    if missing and (small_effect_settled(gains) if stage.small_effect else settled(gains)):  # the call is fixed
        asks = ("to be above 0, or every one below 0" if stage.small_effect
                else "to pass the seed range the same way")
        text = (f"{text.split(' **Call')[0]}\n\n**Call: not separated**, before seed(s) "
                f"{', '.join(map(str, missing))}: the rule asks every seed's gain {asks}, "
                f"and {', '.join(f'seed {s} gained {g:+.4f}' for s, g in zip(finished, gains, strict=True))}, so no "
                f"remaining seed can change the call (they were not run).")
    elif missing:  # the rule needs every seed: what is done is reported, not decided
        text = (f"{text.split(' **Call')[0]}\n\n**Incomplete: seed(s) {', '.join(map(str, missing))} not run yet, so "
                f"no call** (the rule needs seeds {', '.join(map(str, stage.seeds))}).")
    doc = (f"# {stage.title}\n\nRule and commands in `{stage.script}` (fixed before the runs that decide it). "
           f"Mean ± std over seeds; OOF columns are the estimate (max-F1 threshold; `radius_1` with spatial "
           f"context).\n\n"
           f"{summary(runs, (stage.reference, stage.candidate), finished).to_markdown(index=False)}\n\n"
           f"Decision by `{METRIC}`, paired by seed:\n\n{table.to_markdown(index=False, disable_numparse=True)}\n\n"
           f"{text}\n{reported(stage, runs, finished)}")
    stage.doc.write_text(doc)
    return doc


def reported(stage: Stage, runs: pd.DataFrame, finished: Sequence[int]) -> str:
    """The gains of the stage's `reported_seeds` (earlier runs, not deciding) and the mean over every seed, as a
    markdown paragraph; empty when the stage has none."""
    seeds, _ = paired_seeds(runs, stage.candidate, stage.reference, stage.reported_seeds)
    if not seeds:
        return ""
    gains = seed_gains(runs, stage.candidate, stage.reference, seeds)
    every = gains + seed_gains(runs, stage.candidate, stage.reference, finished)
    return (f"\nReported only, not deciding (the earlier runs that prompted this screen): "
            f"{', '.join(f'seed {s} {g:+.4f}' for s, g in zip(seeds, gains, strict=True))}; the mean gain over all "
            f"{len(every)} seeds is {np.mean(every):+.4f}.\n")


if __name__ == "__main__":
    main()
