"""`idclab-compare`: mean ± std over seeds of a sweep's runs, grouped by what differs, ranked on validation.

Reads the finished training runs of a sweep (default: the latest of the experiment), groups them by every
parameter that differs between them (seeds and run-specific keys such as output folders aside), ranks the
groups by a validation metric (test and out-of-fold metrics and minutes are reported, never used to rank) and
writes `comparison.md`, `comparison.csv` and `comparison.png`. Nothing is written to MLflow; a missing store or
experiment is an error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from idclab.config.validation import better_when, is_validation_metric
from idclab.fileutil import save_figure, whole_file, write_text
from idclab.tracking.runs import (
    KIND_TAG,
    PATCH_SPLIT,
    TRAIN_MINUTES,
    open_experiment,
    run_status,
    sweep_runs,
    training_runs,
)

if TYPE_CHECKING:
    from idclab.tracking.runs import MlflowClient

DEFAULT_METRIC = "best_val_auprc"
TEST_METRICS = ("test_f1", "test_balanced_accuracy", "test_auroc", "test_auprc", "test_mcc", "test_sensitivity",
                "test_specificity")
OOF_METRICS = ("oof_auroc", "oof_balanced_accuracy", "oof_f1", "oof_auprc")  # a cross-validated run's estimate
REPORTED_METRICS = (*TEST_METRICS, *OOF_METRICS)  # on the reported patients: shown, never ranked on
PLOTTED_METRICS = ("test_auprc", "test_f1", "test_balanced_accuracy", "oof_auroc", "oof_balanced_accuracy", "oof_f1")
MINUTES = "minutes"  # a run's wall-clock time, start to end
RUN_SPECIFIC = ("paths.", "logger.", "data.count.", "data.cache_key", "data.content", "data.cache_dir",
                "data.generated_dir", "data.num_workers", "data.decode_workers", "trainer.enable_progress_bar",
                "resume", "study.only")
STRATEGY_PARAM = "study.strategy"  # a study's runs: the strategy names the group (its overrides are in the study)
VERDICT_FILE = "study/verdict.md"  # on a study's parent run (idclab.tracking.study)
MIN_SPAN = 0.1  # the comparison figure's axes span at least this much of a [0, 1] score...
STDS_PER_SPAN = 6  # ...and at least this many typical seed standard deviations


class CompareError(ValueError):
    """A comparison that would mislead: pooling runs that differ in more than the seed, ranking on test."""


class BestRun(NamedTuple):
    """The single run with the best validation metric."""

    run_id: str
    run_name: str
    score: float


def project_tracking_uri() -> str:
    """The store train.py uses: $MLFLOW_TRACKING_URI, else `sqlite:///<project>/mlflow.db`, the project being
    $IDCLAB_ROOT or the folder holding train.py (whatever the working directory)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(os.environ.get("IDCLAB_ROOT") or Path(__file__).resolve().parents[3])
    return f"sqlite:///{root / 'mlflow.db'}"


def is_seed(param: str) -> bool:
    """Seeds (`seed`, `split.seed`, ...) are what runs of one group may differ in."""
    return param == "seed" or param.endswith(".seed")


