"""`idclab-compare`: a comparison table (mean +- std over seeds per strategy) and plot of an experiment's runs.

Reads the finished training runs of an MLflow experiment (optionally one sweep), groups them by
strategy (model, loss, sampler, threshold), writes `comparison.md`, `comparison.csv` and
`comparison.png`, and logs them as a `compare` run in the same experiment.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from idclab.tracking import KIND_TAG, TrackedRun, connect, finished_training_runs  # noqa: E402

STRATEGY_TAGS = ("model", "loss", "sampler", "threshold")
METRICS = ("test_f1", "test_balanced_accuracy", "test_auroc", "test_auprc", "test_mcc", "test_sensitivity",
           "test_specificity", "test_gmean", "test_iba", "test_at_0.5_f1", "test_at_0.5_balanced_accuracy")
DEFAULT_URI = "sqlite:///mlflow.db"


def summarise(runs: list) -> list[dict]:
    """One row per strategy: the strategy tags, the seeds, and mean/std of every metric over them."""
    groups: dict[tuple, list] = defaultdict(list)
    for run in runs:
        groups[tuple(run.data.tags.get(tag, "?") for tag in STRATEGY_TAGS)].append(run)
    rows = []
    for strategy, members in sorted(groups.items()):
        row: dict = dict(zip(STRATEGY_TAGS, strategy, strict=True))
        row["runs"] = len(members)
        row["seeds"] = " ".join(sorted(r.data.params.get("seed", "?") for r in members))
        for metric in METRICS:
            values = np.array([r.data.metrics[metric] for r in members if metric in r.data.metrics])
            row[f"{metric}_mean"] = float(values.mean()) if values.size else float("nan")
            row[f"{metric}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        rows.append(row)
    return sorted(rows, key=lambda r: -r["test_f1_mean"])


def to_markdown(rows: list[dict]) -> str:
    """A markdown table of mean +- std per strategy, best test F1 first."""
    short = [m.removeprefix("test_") for m in METRICS]
    header = "| " + " | ".join([*STRATEGY_TAGS, "runs", *short]) + " |"
    lines = [header, "|" + "---|" * (len(STRATEGY_TAGS) + 1 + len(METRICS))]
    for row in rows:
        cells = [str(row[t]) for t in STRATEGY_TAGS] + [str(row["runs"])]
        cells += [f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    """The same table as CSV, one column per mean and per std."""
    columns = [*STRATEGY_TAGS, "runs", "seeds"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(str(row[c]) if not isinstance(row[c], float) else f"{row[c]:.6f}" for c in columns))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], title: str):
    """Horizontal bars of test F1, balanced accuracy and AUPRC per strategy, with std error bars."""
    labels = [" / ".join(str(row[t]) for t in STRATEGY_TAGS) for row in rows]
    shown = ("test_f1", "test_balanced_accuracy", "test_auprc")
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) * len(shown) / 2 + 1.8))
    y = np.arange(len(rows))
    height = 0.8 / len(shown)
    for i, metric in enumerate(shown):
        ax.barh(y + i * height, [r[f"{metric}_mean"] for r in rows], height,
                xerr=[r[f"{metric}_std"] for r in rows], label=metric.removeprefix("test_"), capsize=2)
    ax.set_yticks(y + height, labels, fontsize=8)
    ax.invert_yaxis()
    low = min(r[f"{m}_mean"] - r[f"{m}_std"] for r in rows for m in shown)
    ax.set_xlim(max(0.0, low - 0.05), 1.0)  # the differences between strategies are what matters
    ax.set_xlabel("test score (mean ± std over seeds)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def compare(tracking_uri: str, experiment: str, out_dir: Path, sweep: str | None = None,
            log_to_mlflow: bool = True) -> list[dict]:
    """Build, write and (optionally) log the comparison of an experiment's finished training runs."""
    client, experiment_id = connect(tracking_uri, experiment)
    runs = finished_training_runs(client, experiment_id, sweep)
    if not runs:
        raise LookupError(f"no finished training runs in experiment {experiment!r} at {tracking_uri}"
                          + (f" with sweep {sweep!r}" if sweep else ""))
    rows = summarise(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.md").write_text(to_markdown(rows))
    (out_dir / "comparison.csv").write_text(to_csv(rows))
    figure = plot(rows, f"{experiment}: {len(runs)} runs, {len(rows)} strategies")
    figure.savefig(out_dir / "comparison.png", dpi=110)
    plt.close(figure)
    if log_to_mlflow:
        tags = {KIND_TAG: "compare", "runs_compared": str(len(runs))} | ({"sweep": sweep} if sweep else {})
        with TrackedRun(client, experiment_id, "compare", tags) as run:
            for name in ("comparison.md", "comparison.csv", "comparison.png"):
                run.log_file(out_dir / name, "comparison")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: idclab-compare --experiment NAME [--tracking-uri URI] [--sweep DIR] [--out DIR]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="idc", help="MLflow experiment name (default: idc)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI),
                        help="default: $MLFLOW_TRACKING_URI, else the project's sqlite:///mlflow.db (run from "
                             "the project folder)")
    parser.add_argument("--sweep", default=None, help="only runs whose `sweep` tag is this multirun folder")
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="output folder (default: comparison)")
    parser.add_argument("--no-log", action="store_true", help="do not log the comparison to MLflow")
    args = parser.parse_args(argv)
    try:
        rows = compare(args.tracking_uri, args.experiment, args.out, args.sweep, not args.no_log)
    except LookupError as error:
        raise SystemExit(f"error: {error}") from error
    print(to_markdown(rows))
    print(f"Wrote {args.out / 'comparison.md'}, comparison.csv and comparison.png")


if __name__ == "__main__":
    main()
