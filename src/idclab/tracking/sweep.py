"""A multirun is one thing in MLflow: a parent run named after the sweep, every job its child.

`SweepParentRun` is a Hydra callback (registered in conf/train.yaml). At the start of a multirun it opens
the parent run and writes its id to `<sweep dir>/sweep_parent.json`; every job (in this process, in
joblib workers or on SLURM nodes sharing the sweep folder) reads that file and becomes a child. At the
end (or at exit, if the sweep stopped early) the parent gets the comparison of its children, the best
child chosen on validation, the answer in words (ranking, winner, whether the margin stands out from seed noise)
as its description, the counts of finished and failed children, and its final status. A study
(`idclab.tracking.study`) opens its parent through the same class after checking the study, and adds its verdict.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
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


def next_commands(config: DictConfig) -> str:
    """Where to look next: the MLflow UI on the sweep's store and `idclab-compare` on its experiment."""
    uri, experiment = config.logger.tracking_uri, config.logger.experiment_name
    ui = (f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1" if uri.startswith("sqlite:")
          else f"open {uri} in a browser")
    return f"Next:\n  {ui}   (experiment {experiment})\n  idclab-compare --experiment {experiment}"


def is_study(config: DictConfig) -> bool:
    """Whether the multirun is a declared study (`study=NAME`), whose sweeper opens the parent run itself."""
    return OmegaConf.select(config, "study.name", default=None) is not None


def summary_failed(run: TrackedRun, error: Exception) -> None:
    """A part of the sweep's summary failed: warn and tag the parent (the rest goes on)."""
    log.warning("could not summarise the sweep: %s", error)
    run.set_tags({"summary_error": str(error)[:5000]})


class SweepParentRun(Callback):
    """Opens the sweep's parent MLflow run and closes it with the sweep's summary; `summaries` (functions of the
    parent run returning text to print) add to that summary (a study's verdict)."""

    def __init__(self, monitor: str = "best_val_auprc", mode: str = "max") -> None:
        self.monitor = monitor
        self.mode = mode
        self.run: TrackedRun | None = None
        self.summaries: list[Callable[[TrackedRun], str]] = []
        self.next = ""  # the commands to look at the sweep's result with
        self.failed_jobs = 0  # jobs Hydra ran in this process that raised (some before opening their run)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # Hydra sets it per job only; `${hydra:...}` resolves through it
        if is_study(config):  # the study sweeper checks the study before it opens (or reopens) the parent
            return
        params = {"sweep.overrides": " ".join(config.hydra.overrides.task),
                  "sweep.launcher": config.hydra.launcher._target_.rsplit(".", 1)[-1],
                  "sweep.sweeper": config.hydra.sweeper._target_.rsplit(".", 1)[-1]}
        self.start(config, sweep_name(config), {}, params)

    def start(self, config: DictConfig, name: str, tags: dict[str, str], params: dict[str, str],
              reopen: str | None = None) -> TrackedRun:
        """Open the parent run (or with `reopen`, continue that run: its params stay as first logged) and record
        its id in the sweep folder for the jobs."""
        sweep_dir = Path(config.hydra.sweep.dir)
        client, experiment_id = connect(config.logger.tracking_uri, config.logger.experiment_name,
                                        config.logger.artifact_location)
        tags = {KIND_TAG: "sweep", "sweep": str(sweep_dir.resolve()), "overrides": name.removeprefix("sweep ")} | tags
        self.run = run = TrackedRun(client, experiment_id, name, tags, resume_run_id=reopen,
                                    system_metrics=None).__enter__()
        try:  # the parent is RUNNING from here: a failure before the jobs start ends it FAILED
            if reopen is None:
                run.log_params(params)
                sweep_params = config.hydra.sweeper.get("params")
                if sweep_params:
                    run.log_json(OmegaConf.to_container(sweep_params), "sweep/params.json")
            write_json(sweep_dir / PARENT_FILE, {"run_id": run.run_id})
        except BaseException:
            self.run = None
            run.__exit__(*sys.exc_info())
            raise
        atexit.register(self.finish, ended=False)
        self.next = next_commands(config)
        print(f"Sweep parent MLflow run {run.run_id} ({name}){' reopened' if reopen else ''}")
        return run

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.FAILED:
            self.failed_jobs += 1

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.finish(ended=True)

    def finish(self, ended: bool, failed: bool | None = None) -> None:
        """Log the summary and close the parent: FAILED if a child failed (or `failed`, when the caller knows which
        children count), FINISHED if the sweep ended, KILLED if it stopped before its end."""
        if self.run is None:
            return
        run, self.run = self.run, None
        counts: dict[str, int] | None = None
        printed = []
        try:  # the summary must never leave the parent RUNNING
            counts = self._count_children(run)
        except Exception as error:
            summary_failed(run, error)
        compare = [self._log_comparison] if counts is None or counts.get("FINISHED") else []  # nothing to compare
        for summary in (*compare, *self.summaries):
            try:
                printed.append(summary(run))
            except Exception as error:
                summary_failed(run, error)
        if counts is None:  # the children could not be read: FINISHED would claim what is not known
            counts, status = {}, "FAILED"
        else:
            failed = bool(counts.get("FAILED") or self.failed_jobs) if failed is None else failed
            status = "FAILED" if failed else "FINISHED" if ended else "KILLED"
        run.close(status)
        if printed:  # a study's verdict, else the sweep's ranking and noise verdict
            print(printed[-1])
        stopped = f"; {self.failed_jobs} job(s) stopped by an error" if self.failed_jobs else ""
        print(f"Sweep {run.run_name.removeprefix('sweep ')}: {children_line(counts)}{stopped}; parent run "
              f"{run.run_id} {status}")
        print(self.next)

    @staticmethod
    def _count_children(run: TrackedRun) -> dict[str, int]:
        """The children's counts by status, logged as the parent's metrics."""
        children = sweep_children(run.client, run.experiment_id, run.run_id)
        counts = children["status"].value_counts().to_dict() if len(children) else {}
        run.log_metrics({f"children_{status.lower()}": float(n) for status, n in counts.items()}
                        | {"children": float(len(children))})
        return counts

    def _log_comparison(self, run: TrackedRun) -> str:
        """The comparison of the finished children as the parent's artifacts, best-child tags and description;
        returns the answer in words (ranking, winner, noise)."""
        from idclab.tracking.compare import answer, markdown, summarise_sweep

        table, figure, best = summarise_sweep(run.client, run.experiment_id, run.run_id, self.monitor, self.mode)
        run.log_text(markdown(table), "comparison/comparison.md")
        run.log_text(table.to_csv(index=False), "comparison/comparison.csv")
        run.log_figure(figure, "comparison/comparison.png")
        words = answer(table)
        run.describe(words)
        if best is not None:  # None: every finished child was trained on split=patches
            run.set_tags({"best_child_run_id": best.run_id, "best_child_run_name": best.run_name})
            run.log_metrics({self.monitor: best.score})
        return words


def children_line(counts: dict[str, int]) -> str:
    """The jobs by status in words: finished and failed always, any other status (an earlier attempt KILLED) too."""
    others = [f"{n} {status.lower()}" for status, n in sorted(counts.items()) if status not in ("FINISHED", "FAILED")]
    return ", ".join([f"{counts.get('FINISHED', 0)} finished", f"{counts.get('FAILED', 0)} failed", *others]
                     ) + f" of {sum(counts.values())}"
