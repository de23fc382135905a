"""What a training run tells the user on the console besides its epochs and test report: one header line once its
MLflow run is open (what runs, on which data, where it is logged) and a closing block (where the run is, what to run
next)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "idc"  # conf/logger/mlflow.yaml: evaluate.py's too, so it needs no name for this one


def what_runs(overrides: Sequence[str]) -> str:
    """The command line's overrides (what differs from the defaults), or that there are none."""
    return " ".join(overrides) or "the defaults"


def data_words(summary: dict[str, Any]) -> str:
    """`synthetic data: 2804 patches of 20 patients (1905 train, 487 val, 412 test)`, and the skipped files if any."""
    patients = len({name for names in summary["patients"].values() for name in names})  # split=patches: shared
    split = ", ".join(f"{sum(counts.values())} {name}" for name, counts in summary["split_counts"].items())
    skipped = sum(summary["skipped_files"].values())
    note = f"; {skipped} files skipped (see data/summary.json)" if skipped else ""
    return f"{summary['source']} data: {summary['patches']} patches of {patients} patients ({split}){note}"


def header(overrides: Sequence[str], summary: dict[str, Any], experiment: str, link: str | None) -> str:
    """One line: what runs, on which data, in which MLflow experiment, and the run's address in the UI."""
    where = f"MLflow experiment {experiment}" + (f", run {link}" if link else "")
    return f"Training {what_runs(overrides)} on {data_words(summary)} -> {where}"


def evaluate_command(experiment: str) -> str:
    """`python evaluate.py` as the user reaches it from here (beside the train.py they ran), for `experiment`."""
    script = Path(sys.argv[0]).with_name("evaluate.py") if Path(sys.argv[0]).name == "train.py" else "evaluate.py"
    return f"python {script}" + (f" logger.experiment_name={experiment}" if experiment != DEFAULT_EXPERIMENT else "")


def closing(run_name: str, run_id: str, experiment: str, out_dir: Path, tracking_uri: str, link: str | None,
            ui: str | None, best: tuple[str, float], next_steps: bool = True, model: Path | None = None,
            tested: bool = True) -> str:
    """Where the finished run is and, unless `next_steps` is off (a sweep's job: its sweep says it), the commands
    that show it in the UI, evaluate it again and predict with it (`model`: a cross-validation's fold ensemble,
    named; `tested` false: it has no test patients, its out-of-fold report is its result)."""
    lines = [f"Done: run {run_name} ({run_id}) in MLflow experiment {experiment}; best {best[0]} {best[1]:.4f} "
             "on validation",
             f"  outputs  {out_dir}",
             f"  MLflow   {tracking_uri}"]
    if next_steps:
        evaluate = evaluate_command(experiment) + (f" ckpt_path={model}" if model else "")
        show = f"{ui}   # then open {link}" if ui else f"open {link}" if link else None
        again = (f"  {evaluate}   # test the fold ensemble again" if model else
                 f"  {evaluate}   # test the best run of experiment {experiment} again (logged in {experiment}-eval)")
        lines += ["Next:", *([f"  {show}"] if show else []),
                  *([again] if tested else [f"  # no test patients: the out-of-fold report (in {out_dir / 'cv'}) is "
                                            "the result"]),
                  f"  {evaluate} 'predict=[path/to/patch.png]'   # P(IDC) of your own patches or folders"]
    return "\n".join(lines)
