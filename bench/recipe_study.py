"""The recipe study: every strategy by patient-grouped 5-fold cross-validation on the pool, several seeds.

Runs `python train.py ... cv.folds=5` once per (strategy, seed) that is not yet in the results file, one at a
time (the machine has 2 cores), and appends each finished run's pooled out-of-fold metrics, fold mean/std and
wall time to `bench/results/recipe_study.csv`, so a killed study continues where it stopped:

    nohup python bench/recipe_study.py > bench/results/recipe_study.log 2>&1 &
    python bench/recipe_study.py --only "baseline (bce)" --rerun   # run strategies again, replacing their rows
    python bench/recipe_study.py --backfill  # last-epoch and pooled validation columns for older rows in the store
    python bench/recipe_study.py --table     # the table so far (also docs/recipe_study.md), by strategy
    python bench/recipe_study.py --confirm [--table]  # stage 2 (below): bench/results/recipe_confirm.csv

All strategies share the folds (`cv.seed=0`): differences between them are paired by fold. The seed changes
initialisation, data order and augmentation. Choose by the validation columns only; OOF columns are the
estimate the chosen recipe is reported with.

Spatial context (rule fixed before its first results, 2026-12-01): every run also compares no context with
radius 1 and 2 on the same fold models (`cv/context_rules.csv`: weight and threshold tuned on each fold's
validation, applied out of fold). A radius is called better than none when, for every seed, its
`val_crossfit_auprc` (validation patients scored at a weight tuned on the other half of them) exceeds none's
by more than the baseline's own seed range of that metric. The recipe takes, among the radii called better on
the baseline, the one with the higher mean `val_crossfit_auprc`.

Stage 2, confirmation (fixed 2026-12-01, before any of its runs): stage 1's pre-set metric, `best_val_auprc`, is a
maximum over epochs on 24-30 patients per fold and did not separate "12 epochs cosine+ema" from the baseline,
while steadier validation metrics favoured it for both seeds (exploratory). The confirmation re-runs only these
two strategies on new seeds (3, 4) into their own file and decides by `cv_val_pooled_auroc` (AUROC of all folds'
validation predictions pooled, about 130 patients): "12 epochs cosine+ema" replaces the recipe's training when
its paired difference from the baseline exceeds the baseline's seed range of that metric for both seeds
(`separated`). The OOF columns stay the estimate, not the chooser.

Stage 2b (fixed 2026-12-01, before any of its runs, after stage 1 of "oversample"): oversampling was not
separated by `best_val_auprc` (+0.0050, -0.0072) while its pooled validation AUROC was higher for both seeds
(+0.0136, +0.0080; exploratory, the metric being chosen after stage 1). It joins the confirmation on seeds 3 and
4 under the same rule: it replaces the recipe's sampler when its paired `cv_val_pooled_auroc` difference from the
baseline exceeds the baseline's seed range of that metric for both seeds. The baseline's seeds 3 and 4 are
already in the file, so only its own runs are new.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import average_precision_score, roc_auc_score

from idclab.fileutil import whole_file
from idclab.termination import Terminated

PROJECT = Path(__file__).resolve().parents[1]
POOL = PROJECT.parent / "shared" / "data" / "idc-pool"
RESULTS = PROJECT / "bench" / "results" / "recipe_study.csv"
CONFIRM_RESULTS = PROJECT / "bench" / "results" / "recipe_confirm.csv"
EXPERIMENT = "recipe_study"
COMMON = ["data=idc", f"data.root={POOL}", "cv.folds=5", "cv.seed=0", "split.train=0.85", "split.val=0.15",
          "split.test=0", "trainer.max_epochs=6", "trainer.enable_progress_bar=false", "logger.log_model=false",
          f"logger.experiment_name={EXPERIMENT}", "report.heatmap_patients=0", "report.gallery_size=0"]
STRATEGIES: dict[str, list[str]] = {  # in the order they run: the likeliest to help first
    "baseline (bce)": [],
    "baseline + context": ["context=neighbours"],  # the baseline's very models (same seeds), blended at test
    "cosine+ema": ["optim.schedule=cosine", "optim.warmup_epochs=1", "averaging=ema"],
    "stain augment": ["augment=stain"],
    "12 epochs cosine+ema": ["trainer.max_epochs=12", "optim.schedule=cosine", "optim.warmup_epochs=1",
                             "averaging=ema"],
    "residual wide": ["model.residual=true", "model.widths=[32,64,128]"],
    "logit_adjusted": ["loss=logit_adjusted"],
    "weighted": ["loss=weighted"],
    "drw weighted": ["loss=weighted", "drw.start_epoch=4"],  # DRW: class weights on for the last 2 of 6 epochs
    "reinhard": ["stain=reinhard"],
    "focal": ["loss=focal"],
    "oversample": ["sampler=oversample"],
    "macenko": ["stain=macenko"],
    # the recipe's model, measured (chosen by bench/seed_ensemble_study.py's rule, not by this table): seeds 1 and 3
    # give members {1, 2} and {3, 4}, the disjoint pairs of that study
    "2-seed ensemble + context": ["ensemble.members=2", "context=neighbours"],
    # the same with oversampling, should stage 2b confirm it
    "2-seed ensemble + oversample + context": ["ensemble.members=2", "sampler=oversample", "context=neighbours"],
    # stage 3 (bench/paired_study.py): the recipe's model with the 12-epoch cosine+EMA schedule
    "2-seed ensemble, 12 epochs cosine+ema + context": ["ensemble.members=2", "trainer.max_epochs=12",
                                                         "optim.schedule=cosine", "optim.warmup_epochs=1",
                                                         "averaging=ema", "context=neighbours"],
    # exploratory screen, no product option yet: per-slide Reinhard by bench/slide_stain.py (rule in that docstring)
    "slide reinhard (exploratory)": [],
    # screen (bench/neighbourhood_screen.py, its own results file): the 3x3 patches around each one as input
    "neighbourhood 1": ["data.neighbourhood=1"],
    "2-seed ensemble + neighbourhood + context": ["ensemble.members=2", "data.neighbourhood=1", "context=neighbours"],
    "neighbourhood 2": ["data.neighbourhood=2"],
    "2-seed ensemble + neighbourhood 2 + context": ["ensemble.members=2", "data.neighbourhood=2", "context=neighbours"],
    "neighbourhood 3": ["data.neighbourhood=3"],
    # screens (bench/recipe_screens.py): the recipe as committed, its 10 epochs restored after the study's 6; the
    # 5x5 view with a cosine schedule and EMA weights
    "recipe (10 epochs)": ["experiment=recipe", "trainer.max_epochs=10"],
    "neighbourhood 2 cosine+ema": ["data.neighbourhood=2", "optim.schedule=cosine", "optim.warmup_epochs=1",
                                   "averaging=ema"],
    # the same trained 20 epochs (the recipe's 30-minute budget allows 2 members x 40)
    "neighbourhood 2 cosine+ema, 20 epochs": ["data.neighbourhood=2", "trainer.max_epochs=20", "optim.schedule=cosine",
                                              "optim.warmup_epochs=1", "averaging=ema"],
    # the length screen's confirmation in the recipe's configuration (bench/recipe_screens.py length-confirm)
    "recipe, 20 epochs cosine+ema": ["experiment=recipe", "trainer.max_epochs=20", "optim.schedule=cosine",
                                     "optim.warmup_epochs=1", "averaging=ema"],
    # two views: the 3x3 neighbourhood at a third of the resolution beside the 5x5 at a fifth
    "neighbourhood 1+2 cosine+ema": ["data.neighbourhood=[1,2]", "optim.schedule=cosine", "optim.warmup_epochs=1",
                                     "averaging=ema"],
    # capacity for the view's wider input: IDCNet a third wider
    "neighbourhood 2 cosine+ema, wide": ["data.neighbourhood=2", "model.widths=[32,64,128]", "optim.schedule=cosine",
                                         "optim.warmup_epochs=1", "averaging=ema"],
    # the recipe with four seed members instead of two (bench/recipe_screens.py members)
    "recipe, 4 members": ["experiment=recipe", "trainer.max_epochs=10", "ensemble.members=4"],
    # a third conv per stage (capacity in depth rather than width)
    "neighbourhood 2 cosine+ema, depth 3": ["data.neighbourhood=2", "model.depth=3", "optim.schedule=cosine",
                                            "optim.warmup_epochs=1", "averaging=ema"],
    # the depth screen's model in the recipe's configuration (bench/recipe_screens.py depth-recipe)
    "recipe, depth 3": ["experiment=recipe", "trainer.max_epochs=10", "model.depth=3"],
    # mixup (Zhang et al. 2018) at torchvision's references' alpha (bench/recipe_screens.py mixup)
    "neighbourhood 2 cosine+ema, mixup 0.2": ["data.neighbourhood=2", "mixup.alpha=0.2", "optim.schedule=cosine",
                                              "optim.warmup_epochs=1", "averaging=ema"],
    # depth 3 and widths 32-64-128 together (bench/recipe_screens.py capacity)
    "neighbourhood 2 cosine+ema, depth 3 wide": ["data.neighbourhood=2", "model.depth=3", "model.widths=[32,64,128]",
                                                 "optim.schedule=cosine", "optim.warmup_epochs=1", "averaging=ema"],
    # loss truncation, each class's highest 10% of a batch left out (bench/recipe_screens.py truncation)
    "neighbourhood 2 cosine+ema, truncated 0.1": ["data.neighbourhood=2", "loss=truncated", "optim.schedule=cosine",
                                                  "optim.warmup_epochs=1", "averaging=ema"],
    # a peak learning rate of 3e-3 (bench/recipe_screens.py lr)
    "neighbourhood 2 cosine+ema, lr 3e-3": ["data.neighbourhood=2", "optim.lr=0.003", "optim.schedule=cosine",
                                            "optim.warmup_epochs=1", "averaging=ema"],
    # BCE plus a pairwise ranking term over IDC / non-IDC pairs (bench/recipe_screens.py ranking)
    "neighbourhood 2 cosine+ema, ranking loss": ["data.neighbourhood=2", "loss=ranking", "optim.schedule=cosine",
                                                 "optim.warmup_epochs=1", "averaging=ema"],
    # the learning curve's points (bench/learning_curve.py): the screens' model on shares of each fold's training data
    **{f"neighbourhood 2 cosine+ema, {share:.0%} of {axis}": ["data.neighbourhood=2", "optim.schedule=cosine",
                                                             "optim.warmup_epochs=1", "averaging=ema",
                                                             f"cv.train_{axis}={share}"]
       for axis in ("patients", "patches") for share in (0.25, 0.5)},
    # AdamW's decoupled weight decay at a usual strength (the default 1e-4 is far below it)
    "neighbourhood 2 cosine+ema, weight decay 0.05": ["data.neighbourhood=2", "optim.weight_decay=0.05",
                                                      "optim.schedule=cosine", "optim.warmup_epochs=1",
                                                      "averaging=ema"],
}
ENTRIES = {"slide reinhard (exploratory)": PROJECT / "bench" / "slide_stain.py"}  # default: train.py
SEEDS = (1, 2)
STRATEGY_SEEDS = {name: (1, 3) for name in STRATEGIES if name.startswith("2-seed ensemble")}  # not SEEDS
STRATEGY_SEEDS["slide reinhard (exploratory)"] = (1, 2, 3, 4)  # seeds 2-4 because seed 1 was a lead (its docstring)
CONFIRM_STRATEGIES = ("baseline (bce)", "12 epochs cosine+ema", "oversample")  # stage 2: new seeds, steadier metric
CONFIRM_SEEDS = (3, 4)
CONFIRM_METRIC = "cv_val_pooled_auroc"
CONTEXTS = ("none", "radius_1", "radius_2")  # the rows of cv/context_rules.csv
PREDICTIONS = PROJECT / "bench" / "results" / "predictions"  # each run's pooled predictions, kept in the repository
KEPT_COLUMNS = ("patient", "target", "probability", "patch_probability", "x", "y", "fold")
COLUMNS = ["oof_f1", "oof_balanced_accuracy", "oof_auroc", "oof_auprc", "best_val_auprc", "cv_test_f1_mean",
           "cv_test_f1_std", "oof_f1_ci_low", "oof_f1_ci_high", "oof_balanced_accuracy_ci_low",
           "oof_balanced_accuracy_ci_high", "oof_auroc_ci_low", "oof_auroc_ci_high",
           *(f"oof_rule_{rule}_{name}" for rule in ("max_f1", "youden")
             for name in ("f1", "balanced_accuracy", "sensitivity", "specificity")),
           "cv_val_pooled_auroc", "cv_val_pooled_auprc",
           *(f"oof_context_{context}_{name}" for context in CONTEXTS
             for name in ("weight_mean", "val_crossfit_auroc", "val_crossfit_auprc", "auroc", "auprc", "f1",
                          "balanced_accuracy", "sensitivity", "specificity"))]


def done(results: Path = RESULTS) -> pd.DataFrame:
    return pd.read_csv(results) if results.is_file() else pd.DataFrame(columns=["strategy", "seed"])


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write a results table whole (`idclab.fileutil.whole_file`): a kill mid-write must not lose the record of the
    runs already done, which `done` reads to skip them."""
    with whole_file(path) as partial:
        table.to_csv(partial, index=False)


