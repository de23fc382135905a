"""`python train.py -m study=NAME`: a study declared in `conf/study/NAME.yaml`, run by Hydra, decided in MLflow.

A study names its strategies (sets of overrides), seeds, folds, the baseline, a validation metric and the rule,
all fixed before any run. `StudySweeper`, the Hydra sweeper a study selects (`conf/hydra/sweeper/study.yaml`),
checks the study (every strategy's job config composed and validated: one line naming the key, exit 2, before any
run), opens the sweep's parent run or, when the study's folder already names one, reopens it (a changed rule is
refused), skips the (strategy, seed) pairs already FINISHED under it, launches the rest through the configured
Hydra launcher, and logs the verdict (`idclab.scoring.verdict`) on the parent: `study/verdict.csv`,
`study/verdict.md`, the run's description and a `study.verdict.<strategy>` tag each.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from idclab.config.messages import one_line
from idclab.config.registry import OptionError
from idclab.config.validation import ConfigError, is_int, is_validation_metric, job_view, validate_train_config
from idclab.data.layout import DataLayoutError
from idclab.scoring.verdict import CROSS_VALIDATED, SCORES, Rule, verdict_markdown, verdict_table
from idclab.tracking.compare import VERDICT_FILE
from idclab.tracking.inputs import STRATEGY_TAG, STUDY_TAG, VAL_PREDICTIONS
from idclab.tracking.runs import NOTE_TAG, TrackedRun, connect, training_runs
from idclab.tracking.sweep import PARENT_FILE, SweepParentRun, read_parent

PREDICTIONS = {metric: "cv/val_predictions.csv" if metric in CROSS_VALIDATED else VAL_PREDICTIONS for metric in SCORES}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # strategy and study names: folder names and override values
SET_PER_JOB = {"seed": "study.seeds", "cv.folds": "study.folds", "study.strategy": "study.strategy"}
CHANGEABLE = ("study", "study.only")  # command-line keys a rerun may change: the study's choice and its subset
__all__ = ["STRATEGY_TAG", "STUDY_TAG", "VERDICT_FILE", "Study", "StudyError", "StudySweeper", "read_study"]


class StudyError(ValueError):
    """A study that cannot run or continue: `study.<key>: problem`."""


@dataclass(frozen=True)
class Study:
    """A study as declared: strategies (name -> overrides), seeds, folds, the overrides every job gets, the
    baseline, the decision metric and the rule; `only` restricts what runs now (the verdict uses every run)."""

    name: str
    baseline: str
    strategies: dict[str, list[str]]
    seeds: list[int]
    folds: int | None
    common: list[str]
    metric: str
    rule: Rule
    only: list[str] | None = None

    def overrides(self, arguments: Sequence[str], strategy: str, seed: int) -> list[str]:
        """One job's overrides: the command line's, the study's common ones, the strategy's, then its name, seed
        and folds."""
        folds = "null" if self.folds is None else str(self.folds)
        return [*arguments, *self.common, *self.strategies[strategy], f"study.strategy={strategy}", f"seed={seed}",
                f"cv.folds={folds}"]

    def jobs(self) -> list[tuple[str, int]]:
        """The (strategy, seed) pairs to run now: every strategy (or those in `only`) times every seed."""
        return [(strategy, seed) for strategy in self.strategies if not self.only or strategy in self.only
                for seed in self.seeds]

    def fixed(self, arguments: Sequence[str]) -> dict[str, str]:
        """What may not change once the study has runs, as the parent run's params."""
        kept = [a for a in arguments if override_key(a) not in CHANGEABLE]
        return {"study.name": self.name, "study.baseline": self.baseline, "study.metric": self.metric,
                "study.rule.margin": str(self.rule.margin), "study.rule.confidence": str(self.rule.confidence),
                "study.rule.resamples": str(self.rule.resamples),
                "study.strategies": json.dumps(self.strategies, sort_keys=True), "study.seeds": json.dumps(self.seeds),
                "study.folds": str(self.folds), "study.common": json.dumps(self.common),
                "study.arguments": " ".join(kept)}


def override_key(override: str) -> str:
    """`loss` of `loss=focal`, `trainer.max_epochs` of `+trainer.max_epochs=2`."""
    return override.split("=", 1)[0].lstrip("+~")