def params_of(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' params, named without MLflow's `params.` prefix."""
    params = runs.filter(regex=r"^params\.")
    return params.rename(columns=lambda name: name.removeprefix("params."))


def implied_by_option(params: pd.DataFrame, key: str, differing: list[str]) -> bool:
    """True for an option's own key (`loss.alpha`) whose value the differing option name (`loss`) already fixes."""
    group = key.split(".")[0]
    if group == key or group not in differing:
        return False
    return bool(params.groupby(group, dropna=False)[key].nunique(dropna=False).le(1).all())


def varying_params(runs: pd.DataFrame) -> list[str]:
    """The params that tell the runs apart: those that differ, seeds, run-specific and implied keys aside (a
    study's runs: their strategy)."""
    params = params_of(runs)
    differing = [key for key in params.columns
                 if params[key].nunique(dropna=False) > 1 and not is_seed(key) and not key.startswith(RUN_SPECIFIC)]
    if STRATEGY_PARAM in params and params[STRATEGY_PARAM].notna().all():  # a study's runs
        return [STRATEGY_PARAM]
    return [key for key in differing if not implied_by_option(params, key, differing)]


def metric_names(runs: pd.DataFrame) -> list[str]:
    """The metrics logged by the runs (system metrics aside)."""
    return sorted(c.removeprefix("metrics.") for c in runs.columns
                  if c.startswith("metrics.") and not c.startswith("metrics.system/"))


def check_metric(runs: pd.DataFrame, metric: str) -> None:
    """Refuse to rank on a metric not measured on validation patients, or on one the runs do not have."""
    if not is_validation_metric(metric):
        raise CompareError(f"{metric} is not a validation metric: rank on one measured on validation patients "
                           f"(e.g. {DEFAULT_METRIC}), never on the patients a run reports")
    if f"metrics.{metric}" not in runs.columns:
        raise LookupError(f"no run has metric {metric!r}; metrics: {', '.join(metric_names(runs))}")


def seed_list(seeds: pd.Series) -> str:
    """The seeds of a group, in numeric order."""
    return " ".join(seeds.astype(str).sort_values(key=lambda s: pd.to_numeric(s, errors="coerce")))


def summarise(runs: pd.DataFrame, metric: str = DEFAULT_METRIC, mode: str = "max", pool: bool = False
              ) -> pd.DataFrame:
    """One row per group of runs that differ only in their seeds: the params telling the groups apart, the number
    of runs, their seeds, and mean and std (NaN for one run) of `metric`, the reported test or out-of-fold metrics
    the runs have, and their minutes; best first."""
    check_metric(runs, metric)
    if better_when(metric) != mode:
        raise CompareError(f"{metric} is better when {'lower' if mode == 'max' else 'higher'}: pass --mode "
                           f"{better_when(metric)}")
    keys = varying_params(runs)
    if pool and keys:
        raise CompareError(f"cannot pool: the runs differ in more than the seed: {', '.join(keys)}")
    if not keys:
        keys, frame = ["group"], pd.DataFrame({"group": "all runs"}, index=runs.index)
    else:
        frame = params_of(runs)[keys].fillna("-")
    frame["seed"] = runs.get("params.seed", pd.Series("?", index=runs.index))
    metrics = [metric, *(m for m in (*REPORTED_METRICS, TRAIN_MINUTES)
                         if runs.get(f"metrics.{m}", pd.Series()).notna().any())]
    for name in metrics:
        frame[name] = runs[f"metrics.{name}"]
    if {"start_time", "end_time"} <= set(runs.columns):
        frame[MINUTES] = (runs["end_time"] - runs["start_time"]).dt.total_seconds() / 60
        metrics.append(MINUTES)
    statistics = {f"{m}_{stat}": (m, stat) for m in metrics for stat in ("mean", "std")}
    table = frame.groupby(keys).agg(
        runs=("seed", "size"), seeds=("seed", seed_list), **statistics)
    return table.reset_index().sort_values(f"{metric}_mean", ascending=mode == "min", kind="stable",
                                           ignore_index=True)


def best_run(runs: pd.DataFrame, metric: str = DEFAULT_METRIC, mode: str = "max") -> BestRun | None:
    """The run with the best `metric` (the one `python evaluate.py` would pick among these): never one trained on
    `split=patches`, whose validation patients it also trained on; None when no other run has the metric."""
    honest = runs.get("params.split", pd.Series(index=runs.index, dtype=object)) != PATCH_SPLIT
    scores = runs.loc[honest, f"metrics.{metric}"].dropna()
    if scores.empty:
        return None
    row = runs.loc[scores.idxmax() if mode == "max" else scores.idxmin()]
    return BestRun(str(row["run_id"]), str(row.get("tags.mlflow.runName", "")), float(row[f"metrics.{metric}"]))


def best_line(best: BestRun | None, metric: str) -> str:
    """The best run in one line, or why there is none."""
    if best is None:
        return f"best run: none (every run with {metric} was trained on split={PATCH_SPLIT}, validated on patients it "\
               "trained on)"
    return f"best run: {best.run_name} ({best.run_id}), {metric} {best.score:.4f}"


def mean_std(mean: float, std: float, digits: int = 3) -> str:
    """`0.812 ± 0.014`; `± n/a` when one run gives no spread."""
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {'n/a' if pd.isna(std) else f'{std:.{digits}f}'}"


def statistic_columns(table: pd.DataFrame) -> list[str]:
    """The metrics summarised in a comparison table, the ranking metric first."""
    return [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]


def markdown(table: pd.DataFrame) -> str:
    """The comparison as a markdown table of `mean ± std` cells, with a caption saying how it is ranked."""
    metrics = statistic_columns(table)
    shown = table[[c for c in table.columns if not c.endswith(("_mean", "_std"))]].copy()
    for name in metrics:
        digits = 1 if name in (MINUTES, TRAIN_MINUTES) else 3
        shown[name] = [mean_std(m, s, digits) for m, s in zip(table[f"{name}_mean"], table[f"{name}_std"],
                                                               strict=True)]
    clock = (f"{TRAIN_MINUTES}: the epochs' time (training and validation) over a run's attempts; "
             if TRAIN_MINUTES in metrics else "")
    caption = (f"Mean ± std over seeds (n/a: a single run), ranked by {metrics[0]} (validation); test and "
               f"out-of-fold metrics are reported, never used to rank; {clock}{MINUTES}: each run's wall-clock "
               "time, start to end (a resumed run's pause included).")
    return f"{caption}\n\n{shown.to_markdown(index=False)}\n\n{answer(table)}\n"


ESTABLISH = ("repeat each option over seeds (e.g. seed=1,2,3 in the sweep), cross-validate (cv.folds=5), or declare "
             "a study (conf/study/, python train.py -m study=NAME: a rule fixed before its runs, a patient bootstrap)")


def noise_words(table: pd.DataFrame) -> str:
    """Whether the gap between the first two groups stands out from seed noise, in words: with one run in either
    group it cannot tell, and says how to find out; with several it compares the gap with the larger seed std."""
    metric = statistic_columns(table)[0]
    gap = abs(table[f"{metric}_mean"].iloc[0] - table[f"{metric}_mean"].iloc[1])
    if table["runs"].iloc[:2].min() < 2:
        return (f"Not established: one run per option, so a gap of {gap:.4f} may be seed noise alone. "
                f"To establish it, {ESTABLISH}.")
    spread = float(table[f"{metric}_std"].iloc[:2].max())
    seeds = int(table["runs"].iloc[:2].min())
    if gap <= spread:
        return (f"Not separated: the gap ({gap:.4f}) is within the seeds' spread (std up to {spread:.4f} over "
                f"{seeds}+ seeds). More seeds or a study could separate them.")
    return (f"A lead, not a test: the gap ({gap:.4f}) exceeds the seeds' spread (std up to {spread:.4f} over "
            f"{seeds}+ seeds), but the options were compared after the fact. To confirm it, declare a study "
            "(conf/study/, python train.py -m study=NAME).")


def answer(table: pd.DataFrame) -> str:
    """The sweep's answer in words: the ranking by the validation metric, the winner and its margin, and whether
    that margin stands out from seed noise (`noise_words`)."""
    metric = statistic_columns(table)[0]
    labels = group_labels(table)
    lines = [f"Ranking by {metric} (validation):"]
    for rank, (label, (_, row)) in enumerate(zip(labels, table.iterrows(), strict=True), start=1):
        runs = f"{row['runs']} run{'s' if row['runs'] > 1 else ''}"
        lines.append(f"  {rank}. {label}: {mean_std(row[f'{metric}_mean'], row[f'{metric}_std'])} ({runs})")
    if len(table) < 2:
        return "\n".join([*lines, "One configuration: nothing to rank."])
    gap = abs(table[f"{metric}_mean"].iloc[0] - table[f"{metric}_mean"].iloc[1])
    lines.append(f"Winner: {labels[0]}, ahead of {labels[1]} by {gap:.4f}.")
    if table.get("split", pd.Series(dtype=object)).iloc[:1].eq(PATCH_SPLIT).any():
        lines.append(f"split={PATCH_SPLIT} validates on patients it also trained on: its lead is inflated by them, "
                     "not a better model (docs/results/leaky_vs_honest.md).")
    if STRATEGY_PARAM in table.columns:  # a study's runs
        return "\n".join([*lines, "A study: its verdict (paired by seed, with a patient-bootstrap interval, by the "
                                   "rule fixed before its runs) decides, not this ranking."])
    return "\n".join([*lines, noise_words(table)])


def axis_limits(means: pd.Series, stds: pd.Series) -> tuple[float, float]:
    """An axis range holding every mean ± std, spanning at least MIN_SPAN and STDS_PER_SPAN typical seed stds
    (kept within [0, 1] for scores), so that differences below the seed spread never fill the axis."""
    spread = stds.fillna(0.0)
    low, high = float((means - spread).min()), float((means + spread).max())
    typical = float(np.nan_to_num(np.sqrt(stds.pow(2).mean())))
    half = max(1.2 * (high - low), MIN_SPAN, STDS_PER_SPAN * typical) / 2  # 1.2: a margin around the bars
    low, high = (low + high) / 2 - half, (low + high) / 2 + half
    if not means.between(0, 1).all():
        return low, high
    if low < 0:
        low, high = 0.0, min(high - low, 1.0)
    if high > 1:
        low, high = max(low - (high - 1), 0.0), 1.0
    return low, high


def group_labels(table: pd.DataFrame) -> list[str]:
    """`loss=focal sampler=none` per group (from the columns before `runs`)."""
    keys = list(table.columns[:table.columns.get_loc("runs")])
    if keys == ["group"]:
        return list(table["group"])
    return [" ".join(f"{key}={row[key]}" for key in keys) for _, row in table.iterrows()]


def comparison_figure(table: pd.DataFrame, title: str) -> Figure:
    """Mean ± std per group (best at the top), one panel for the ranking metric and one per main test metric."""
    metrics = statistic_columns(table)
    shown = [metrics[0], *(m for m in PLOTTED_METRICS if m in metrics)]
    fig = Figure(figsize=(3.2 * len(shown) + 2.5, 0.35 * len(table) + 1.6), layout="constrained")
    axes = fig.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    y = np.arange(len(table))
    for ax, name in zip(axes, shown, strict=True):
        means, stds = table[f"{name}_mean"], table[f"{name}_std"]
        ax.errorbar(means, y, xerr=stds.fillna(0.0), fmt="o", color="C0" if ax is axes[0] else "C7", capsize=3)
        ax.set_xlim(*axis_limits(means, stds))
        ax.set_title(f"{name}\n({'ranks the groups' if ax is axes[0] else 'reported: not used to rank'})",
                     fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, group_labels(table), fontsize=8)
    axes[0].set_ylim(len(table) - 0.5, -0.5)  # best group at the top
    fig.supxlabel("mean ± std over seeds (no bar: a single run)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def summarise_runs(runs: pd.DataFrame, title: str, metric: str = DEFAULT_METRIC, mode: str = "max",
                   pool: bool = False) -> tuple[pd.DataFrame, Figure, BestRun | None]:
    """The comparison table, its figure and the best run of `runs` (MLflow's DataFrame of finished runs)."""
    if runs.empty:
        raise LookupError(f"no finished training runs in {title}")
    table = summarise(runs, metric, mode, pool)
    figure = comparison_figure(table, f"{title}: {len(runs)} runs, {len(table)} groups")
    return table, figure, best_run(runs, metric, mode)


def summarise_sweep(client: MlflowClient, experiment_id: str, parent_run_id: str, metric: str = DEFAULT_METRIC,
                    mode: str = "max") -> tuple[pd.DataFrame, Figure, BestRun | None]:
    """Compare the finished children of a sweep's parent run: (table, figure, best child) to log into the parent."""
    runs = training_runs(client, experiment_id, parent_run_id)
    return summarise_runs(runs, f"sweep {parent_run_id}", metric, mode)


def find_sweep(client: MlflowClient, experiment_id: str, sweep: str | None) -> str:
    """The parent run id of `sweep` (a sweep's output folder, or its parent run id), or of the latest sweep."""
    parents = sweep_runs(client, experiment_id, str(Path(sweep).resolve()) if sweep else None)
    if not parents.empty:
        return str(parents["run_id"].iloc[0])
    if sweep is None:
        raise LookupError("no sweep in this experiment (python train.py -m ...); --all compares every run")
    try:
        _, tags = run_status(client, sweep)
    except LookupError:
        tags = {}
    if tags.get(KIND_TAG) != "sweep":
        raise LookupError(f"no sweep {sweep!r}: neither a sweep's output folder nor its parent run id")
    return sweep


class Comparison(NamedTuple):
    """What `idclab-compare` shows: the table, its figure, the best run and, for a study, its verdict (markdown)."""

    table: pd.DataFrame
    figure: Figure
    best: BestRun | None
    verdict: str | None = None


def study_verdict(client: MlflowClient, parent: str) -> tuple[str | None, str | None]:
    """A study's decision metric and its verdict (`study/verdict.md` on the parent run; None before the first
    verdict), or (None, None) for a sweep that is not a study."""
    params = client.get_run(parent).data.params
    if "study.metric" not in params:
        return None, None
    with tempfile.TemporaryDirectory() as folder:
        try:
            text = Path(client.download_artifacts(parent, VERDICT_FILE, folder)).read_text()
        except Exception:  # the study has not finished a verdict yet
            text = f"Study {params.get('study.name')}: no verdict yet (rerun the study to finish it)."
    return params["study.metric"], text


def compare(tracking_uri: str, experiment: str, sweep: str | None = None, every_run: bool = False,
            metric: str | None = None, mode: str = "max", pool: bool = False) -> Comparison:
    """Compare a sweep's finished training runs (default: the latest sweep), or with `every_run` all of them; a
    study's runs are ranked by its decision metric unless `metric` is given, and its verdict comes along."""
    client, experiment_id = open_experiment(tracking_uri, experiment)
    if every_run:
        return Comparison(*summarise_runs(training_runs(client, experiment_id), experiment,
                                          metric or DEFAULT_METRIC, mode, pool))
    parent = find_sweep(client, experiment_id, sweep)
    study_metric, verdict = study_verdict(client, parent)
    runs = training_runs(client, experiment_id, parent)
    return Comparison(*summarise_runs(runs, f"{experiment}, sweep {parent}", metric or study_metric or DEFAULT_METRIC,
                                      mode, pool), verdict)


def write(table: pd.DataFrame, figure: Figure, out_dir: Path, verdict: str | None = None) -> None:
    """comparison.md (with a study's verdict after the table), comparison.csv (means and stds as numbers) and
    comparison.png in `out_dir`."""
    write_text(out_dir / "comparison.md", markdown(table) + (f"\n{verdict}" if verdict else ""))
    with whole_file(out_dir / "comparison.csv") as partial:
        table.to_csv(partial, index=False)
    save_figure(figure, out_dir / "comparison.png")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="idc", help="MLflow experiment name (default: idc)")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI, else the project's sqlite:///<project>/mlflow.db")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", default=None, help="a sweep's output folder or parent run id (default: the latest)")
    which.add_argument("--all", action="store_true", help="every finished training run of the experiment")
    parser.add_argument("--metric", default=None,
                        help=f"the validation metric ranking the groups (default: {DEFAULT_METRIC}; for a study, "
                             "its decision metric)")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="max (default) or min is best")
    parser.add_argument("--pool", action="store_true",
                        help="one group of all runs; refused if they differ in more than the seed")
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="output folder (default: comparison)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command line: idclab-compare [--experiment NAME] [--sweep DIR|RUN_ID | --all] [--metric M] [--pool]."""
    args = parse_args(argv)
    try:
        table, figure, best, verdict = compare(args.tracking_uri or project_tracking_uri(), args.experiment,
                                               args.sweep, args.all, args.metric, args.mode, args.pool)
    except (LookupError, CompareError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    write(table, figure, args.out, verdict)
    print(markdown(table))
    print(best_line(best, statistic_columns(table)[0]))
    if verdict:
        print(verdict)
    print(f"Wrote {args.out / 'comparison.md'}, comparison.csv and comparison.png")


if __name__ == "__main__":
    main()