def rows_of(runs: pd.DataFrame, strategy: str, seed: int) -> pd.Series:
    """The rows of `runs` (a results table) for one strategy and seed."""
    return (runs["strategy"] == strategy) & (runs["seed"] == seed)


def run_to_end(command: list[str], spawn: Callable[..., subprocess.Popen] = subprocess.Popen, **options) -> int:
    """Run `command` and return its exit code. A SIGTERM to this study, even one that lands while the command
    starts, is passed on to it (its MLflow runs then end KILLED instead of staying RUNNING in an orphaned
    process), and the study then exits 143 (`Terminated`) rather than going on."""
    child: subprocess.Popen | None = None
    stopped = []

    def stop(signum: int, frame: object) -> None:
        stopped.append(signum)
        if child is not None:
            child.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        child = spawn(command, **options)
        if stopped:
            child.terminate()
        code = None
        while code is None:  # wake every second: a signal delivered to another thread runs `stop` only then
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = child.wait(timeout=1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopped:
        raise Terminated
    return code


def run_one(strategy: str, seed: int, results: Path = RESULTS) -> None:
    """Train one cross-validation and record its parent run's metrics in `results` (`record`)."""
    overrides = [*COMMON, *STRATEGIES[strategy], f"seed={seed}"]
    start = time.time()
    entry = ENTRIES.get(strategy, PROJECT / "train.py")
    store = f"sqlite:///{PROJECT / 'mlflow.db'}"  # whatever MLFLOW_TRACKING_URI says: the run is looked up here
    code = run_to_end([sys.executable, str(entry), *overrides], cwd=PROJECT,
                      env=os.environ | {"IDCLAB_ROOT": str(PROJECT), "MLFLOW_TRACKING_URI": store})
    minutes = (time.time() - start) / 60
    if code != 0:
        print(f"{strategy} seed {seed}: exit {code} after {minutes:.1f} min", flush=True)
        return
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs([experiment.experiment_id], "tags.cv = 'parent' and attributes.status = 'FINISHED' "
                                 f"and attributes.start_time >= {int(start * 1000)}")
    if len(parents) != 1:  # another job wrote to the store meanwhile: no row is better than a wrong one
        print(f"{strategy} seed {seed}: {len(parents)} finished cross-validations started since this one; not "
              f"recorded (add it with record() once you know its run id)", flush=True)
        return
    record(client, parents[0].info.run_id, strategy, seed, minutes, results)


def record(client: MlflowClient, run_id: str, strategy: str, seed: int, minutes: float, results: Path) -> None:
    """Write a finished cross-validation's row (its parent run's metrics) to `results`, replacing an earlier row of
    the same strategy and seed, and keep its predictions in the repository (`keep_predictions`)."""
    parent = client.get_run(run_id)
    row = {"strategy": strategy, "seed": seed, "run_id": run_id, "minutes": round(minutes, 1),
           "overrides": " ".join(STRATEGIES[strategy])}
    row |= {name: parent.data.metrics.get(name) for name in COLUMNS}
    keep_predictions(client, run_id)
    try:  # bookkeeping must not lose a finished run: --backfill can add these later
        row |= last_epochs_val_auprc(client, parent.info.experiment_id, run_id)
    except (ValueError, MlflowException) as error:
        print(f"last-epoch validation AUPRC not read ({error}); run --backfill later", flush=True)
    previous = done(results)
    previous = previous[~rows_of(previous, strategy, seed)]  # a re-run replaces
    table = pd.concat([previous, pd.DataFrame([row])], ignore_index=True)
    write_table(table, results)
    print(f"{strategy} seed {seed}: OOF F1 {row['oof_f1']:.4f} BAC {row['oof_balanced_accuracy']:.4f} "
          f"AUROC {row['oof_auroc']:.4f} in {minutes:.1f} min", flush=True)


def keep_predictions(client: MlflowClient, run_id: str, kept: Path = PREDICTIONS) -> list[Path]:
    """Copy a cross-validation run's pooled validation and out-of-fold predictions (`cv/*_predictions.csv`) into
    `kept` as `<run_id>-val.csv.gz` and `<run_id>-oof.csv.gz`: patient, target, P(IDC) to 6 decimals, position and
    fold, no file paths. A paired verdict must not depend on a store a new machine does not have."""
    kept.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as folder:
        for split in ("val", "oof"):
            frame = pd.read_csv(client.download_artifacts(run_id, f"cv/{split}_predictions.csv", folder))
            frame = frame[[c for c in KEPT_COLUMNS if c in frame]].round(6)
            written.append(kept / f"{run_id}-{split}.csv.gz")
            write_table(frame, written[-1])
    return written


def last_epochs_val_auprc(client: MlflowClient, experiment_id: str, parent_id: str) -> dict[str, float]:
    """Mean over folds of the validation AUPRC at the last epoch and over the last 3 epochs: unlike the best
    epoch's, these are not a maximum over epochs, which favours noisy or longer training curves. Empty when no fold
    logged a curve (a seed ensemble's folds: the curves are its members')."""
    folds = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    curves = [[m.value for m in sorted(client.get_metric_history(f.info.run_id, "val_auprc"), key=lambda m: m.step)]
              for f in folds]
    curves = [c for c in curves if c]
    if not curves:
        return {}
    return {"last_val_auprc": sum(c[-1] for c in curves) / len(curves),
            "last3_val_auprc": sum(sum(c[-3:]) / len(c[-3:]) for c in curves) / len(curves)}


def pooled_validation(client: MlflowClient, parent_id: str) -> dict[str, float]:
    """AUROC and AUPRC of every fold's validation predictions pooled, from `cv/val_predictions.csv`: for runs
    made before cross-validation logged them as `cv_val_pooled_*` metrics."""
    with tempfile.TemporaryDirectory() as folder:
        val = pd.read_csv(client.download_artifacts(parent_id, "cv/val_predictions.csv", folder))
    return {"cv_val_pooled_auroc": roc_auc_score(val["target"], val["probability"]),
            "cv_val_pooled_auprc": average_precision_score(val["target"], val["probability"])}


def backfill() -> None:
    """Fill the last-epoch and pooled validation columns of rows written before they existed, from the local
    store."""
    table, client = done(), MlflowClient(f"sqlite:///{PROJECT / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None or table.empty:
        return
    known = {r.info.run_id for r in client.search_runs([experiment.experiment_id], "tags.cv = 'parent'")}
    for name in ("last_val_auprc", "last3_val_auprc", "cv_val_pooled_auroc", "cv_val_pooled_auprc"):
        table[name] = table[name] if name in table else float("nan")
    for i in table.index[table["last_val_auprc"].isna() & table["run_id"].isin(known)]:
        for name, value in last_epochs_val_auprc(client, experiment.experiment_id, table.loc[i, "run_id"]).items():
            table.loc[i, name] = value
    for i in table.index[table["cv_val_pooled_auroc"].isna() & table["run_id"].isin(known)]:
        try:
            for name, value in pooled_validation(client, table.loc[i, "run_id"]).items():
                table.loc[i, name] = value
        except (OSError, MlflowException) as error:  # a run from before validation predictions were saved
            print(f"{table.loc[i, 'strategy']} seed {table.loc[i, 'seed']}: no pooled validation ({error})")
    write_table(table, RESULTS)


METRICS = ["best_val_auprc", "oof_f1", "oof_balanced_accuracy", "oof_auroc", "oof_auprc"]
EXTRA = ["last3_val_auprc", "cv_val_pooled_auroc",  # runs from 2026-12-01 on
         "oof_rule_youden_f1", "oof_rule_youden_balanced_accuracy"]
BASELINE = "baseline (bce)"
SAME_MODELS = ("baseline + context",)  # strategies that train exactly the baseline's models
CHOSEN_ELSEWHERE = {name: "chosen by the seed-ensemble study (docs/seed_ensemble_study.md)" for name in STRATEGY_SEEDS}
CHOSEN_ELSEWHERE["2-seed ensemble, 12 epochs cosine+ema + context"] = "stage 3: docs/schedule_ensemble_study.md"
CHOSEN_ELSEWHERE["slide reinhard (exploratory)"] = "a screen: see bench/slide_stain.py"
CHOSEN_ELSEWHERE["neighbourhood 1"] = "a screen: see bench/neighbourhood_screen.py"
CHOSEN_ELSEWHERE["2-seed ensemble + neighbourhood + context"] = "exploratory: see bench/neighbourhood_screen.py"
CHOSEN_ELSEWHERE["neighbourhood 2"] = "a screen: see bench/neighbourhood_screen.py"
CHOSEN_ELSEWHERE["2-seed ensemble + neighbourhood 2 + context"] = "confirmation: see bench/neighbourhood_screen.py"
CHOSEN_ELSEWHERE["neighbourhood 3"] = "a screen: see bench/neighbourhood_screen.py"
CHOSEN_ELSEWHERE["recipe (10 epochs)"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, 20 epochs"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 1+2 cosine+ema"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, wide"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, weight decay 0.05"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, depth 3"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["recipe, 4 members"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["recipe, depth 3"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, mixup 0.2"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, ranking loss"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, lr 3e-3"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, depth 3 wide"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE["neighbourhood 2 cosine+ema, truncated 0.1"] = "a screen: see bench/recipe_screens.py"
CHOSEN_ELSEWHERE |= {name: "a learning curve: see bench/learning_curve.py" for name in STRATEGIES
                     if name.endswith((" of patients", " of patches"))}
CHOSEN_ELSEWHERE["recipe, 20 epochs cosine+ema"] = "confirmation: see bench/recipe_screens.py"
STUDY_STRATEGIES = tuple(name for name in STRATEGIES if name not in CHOSEN_ELSEWHERE)  # what the study runs itself


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: mean ± std over seeds, the mean patient-bootstrap 95% interval of the OOF metrics, minutes
    per cross-validation, and the seed-paired difference from the baseline in the validation metric; ranked by
    the validation metric (best_val_auprc: the mean over folds of each fold's best validation AUPRC)."""
    rows = []
    base = table[table["strategy"] == BASELINE].set_index("seed")["best_val_auprc"]
    for strategy, group in table.groupby("strategy", sort=False):
        row = {"strategy": strategy, "seeds": len(group), "minutes": f"{group['minutes'].mean():.0f}"}
        for name in METRICS + [c for c in EXTRA if c in group]:
            row[name] = mean_std(group[name].dropna())
        for name in ("oof_f1", "oof_balanced_accuracy", "oof_auroc"):
            row[f"{name} CI"] = f"[{group[f'{name}_ci_low'].mean():.3f}, {group[f'{name}_ci_high'].mean():.3f}]"
        paired = group.set_index("seed")["best_val_auprc"] - base
        paired = paired.dropna()
        row["Δ val vs baseline (per seed)"] = ", ".join(f"{d:+.4f}" for d in paired) if strategy != BASELINE else ""
        row["separated"] = separated(paired, base) if strategy != BASELINE else ""
        if strategy in SAME_MODELS:  # context changes no training: its evidence is in the context table
            row["separated"] = "same models as the baseline: see the context table"
        row["separated"] = CHOSEN_ELSEWHERE.get(strategy, row["separated"])
        row["_rank"] = group["best_val_auprc"].mean()
        rows.append(row)
    return pd.DataFrame(rows).sort_values("_rank", ascending=False).drop(columns="_rank")


def mean_std(values: pd.Series) -> str:
    """`mean ± std` over seeds (the mean alone for one seed, blank for none)."""
    if values.empty:
        return ""
    return f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def separated(paired: pd.Series, base: pd.Series) -> str:
    """`better`/`worse` only when every seed's paired difference has the same sign and exceeds the baseline's
    own seed-to-seed range; otherwise `no` (within the noise) or `too few seeds`."""
    if len(paired) < 2 or len(base) < 2:
        return "too few seeds"
    noise = base.max() - base.min()
    if (paired > noise).all():
        return "better"
    if (paired < -noise).all():
        return "worse"
    return "no"


def context_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per strategy with context columns, and per context (none, radius 1, 2) on the same fold models: mean ±
    std over seeds of the validation evidence and the OOF metrics, and whether the radius is separated from
    none by `val_crossfit_auprc` (every seed's paired gain beyond the baseline's seed range of none's)."""
    def column(context: str, name: str) -> str:
        return f"oof_context_{context}_{name}"

    key = column("none", "val_crossfit_auprc")
    if key not in table:
        return pd.DataFrame()
    with_context = table.dropna(subset=[key])
    base = with_context[with_context["strategy"] == BASELINE].set_index("seed")[key]
    rows = []
    for strategy, group in with_context.groupby("strategy", sort=False):
        none = group.set_index("seed")[key]
        for context in CONTEXTS:
            row = {"strategy": strategy, "context": context.replace("_", " "), "seeds": len(group)}
            for name in ("weight_mean", "val_crossfit_auprc", "auroc", "auprc", "f1", "balanced_accuracy"):
                row[name if name.startswith(("val", "weight")) else f"oof_{name}"] = mean_std(
                    group[column(context, name)].dropna())
            if context != "none":
                paired = group.set_index("seed")[column(context, "val_crossfit_auprc")] - none
                row["Δ val_crossfit_auprc vs none"] = ", ".join(f"{d:+.4f}" for d in paired)
                row["separated"] = separated(paired, base)
            rows.append(row)
    return pd.DataFrame(rows)


def confirmation(table: pd.DataFrame) -> pd.DataFrame:
    """Stage 2's verdict: per strategy, mean ± std over seeds of the deciding metric, the other validation
    metrics and the OOF estimate (without and with radius-1 context), and each seed's paired difference from the
    baseline in the deciding metric with the rule's call."""
    base = table[table["strategy"] == BASELINE].set_index("seed")[CONFIRM_METRIC]
    names = (CONFIRM_METRIC, "last3_val_auprc", "best_val_auprc", "oof_f1", "oof_balanced_accuracy", "oof_auroc",
             "oof_context_radius_1_balanced_accuracy", "oof_context_radius_1_auroc")
    rows = []
    for strategy, group in table.groupby("strategy", sort=False):
        paired = (group.set_index("seed")[CONFIRM_METRIC] - base).dropna()
        row = {"strategy": strategy, "seeds": ", ".join(str(s) for s in group["seed"]),
               "minutes": f"{group['minutes'].mean():.0f}", **{n: mean_std(group[n].dropna()) for n in names}}
        for name in ("oof_balanced_accuracy", "oof_auroc"):
            row[f"{name} CI"] = f"[{group[f'{name}_ci_low'].mean():.3f}, {group[f'{name}_ci_high'].mean():.3f}]"
        row[f"Δ {CONFIRM_METRIC} (per seed)"] = "" if strategy == BASELINE else ", ".join(f"{d:+.4f}" for d in paired)
        row["separated"] = "" if strategy == BASELINE else separated(paired, base)
        rows.append(row)
    return pd.DataFrame(rows)


def write_markdown(table: pd.DataFrame, path: Path) -> str:
    """The summary, the spatial-context comparison and every run, as markdown (also written to `path`)."""
    runs = table[["strategy", "seed", "minutes", *METRICS, "oof_balanced_accuracy_ci_low",
                  "oof_balanced_accuracy_ci_high", "run_id"]]
    contexts = context_summary(table)
    context_text = (f"Spatial context on the same fold models (weight and threshold tuned on validation):\n\n"
                    f"{contexts.fillna('').to_markdown(index=False)}\n\n" if not contexts.empty else "")
    text = (f"{summary(table).to_markdown(index=False)}\n\n{context_text}Every run:\n\n"
            f"{runs.to_markdown(index=False, floatfmt='.4f')}\n")
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the results so far and exit")
    parser.add_argument("--only", nargs="*", help="run only these strategies (any of STRATEGIES; without it, the "
                        "study's own, not those its screens and confirmations run)")
    parser.add_argument("--backfill", action="store_true",
                        help="add the last-epoch and pooled validation columns to older rows in the store")
    parser.add_argument("--rerun", action="store_true", help="run them again even if done (replaces their rows)")
    parser.add_argument("--confirm", action="store_true",
                        help=f"stage 2: {' and '.join(CONFIRM_STRATEGIES)} on seeds {CONFIRM_SEEDS}, into "
                             f"{CONFIRM_RESULTS.name}, decided by {CONFIRM_METRIC}")
    args = parser.parse_args()
    if args.rerun and not args.only:
        parser.error("--rerun needs --only STRATEGY ...: it replaces those strategies' rows")
    if args.backfill:
        backfill()
        return
    if args.table and args.confirm:
        text = confirmation(done(CONFIRM_RESULTS)).to_markdown(index=False)
        header = ("# Recipe study, stage 2: confirmation on new seeds\n\n`python bench/recipe_study.py --confirm` "
                  "(rule in the script's docstring, fixed before any of its runs), then `--confirm --table`. "
                  f"Decided by `{CONFIRM_METRIC}`; mean ± std over seeds; OOF columns are the estimate.\n\n")
        (PROJECT / "docs" / "recipe_confirm.md").write_text(header + text + "\n")
        print(text)
        return
    if args.table:
        print(write_markdown(done(), PROJECT / "docs" / "recipe_study.md"))
        return
    if not POOL.is_dir():
        raise SystemExit(f"{POOL} is not present")
    strategies, seeds, results = ((CONFIRM_STRATEGIES, CONFIRM_SEEDS, CONFIRM_RESULTS) if args.confirm
                                  else (STUDY_STRATEGIES, SEEDS, RESULTS))
    for strategy in args.only or strategies:  # both seeds of a strategy before the next: pairs complete early
        for seed in seeds if args.confirm else STRATEGY_SEEDS.get(strategy, seeds):
            previous = done(results)
            if rows_of(previous, strategy, seed).any() and not args.rerun:
                continue
            run_one(strategy, seed, results)


if __name__ == "__main__":
    main()