def require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise StudyError(f"study.{key}: {problem}")


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def read_study(config: DictConfig) -> Study:
    """The study of a composed config (`study=NAME`), every key checked: StudyError naming the first bad one."""
    declared = OmegaConf.select(config, "study")
    if not isinstance(declared, DictConfig):
        raise StudyError("study: the study sweeper runs a declared study: python train.py -m study=NAME (conf/study/)")
    node = OmegaConf.to_container(declared, resolve=True)
    name, strategies, baseline = node.get("name"), node.get("strategies"), node.get("baseline")
    require(isinstance(name, str) and NAME.fullmatch(name) is not None, "name",
            f"must be letters, digits, '_', '.', '-' (it names the study's folder), got {name!r}")
    require(isinstance(strategies, dict) and len(strategies) >= 2, "strategies",
            "must map at least two strategy names (the baseline and one to compare) to lists of overrides")
    for strategy, overrides in strategies.items():
        require(isinstance(strategy, str) and NAME.fullmatch(strategy) is not None, "strategies",
                f"strategy names must be letters, digits, '_', '.', '-' (they name job folders), got {strategy!r}")
        require(_is_strings(overrides), f"strategies.{strategy}",
                f"must be a list of overrides (e.g. [loss=focal]), got {overrides!r}")
    require(baseline in strategies, "baseline", f"{baseline!r} is not one of the strategies ({', '.join(strategies)})")
    seeds, folds = node.get("seeds"), node.get("folds")
    require(isinstance(seeds, list) and bool(seeds) and all(is_int(s) for s in seeds)
            and len(set(seeds)) == len(seeds), "seeds", f"must be a list of distinct integers, got {seeds!r}")
    require(folds is None or (is_int(folds) and folds >= 2), "folds",
            f"must be null (one split) or an integer >= 2 (patient-grouped folds), got {folds!r}")
    common = node.get("common") or []
    require(_is_strings(common), "common", f"must be a list of overrides, got {common!r}")
    metric = node.get("metric")
    require(is_validation_metric(metric), "metric",
            f"{metric!r} is not a validation metric: a study decides on validation patients only")
    require(metric in SCORES, "metric", f"{metric} cannot be recomputed from the runs' validation predictions, so no "
            f"patient-bootstrap interval (best_val_* is a maximum over epochs); use one of {', '.join(SCORES)}")
    if folds is None:
        require(metric not in CROSS_VALIDATED, "metric", f"{metric} needs cross-validation (study.folds); with one "
                "split use val_model_auroc or val_model_auprc")
    else:
        require(metric in CROSS_VALIDATED, "metric", f"{metric} is measured on one split; with study.folds use "
                "cv_val_pooled_auroc or cv_val_pooled_auprc")
    rule = node.get("rule") or {}
    require(isinstance(rule, dict) and set(rule) <= {"margin", "confidence", "resamples"}, "rule",
            f"holds margin, confidence and resamples only, got {rule!r}")
    margin, confidence, resamples = rule.get("margin", 0.0), rule.get("confidence", 0.95), rule.get("resamples", 1000)
    require(isinstance(margin, (int, float)) and not isinstance(margin, bool) and margin >= 0, "rule.margin",
            f"must be a number >= 0, got {margin!r}")
    require(isinstance(confidence, float) and 0 < confidence < 1, "rule.confidence",
            f"must be a number between 0 and 1, got {confidence!r}")
    require(is_int(resamples) and resamples >= 100, "rule.resamples", f"must be an integer >= 100, got {resamples!r}")
    only = node.get("only")
    require(only is None or (_is_strings(only) and bool(only) and set(only) <= set(strategies)), "only",
            f"must be null or a list of the strategies ({', '.join(strategies)}), got {only!r}")
    require(node.get("strategy") is None, "strategy", "is set per job by the study sweeper: leave it null")
    return Study(name, baseline, strategies, seeds, folds, common, metric, Rule(float(margin), confidence, resamples),
                 only)


def check_arguments(study: Study, arguments: Sequence[str]) -> None:
    """The command line and the study's overrides parse, the command line sweeps nothing and sets no key the
    study sets (its seeds, folds, common or strategy overrides): StudyError naming the study's key."""
    parser = OverridesParser.create()
    owners = dict(SET_PER_JOB)
    for owner, overrides in [("common", study.common), *((f"strategies.{s}", o) for s, o in study.strategies.items())]:
        try:
            parsed = parser.parse_overrides(list(overrides))
        except HydraException as error:
            raise StudyError(f"study.{owner}: {one_line(error)}") from error
        for key in (o.key_or_group.lstrip("+~") for o in parsed):
            if key in SET_PER_JOB:
                raise StudyError(f"study.{owner}: {key} is set per job by the study ({SET_PER_JOB[key]})")
            owners[key] = f"study.{owner}"
    for override in parser.parse_overrides(list(arguments)):
        key = override.key_or_group.lstrip("+~")
        if override.is_sweep_override():
            raise StudyError(f"study.strategies: the command line sweeps {key}; a study's jobs are its strategies x "
                             "seeds: declare the options as strategies")
        if key in owners:
            raise StudyError(f"{owners[key]}: {key} is set by the study, not on the command line (change the study "
                             "file, under a new study name once it has runs)")


