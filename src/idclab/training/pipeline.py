"""`python train.py`: the conductor. Validate, prepare the data, fit, calibrate, test and report, log the model.

The conductor alone reads the whole config: the fit stage gets a `FitPlan` (and k folds a `FoldPlan`). Fitting is
one model, a seed ensemble (`ensemble.members`) or k patient-grouped folds (`cv.folds`); each split is fitted,
calibrated and tested by `idclab.training.fit.fit_and_test`.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from idclab.config.validation import check_saved_config, config_warnings, require_both_classes, validate_train_config
from idclab.data.datamodule import PreparedData, prepare_data
from idclab.data.split import SPLITS
from idclab.evaluation.reporting import check_heatmap_patients, headline, tested_patients
from idclab.tracking.inputs import hydra_context, log_inputs, run_tags, sweep_parent
from idclab.tracking.runs import (
    TrackedRun,
    connect,
    end_abandoned,
    experiment_of,
    run_link,
    run_status,
    ui_command,
)
from idclab.tracking.store import store_client
from idclab.training.briefing import closing, header
from idclab.training.crossval import cross_validate
from idclab.training.fit import fit_and_test, make_model_and_data
from idclab.training.plan import FitPlan, fit_plan, fold_plan
from idclab.training.resume import (
    OUTPUT_DIR_TAG,
    ResumePoint,
    check_resumed_data,
    find_resume_point,
    has_state,
    ignored_overrides,
    starting_weights,
    starts_more,
    write_state,
)
from idclab.training.trainer import is_worker_process, make_trainer
from idclab.verbosity import detail, set_verbose

if TYPE_CHECKING:  # only the tracking package talks to MLflow; this is a type name
    from mlflow.tracking import MlflowClient


def train(cfg: DictConfig) -> float:
    """Train, validate and test one configuration; returns the best validation score (for sweepers).

    A run whose output folder holds an unfinished run (or `resume=RUN_ID`) continues that MLflow run
    from its last checkpoint, with the config it started with.
    """
    set_verbose(bool(cfg.get("verbose", False)))
    cfg, client, experiment_id, resume = open_store(cfg)
    config = settled_config(cfg)
    weights = starting_weights(config, run_status(client, resume.run_id)[1] if resume else None)
    plan = fit_plan(config)
    data = prepare(cfg)
    check_heatmap_patients(cfg.report.heatmap_patients, *tested_patients(data.split.patients, bool(cfg.cv.folds)))
    if resume:
        check_resumed_data(resume, data.record()["data_fingerprint"])
    context = hydra_context()
    if cfg.cv.folds:
        return train_folds(plan, config, data, client, experiment_id, context, weights, resume)
    out_dir = resume.output_dir if resume else Path(cfg.paths.output_dir)
    ckpt_path = resume.checkpoint if resume else None
    if is_worker_process():  # a DDP worker process: it helps fit; rank 0 tracks, tests and reports
        return fit_as_worker(plan, data, out_dir, ckpt_path)
    run_name = ",".join(context["overrides"]) or "defaults"
    tags = run_tags(config, context, weights) | {OUTPUT_DIR_TAG: str(out_dir.resolve())}
    uri, experiment = client.tracking_uri, cfg.logger.experiment_name
    with TrackedRun(client, experiment_id, run_name, tags, resume.run_id if resume else None,
                    parent_run_id=sweep_parent(context), system_metrics=plan.system_metrics) as run:
        link = run_link(uri, experiment_id, run.run_id)
        print(header(context["overrides"], data.summary(), experiment, link), flush=True)
        write_state(out_dir, run.run_id, config, data.record()["data_fingerprint"])
        if resume is None:
            log_inputs(run, config, data, weights)
        result = fit_and_test(plan, data, run, out_dir, ckpt_path)
        best = (plan.monitor, result.best_score)
        run.describe(headline(result.metrics, best))
    print(closing(run_name, run.run_id, experiment, out_dir, uri, link, ui_command(uri), best,
                  next_steps=not context["sweep"]))
    return result.best_score


def open_store(cfg: DictConfig) -> tuple[DictConfig, MlflowClient, str, ResumePoint | None]:
    """Validate the request and open its MLflow store: the config to run (a resumed run's own), the client, the
    experiment the run goes to (a resumed run's own) and what it resumes from, if anything."""
    may_resume = bool(cfg.get("resume")) or has_state(Path(cfg.paths.output_dir))
    validate_train_config(cfg, start=not may_resume)  # a resumed run's checkpoint holds its weights
    if cfg.get("resume"):  # the run's store must exist; nothing is created in it
        client, experiment_id = store_client(cfg.logger.tracking_uri), None
    else:
        client, experiment_id = connect(cfg.logger.tracking_uri, cfg.logger.experiment_name,
                                        cfg.logger.artifact_location)
    abandon = None if is_worker_process() else partial(end_abandoned, client)  # a DDP worker: rank 0's run
    cfg, resume = resumed_config(cfg, find_resume_point(Path(cfg.paths.output_dir), cfg.get("resume"),
                                                        partial(run_status, client), abandon=abandon),
                                 start_checked=not may_resume)
    if resume:  # the run's own experiment, whatever the request names
        experiment_id = experiment_of(client, resume.run_id)
    return cfg, client, experiment_id, resume


def train_folds(plan: FitPlan, config: dict[str, Any], data: PreparedData, client: MlflowClient, experiment_id: str,
                context: dict[str, Any], weights: dict[str, str], resume: ResumePoint | None) -> float:
    """Cross-validate (`cross_validate`), then say where its parent run is and what to do next; the mean best
    validation score."""
    folds = fold_plan(config)
    done = cross_validate(plan, folds, data, client, experiment_id, context, weights, resume)
    uri = client.tracking_uri
    print(closing(done.run_name, done.run_id, config["logger"]["experiment_name"], folds.out_dir, uri,
                  run_link(uri, experiment_id, done.run_id), ui_command(uri), (f"mean {plan.monitor}", done.score),
                  next_steps=not context["sweep"], model=done.model, tested=len(data.split.rows["test"]) > 0))
    return done.score


def resumed_config(cfg: DictConfig, resume: ResumePoint | None, start_checked: bool = True
                   ) -> tuple[DictConfig, ResumePoint | None]:
    """The config to run: the requested one (its starting weights checked now unless `start_checked`), or a resumed
    run's own (checked like any config, its starting weights unread; what the request changed is ignored, with a
    warning)."""
    if resume is None:
        if not start_checked:  # a finished run's folder: this run starts afresh, from its starting weights
            validate_train_config(cfg)
        return cfg, None
    print(f"Resuming MLflow run {resume.run_id} from {resume.checkpoint}")
    ignored = ignored_overrides(plain_config(cfg), resume.config)
    if ignored:
        warnings.warn(f"resuming with the config the run started with; ignored: {', '.join(ignored)}", stacklevel=1)
    check_saved_config(resume.config)  # a run state is data: plain values, then the same checks
    cfg = OmegaConf.create(resume.config)
    validate_train_config(cfg, start=starts_more(resume.config))  # else its checkpoint holds every weight it needs
    return cfg, resume


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved run config as plain values, without the console's `verbose` (not a setting of the run)."""
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    config.pop("verbose", None)
    return config


def settled_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain values (printed with verbose=true), with its warnings; every random generator
    seeded."""
    config = plain_config(cfg)
    detail(OmegaConf.to_yaml(config))
    for warning in config_warnings(cfg):
        warnings.warn(warning, stacklevel=1)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return config


def prepare(cfg: DictConfig) -> PreparedData:
    """The data: scanned, decoded into the cache and split by patient; both classes in every split needed."""
    data = prepare_data(cfg.data, cfg.split, required=("train", "val") if cfg.cv.folds else SPLITS)
    summary = data.summary()
    detail(f"Data: {summary['patches']} patches {summary['class_counts']}, split {summary['split_counts']}, "
           f"decode {summary['decode_status']}, skipped files {summary['skipped_files'] or 'none'}")
    require_both_classes(summary["split_counts"])
    return data


def fit_as_worker(plan: FitPlan, data: PreparedData, out_dir: Path, ckpt_path: Path | None) -> float:
    """A DDP worker's part: it helps fit; rank 0 tracks, calibrates, tests and reports."""
    datamodule, classifier = make_model_and_data(plan, data, start=ckpt_path is None)
    trainer, _ = make_trainer(plan, out_dir, logger=False)
    trainer.fit(classifier, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return float("nan")
