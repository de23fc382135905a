"""A multirun is one thing in MLflow: a parent run named after the sweep, every job its child.

`SweepParentRun` is a Hydra callback (registered in conf/train.yaml). At the start of a multirun it opens
the parent run and writes its id to `<sweep dir>/sweep_parent.json`; every job (in this process, in
joblib workers or on SLURM nodes sharing the sweep folder) reads that file and becomes a child. At the
end (or at exit, if the sweep stopped early) the parent gets the comparison of its children, the best
child chosen on validation, the counts of finished and failed children, and its final status.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from idclab.fileutil import write_json
from idclab.tracking.runs import KIND_TAG, TrackedRun, connect, sweep_children

log = logging.getLogger(__name__)
PARENT_FILE = "sweep_parent.json"


def read_parent(sweep_dir: str | Path | None) -> str | None:
    """The parent run id recorded in a sweep folder, if any."""
    path = Path(sweep_dir) / PARENT_FILE if sweep_dir else None
    if path is None or not path.is_file():
        return None
    return str(json.loads(path.read_text())["run_id"])


def sweep_name(config: DictConfig) -> str:
    """`sweep loss=focal,weighted`: the swept overrides of the command line and the sweeper's own params (the
    fixed overrides are in the parent's params)."""
    overrides = list(config.hydra.overrides.task)
    swept = [o for o in overrides if any(mark in o.partition("=")[2] for mark in (",", "range(", "choice(", "glob("))]
    params = config.hydra.sweeper.get("params") or {}
    swept += [f"{key}={value}" for key, value in params.items() if not any(o.startswith(f"{key}=") for o in overrides)]
    return "sweep " + (" ".join(swept) or "(defaults)")


class SweepParentRun(Callback):
    """Opens the sweep's parent MLflow run and closes it with the sweep's summary."""

    def __init__(self, monitor: str = "best_val_auprc", mode: str = "max") -> None:
        self.monitor = monitor
        self.mode = mode
        self.run: TrackedRun | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # Hydra sets it per job only; `${hydra:...}` resolves through it
        sweep_dir = Path(config.hydra.sweep.dir)
        client, experiment_id = connect(config.logger.tracking_uri, config.logger.experiment_name,
                                        config.logger.artifact_location)
        name = sweep_name(config)
        tags = {KIND_TAG: "sweep", "sweep": str(sweep_dir.resolve()), "overrides": name.removeprefix("sweep ")}
        self.run = run = TrackedRun(client, experiment_id, name, tags, system_metrics=None).__enter__()
        try:  # the parent is RUNNING from here: a failure before the jobs start ends it FAILED
            run.log_params({"sweep.overrides": " ".join(config.hydra.overrides.task),
                            "sweep.launcher": config.hydra.launcher._target_.rsplit(".", 1)[-1],
                            "sweep.sweeper": config.hydra.sweeper._target_.rsplit(".", 1)[-1]})
            params = config.hydra.sweeper.get("params")
            if params:
                run.log_json(OmegaConf.to_container(params), "sweep/params.json")
            write_json(sweep_dir / PARENT_FILE, {"run_id": run.run_id})
        except BaseException:
            self.run = None
            run.__exit__(*sys.exc_info())
            raise
        atexit.register(self.finish, ended=False)
        print(f"Sweep parent MLflow run {run.run_id} ({name})")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.finish(ended=True)

    def finish(self, ended: bool) -> None:
        """Log the summary and close the parent: FINISHED if every child finished, FAILED if one failed,
        KILLED if the sweep stopped before its end without a failed child."""
        if self.run is None:
            return
        run, self.run = self.run, None
        counts: dict[str, int] | None = None
        try:  # the summary must never leave the parent RUNNING
            children = sweep_children(run.client, run.experiment_id, run.run_id)
            counts = children["status"].value_counts().to_dict() if len(children) else {}
            run.log_metrics({f"children_{status.lower()}": float(n) for status, n in counts.items()}
                            | {"children": float(len(children))})
            self._log_comparison(run)
        except Exception as error:
            log.warning("could not summarise the sweep: %s", error)
            run.set_tags({"summary_error": str(error)[:5000]})
        if counts is None:  # the children could not be read: FINISHED would claim what is not known
            counts, status = {}, "FAILED"
        else:
            status = "FAILED" if counts.get("FAILED") else "FINISHED" if ended else "KILLED"
        run.close(status)
        print(f"Sweep {run.run_name}: {counts.get('FINISHED', 0)} finished, {counts.get('FAILED', 0)} failed "
              f"of {sum(counts.values())}; parent run {run.run_id} {status}")

    def _log_comparison(self, run: TrackedRun) -> None:
        from idclab.tracking.compare import markdown, summarise_sweep

        table, figure, best = summarise_sweep(run.client, run.experiment_id, run.run_id, self.monitor, self.mode)
        run.log_text(markdown(table), "comparison/comparison.md")
        run.log_text(table.to_csv(index=False), "comparison/comparison.csv")
        run.log_figure(figure, "comparison/comparison.png")
        run.set_tags({"best_child_run_id": best.run_id, "best_child_run_name": best.run_name})
        run.log_metrics({self.monitor: best.score})