def job_config(config: DictConfig) -> dict[str, Any]:
    """A job's config without what differs between any two jobs by construction (the strategy's name, the seed):
    two strategies giving the same are the same strategy."""
    plain = OmegaConf.to_container(config, resolve=False)
    plain.pop("seed", None)
    plain.get("study", {}).pop("strategy", None)
    return plain


def finished_runs(client: Any, experiment_id: str, parent_run_id: str, study: Study) -> dict[tuple[str, int], str]:
    """The newest FINISHED training run of each (strategy, seed) of the study under its parent run."""
    runs = training_runs(client, experiment_id, parent_run_id)
    found: dict[tuple[str, int], str] = {}
    if runs.empty or f"tags.{STRATEGY_TAG}" not in runs:
        return found
    for _, row in runs.iterrows():  # newest first
        strategy, seed = row[f"tags.{STRATEGY_TAG}"], pd.to_numeric(row.get("params.seed"), errors="coerce")
        if strategy in study.strategies and pd.notna(seed) and int(seed) in study.seeds:
            found.setdefault((strategy, int(seed)), str(row["run_id"]))
    return found


def check_unchanged(client: Any, run_id: str, fixed: dict[str, str]) -> None:
    """A reopened study keeps the rule it was started with: StudyError naming the first key that changed."""
    params = client.get_run(run_id).data.params
    for key, value in fixed.items():
        if key not in params:  # a parent logged before the key was part of the rule
            continue
        same = (sorted(params[key].split()) == sorted(value.split()) if key == "study.arguments"  # in any order
                else params[key] == value)
        if not same:
            raise StudyError(f"{key}: the rule is fixed once a study has runs (parent run {run_id}: {params[key]!r}, "
                             f"now {value!r}); give the changed study a new study.name")


def existing_parent(client: Any, sweep_dir: Path) -> str | None:
    """The parent run recorded in the study's folder, if it still exists in the store."""
    run_id = read_parent(sweep_dir)
    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # recorded by a store that is gone (another tracking URI, a fresh mlflow.db)
        return None
    return run_id if run.info.lifecycle_stage == "active" else None


def log_verdict(run: TrackedRun, study: Study) -> str:
    """Compute the verdict from the finished runs' validation predictions and log it on the parent run: artifacts
    `study/verdict.csv` and `.md`, the run's description and a tag per strategy; returns the markdown."""
    pairs = finished_runs(run.client, run.experiment_id, run.run_id, study)
    if mixed := mixed_data(training_runs(run.client, run.experiment_id, run.run_id), pairs):
        return log_mixed_data(run, study, mixed)
    predictions = {}
    with tempfile.TemporaryDirectory() as folder:
        for pair, run_id in pairs.items():
            local = Path(folder) / run_id
            local.mkdir()
            predictions[pair] = pd.read_csv(run.client.download_artifacts(run_id, PREDICTIONS[study.metric],
                                                                          str(local)))
    table = verdict_table(predictions, list(study.strategies), study.baseline, study.seeds, study.metric, study.rule)
    text = verdict_markdown(table, study.name, study.baseline, study.metric, study.rule)
    run.log_text(table.to_csv(index=False), "study/verdict.csv")
    run.log_text(text, VERDICT_FILE)
    run.set_tags({NOTE_TAG: text} | {f"study.verdict.{s}": v for s, v in zip(table["strategy"], table["verdict"],
                                                                               strict=True)})
    return text


def mixed_data(runs: pd.DataFrame, pairs: dict[tuple[str, int], str]) -> str:
    """Which of the study's runs (`pairs`, rows of `runs`) trained on which data (their `data.content` digests), if
    not all on one; else ""."""
    column = runs.get("params.data.content")
    contents = dict(zip(runs["run_id"], column, strict=True)) if column is not None else {}
    by_data: dict[str, list[str]] = {}
    for (strategy, seed), run_id in sorted(pairs.items()):
        content = contents.get(run_id)
        content = content[:12] if isinstance(content, str) else "unknown"
        by_data.setdefault(content, []).append(f"{strategy} seed {seed}")
    if len(by_data) < 2:
        return ""
    return "data.content " + "; ".join(f"{content} for {', '.join(jobs)}" for content, jobs in by_data.items())


def log_mixed_data(run: TrackedRun, study: Study, mixed: str) -> str:
    """Log on the parent run that the study has no verdict, its runs having trained on different data (`mixed`,
    from `mixed_data`); returns the text."""
    text = (f"# Study {study.name}\n\nNo verdict: the study's runs trained on different data ({mixed}): the data "
            "under data.root changed while the study ran; run it again on one data with a new study.name.\n")
    run.log_text(text, VERDICT_FILE)
    run.set_tags({NOTE_TAG: text} | {f"study.verdict.{s}": "no verdict (different data)"
                                     for s in study.strategies if s != study.baseline})
    return text


class StudySweeper(Sweeper):
    """Hydra's sweeper for a study (see the module docstring); jobs run through the configured launcher. It mirrors
    Hydra's basic sweeper rather than subclassing it: Hydra's plugin scan re-executes that module, so a subclass
    made before the scan would no longer be one of its class."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        HydraConfig.instance().set_config(self.config)  # `${hydra:...}` in the config resolves through it
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the verdict downloads predictions
        try:
            study = read_study(self.config)
            check_arguments(study, arguments)
            self.check_configs(study, arguments)
            parent = self.open_parent(study, arguments)
        except (StudyError, ConfigError, OptionError, DataLayoutError) as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        run = parent.run
        assert run is not None
        done = finished_runs(run.client, run.experiment_id, run.run_id, study)
        skipped = [pair for pair in study.jobs() if pair in done]
        if skipped:
            print(f"Study {study.name}: {len(skipped)} job(s) already finished, skipped: "
                  + ", ".join(f"{s} seed {seed}" for s, seed in skipped))
        batch = [study.overrides(arguments, s, seed) for s, seed in study.jobs() if (s, seed) not in done]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        print(f"Study {study.name}: {len(batch)} job(s) to run")
        try:
            results = self.launcher.launch(batch, initial_job_idx=0) if batch else []
        except BaseException:  # stopped (Ctrl-C, SIGTERM): KILLED, with the verdict of the runs finished so far
            parent.finish(ended=False)  # now, not at exit: MLflow cannot download once the interpreter shuts down
            raise
        parent.finish(ended=True, failed=any(r.status == JobStatus.FAILED for r in results))
        for result in results:
            _ = result.return_value  # a failed job's exception, as Hydra's basic sweeper raises it
        return [results]

    def check_configs(self, study: Study, arguments: Sequence[str]) -> None:
        """Compose and validate the job config of the command line alone, then with the study's common overrides,
        then of each strategy: an error names the key it comes from; a strategy composing to another's config is
        refused."""
        validate_train_config(job_view(self.config))  # the command line's own mistakes, as a single run reports them
        loader = self.hydra_context.config_loader
        seed, configs = study.seeds[0], {}
        plain = [*arguments, *study.common, f"study.strategy={study.baseline}", f"seed={seed}"]
        for key, overrides, strategy in [("study.common", plain, None),
                                         *((f"study.strategies.{s}", study.overrides(arguments, s, seed), s)
                                           for s in study.strategies)]:
            try:
                composed = job_view(loader.load_sweep_config(self.config, list(overrides)))
                validate_train_config(composed)
            except (HydraException, OmegaConfBaseException, ConfigError, OptionError, DataLayoutError) as error:
                raise StudyError(f"{key}: {one_line(error)}") from error
            if strategy is None:
                continue
            same = [other for other, seen in configs.items() if seen == job_config(composed)]
            if same:
                raise StudyError(f"{key}: composes to the same config as strategy {same[0]}: nothing to compare")
            configs[strategy] = job_config(composed)

    def open_parent(self, study: Study, arguments: Sequence[str]) -> SweepParentRun:
        """The study's parent run: reopened when the study's folder names one that exists (its rule must be
        unchanged), else new with the rule as params; it logs the verdict when it closes."""
        config = self.config
        client, _ = connect(config.logger.tracking_uri, config.logger.experiment_name, config.logger.artifact_location)
        fixed = study.fixed(arguments)
        sweep_dir = Path(config.hydra.sweep.dir)
        reopen = existing_parent(client, sweep_dir)
        if reopen:
            check_unchanged(client, reopen, fixed)
        elif (sweep_dir / PARENT_FILE).is_file():
            print(f"Study {study.name}: the parent run in {sweep_dir / PARENT_FILE} is not in this store; "
                  "starting a new one")
        parent = SweepParentRun(monitor=study.metric, mode="max")
        parent.start(config, f"study {study.name}", {STUDY_TAG: study.name, "overrides": " ".join(arguments)},
                     fixed, reopen=reopen)
        parent.summaries.append(lambda run: log_verdict(run, study))
        return parent
