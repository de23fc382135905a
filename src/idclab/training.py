"""`python train.py`: one training run, tracked in MLflow from data facts to test report."""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from idclab import registry
from idclab.build import build_classifier, load_classifier, store_threshold
from idclab.callbacks import CtrlCGuard, training_callbacks
from idclab.context import neighbour_matrix, smooth, tune_weight
from idclab.data.datamodule import PatchDataModule, PreparedData, channel_stats, prepare_data
from idclab.data.neighbourhood import views_of
from idclab.data.sampling import deferred
from idclab.data.split import SPLITS
from idclab.ensemble import ENSEMBLE_FILE, EnsembleClassifier, save_ensemble
from idclab.fileutil import write_json
from idclab.module import IDCClassifier
from idclab.progress import EpochLine
from idclab.reporting import report_options, test_and_report
from idclab.resume import (
    LAST_CHECKPOINT,
    OUTPUT_DIR_TAG,
    LastCheckpoint,
    find_resume_point,
    write_state,
    written_since_start,
)
from idclab.stain import fit_stain
from idclab.sweep import read_parent
from idclab.thresholds import rule_of, tune_threshold
from idclab.tracking import (
    CHECKPOINT_TAG,
    KIND_TAG,
    TrackedRun,
    connect,
    environment,
    flatten,
    git_state,
    log_model,
    run_status,
)
from idclab.validation import check_saved_config, config_warnings, require_both_classes, validate_train_config

log = logging.getLogger(__name__)
MEMBER_FILE = "member.json"  # in a seed ensemble member's folder once it is trained: a resumed run keeps it


def hydra_context() -> dict[str, Any]:
    """The command-line overrides and, in a multirun, the sweep folder (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {"overrides": [], "sweep": None}
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return {"overrides": list(hydra_cfg.overrides.task), "sweep": hydra_cfg.sweep.dir if multirun else None}


def run_tags(config: dict[str, Any], context: dict[str, Any]) -> dict[str, str]:
    """Tags that let the MLflow UI filter and group runs: kind, overrides, sweep, git state."""
    tags = {KIND_TAG: "train", "overrides": " ".join(context["overrides"]) or "(defaults)",
            "data_source": config["data"]["source"], **registry.option_names(config)}
    for override in context["overrides"]:
        key, _, value = override.partition("=")
        tags[f"override.{key.lstrip('+~')}"] = value
    if context["sweep"]:
        tags["sweep"] = context["sweep"]
    tags.update(git_state(Path(__file__).parent))  # the commit of the code that ran
    return tags


def sweep_parent(context: dict[str, Any]) -> str | None:
    """The MLflow parent run of the multirun this job belongs to (None outside a sweep)."""
    return read_parent(context["sweep"])


def choose_threshold(trainer: pl.Trainer, classifier: IDCClassifier, datamodule: PatchDataModule,
                     best_path: str | None, threshold_cfg: DictConfig, context_cfg: DictConfig | None = None
                     ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Load the best weights, predict the validation split and set the operating threshold it gives;
    returns the threshold with the validation rows, the probabilities it was tuned on and the patches' own
    probabilities (the same without context).

    With `context=neighbours`, the context weight (`context_cfg.weight`, or tuned when null) blends each
    validation patch with its neighbours first, and the threshold is tuned on those blended probabilities;
    the threshold tuned without context is kept for patches scored alone.
    """
    batches = trainer.predict(classifier, dataloaders=datamodule.val_dataloader(), ckpt_path=best_path,
                              weights_only=True)
    probs, rows = (torch.cat(parts).numpy() for parts in zip(*batches, strict=True))
    patch_probs = probs
    targets = datamodule.data.index.labels[rows]  # matched to each prediction by its row, not its position
    method, options = rule_of(threshold_cfg)
    patch_threshold = tune_threshold(targets, probs, method, **options)
    if context_cfg is not None and context_cfg.name != "none":
        index = datamodule.data.index
        neighbours = neighbour_matrix(index.patients[rows], index.xs[rows], index.ys[rows], context_cfg.radius)
        weight = tune_weight(targets, probs, neighbours) if context_cfg.weight is None else float(context_cfg.weight)
        probs = smooth(probs, neighbours, weight)
        classifier.set_context(weight, context_cfg.radius, patch_threshold)
        chosen = "tuned on validation" if context_cfg.weight is None else "set"
        print(f"Spatial context: neighbours within {context_cfg.radius} patch(es), weight {weight:.2f} ({chosen}); "
              f"threshold without context {patch_threshold:.4f}")
    threshold = tune_threshold(targets, probs, method, **options)
    classifier.set_threshold(threshold)
    print(f"Operating threshold ({threshold_cfg.name} on validation): {threshold:.4f}")
    return threshold, rows, probs, patch_probs


def is_worker_process() -> bool:
    """Whether this process is a DDP worker rather than global rank 0: a local rank other than 0 (set by Lightning,
    torchrun or SLURM), or any process of a node other than the first (`NODE_RANK`/`GROUP_RANK`, which a node
    started by hand sets before Lightning has ranked its processes)."""
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    return rank_zero_only.rank != 0 or node != 0


def train(cfg: DictConfig) -> float:
    """Train, validate and test one configuration; returns the best validation score (for sweepers).

    A run whose output folder holds an unfinished run (or `resume=RUN_ID`) continues that MLflow run
    from its last checkpoint, with the config it started with.
    """
    validate_train_config(cfg)
    client, experiment_id = connect(cfg.logger.tracking_uri, cfg.logger.experiment_name,
                                    cfg.logger.artifact_location)
    resume = find_resume_point(Path(cfg.paths.output_dir), cfg.get("resume"),
                               lambda run_id: run_status(client, run_id))
    if resume is not None:
        print(f"Resuming MLflow run {resume.run_id} from {resume.checkpoint}")
        ignored = ignored_overrides(OmegaConf.to_container(cfg, resolve=True), resume.config)
        if ignored:
            warnings.warn(f"resuming with the config the run started with; ignored: {', '.join(ignored)}",
                          stacklevel=1)
        check_saved_config(resume.config)  # a run state is data: plain values, then the same checks
        cfg = OmegaConf.create(resume.config)
        validate_train_config(cfg)
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    print(OmegaConf.to_yaml(config))
    for warning in config_warnings(cfg):
        warnings.warn(warning, stacklevel=1)
    pl.seed_everything(cfg.seed, workers=True)
    data = prepare_data(cfg.data, cfg.split, required=("train", "val") if cfg.cv.folds else SPLITS)
    summary = data.summary()
    print(f"Data: {summary['patches']} patches {summary['class_counts']}, split {summary['split_counts']}, "
          f"decode {summary['decode_status']}, skipped files {summary['skipped_files'] or 'none'}")
    require_both_classes(summary["split_counts"])
    context = hydra_context()
    if cfg.cv.folds:
        from idclab.crossval import cross_validate

        return cross_validate(cfg, config, data, client, experiment_id, context)
    out_dir = resume.output_dir if resume else Path(cfg.paths.output_dir)
    ckpt_path = resume.checkpoint if resume else None
    if is_worker_process():  # a DDP worker process: it helps fit; rank 0 tracks, tests and reports
        datamodule, classifier = make_model_and_data(cfg, config, data)
        trainer, _ = make_trainer(cfg, out_dir, logger=False)
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        return float("nan")
    run_name = ",".join(context["overrides"]) or "defaults"
    tags = run_tags(config, context) | {OUTPUT_DIR_TAG: str(out_dir.resolve())}
    with TrackedRun(client, experiment_id, run_name, tags, resume.run_id if resume else None,
                    parent_run_id=sweep_parent(context), system_metrics=cfg.logger.system_metrics_interval) as run:
        write_state(out_dir, run.run_id, config)
        if resume is None:
            log_inputs(run, config, data)
        result = fit_and_test(cfg, config, data, run, out_dir, ckpt_path)
        print(f"MLflow run {run.run_id} ({run_name}) finished; outputs in {out_dir}")
    return result.best_score


@dataclass
class FitResult:
    """What one fit-and-test gives: the selection score, best checkpoint, threshold, the validation predictions
    it was tuned on and the test predictions (rows of the data index with P(IDC))."""

    best_score: float
    best_path: str | None
    threshold: float
    val_rows: np.ndarray
    val_probs: np.ndarray
    val_patch_probs: np.ndarray  # the validation patches' own P(IDC), before spatial context
    test_rows: np.ndarray
    test_probs: np.ndarray
    metrics: dict[str, Any]
    context: dict[str, Any]  # the tuned spatial context (see `context_record`), empty without
    test_patch_probs: np.ndarray  # the test patches' own P(IDC), before spatial context


def make_model_and_data(cfg: DictConfig, config: dict[str, Any], data: PreparedData, seed: int | None = None
                        ) -> tuple[PatchDataModule, IDCClassifier]:
    """The DataModule (augmentation and sampler from the registry) and a fresh classifier for `data`; `seed`
    (default `cfg.seed`) seeds the data order, the channel statistics and the stain fit."""
    seed = cfg.seed if seed is None else seed
    augmentation = registry.build("augment", config["augment"])
    sampler_factory = deferred(registry.factory("sampler", config["sampler"]), OmegaConf.select(cfg, "drw.start_epoch"))
    datamodule = PatchDataModule(data, cfg.data.batch_size, cfg.data.num_workers, augmentation, sampler_factory, seed,
                                 views_of(config))
    mean, std = channel_stats(data.cache.images, data.split.rows["train"], seed)
    classifier = build_classifier(config, datamodule.train_class_counts(), mean, std, **data.record())
    fit_stain(classifier.stain, data.cache.images, data.split.rows["train"], seed)
    return datamodule, classifier


@dataclass
class Fitted:
    """A trained model (one classifier, or a seed ensemble of them) ready for its threshold and test."""

    datamodule: PatchDataModule
    classifier: IDCClassifier
    trainer: pl.Trainer
    best_path: str | None  # the best epoch's checkpoint (None for an ensemble: its members' are in `members`)
    best_score: float
    members: list[str] | None = None


def fit_member(cfg: DictConfig, config: dict[str, Any], data: PreparedData, run: TrackedRun, out_dir: Path,
               ckpt_path: Path | None = None, seed: int | None = None, prefix: str = "") -> Fitted:
    """Fit one classifier on train, keeping its best epoch on val (metrics logged to `run` after `prefix`)."""
    datamodule, classifier = make_model_and_data(cfg, config, data, seed)
    trainer, checkpoint = make_trainer(cfg, out_dir, logger=run.lightning_logger(prefix))
    trainer.fit(classifier, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    trainer = single_process(trainer, cfg, run, out_dir)
    score = checkpoint.best_model_score
    best_score = float(score) if score is not None else float("nan")
    if not checkpoint.best_model_path:
        log.warning("no checkpoint was saved (fast_dev_run?): testing the last weights")
    return Fitted(datamodule, classifier, trainer, checkpoint.best_model_path or None, best_score)


def fit_and_test(cfg: DictConfig, config: dict[str, Any], data: PreparedData, run: TrackedRun, out_dir: Path,
                 ckpt_path: Path | None = None, log_fold_model: bool = True) -> FitResult:
    """Fit on train (selecting the epoch on val; `ensemble.members` > 1: a seed ensemble), tune the threshold on
    val, test, report and log to `run`."""
    members = OmegaConf.select(cfg, "ensemble.members", default=1)
    fitted = (fit_seed_ensemble(cfg, config, data, run, out_dir, members, resuming=ckpt_path is not None)
              if members > 1 else fit_member(cfg, config, data, run, out_dir, ckpt_path))
    classifier, trainer, best_path = fitted.classifier, fitted.trainer, fitted.best_path
    threshold, val_rows, val_probs, val_patch_probs = choose_threshold(trainer, classifier, fitted.datamodule,
                                                                       best_path, cfg.threshold, context_config(cfg))
    run.log_metrics({"threshold": threshold} | context_metrics(classifier, context_config(cfg)))
    if fitted.members:
        ensemble_path = out_dir / "checkpoints" / ENSEMBLE_FILE
        best_path = str(save_ensemble([Path(p) for p in fitted.members], threshold, ensemble_path, data.record(),
                                      context_record(classifier)))
    elif best_path:
        store_threshold(best_path, threshold, cfg.threshold.name, **context_record(classifier))
    if best_path:
        run.set_tags({CHECKPOINT_TAG: str(Path(best_path).resolve())})
        run.log_metrics({f"best_{cfg.checkpoint.monitor}": fitted.best_score})
        if cfg.logger.log_checkpoint:
            run.log_file(best_path, "checkpoints")
    metrics = test_and_report(trainer, classifier, fitted.datamodule, out_dir / "test", run,
                              **report_options(cfg.report))
    if best_path and cfg.logger.log_model and log_fold_model:
        print(f"Logged MLflow model {log_model(run, best_path)}")
    return FitResult(fitted.best_score, best_path, threshold, val_rows, val_probs, val_patch_probs,
                     classifier.test_rows.numpy(), classifier.test_probs.numpy(), metrics, context_record(classifier),
                     classifier.test_patch_probs.numpy())


def fit_seed_ensemble(cfg: DictConfig, config: dict[str, Any], data: PreparedData, run: TrackedRun, out_dir: Path,
                      members: int, resuming: bool = False) -> Fitted:
    """Fit `members` classifiers on the same split (`fit_members`), then join their best epochs into one
    `EnsembleClassifier` (mean P(IDC)) scored on val by `checkpoint.monitor`."""
    paths, datamodule = fit_members(cfg, config, data, run, out_dir, members, resuming)
    ensemble = EnsembleClassifier([load_classifier(p) for p in paths], 0.5, **data.record())
    (scores,) = evaluation_trainer(cfg, out_dir).validate(ensemble, datamodule=datamodule, verbose=False)
    best_score = float(scores[cfg.checkpoint.monitor])
    print(f"Seed ensemble of {members}: {cfg.checkpoint.monitor} {best_score:.4f} on validation")
    return Fitted(datamodule, ensemble, evaluation_trainer(cfg, out_dir, run), None, best_score, paths)


def fit_members(cfg: DictConfig, config: dict[str, Any], data: PreparedData, run: TrackedRun, out_dir: Path,
                members: int, resuming: bool = False) -> tuple[list[str], PatchDataModule]:
    """Train member k seeded with `seed + k` in `out_dir/member_k` (its metrics under `member_k/`); the members'
    best checkpoints and a DataModule of `data`. Resuming, a member this run finished is kept and an unfinished one
    continues from its last checkpoint."""
    paths, datamodule = [], None
    for k in range(members):
        member_dir, seed = out_dir / f"member_{k}", cfg.seed + k
        record = member_dir / MEMBER_FILE
        kept = trained_member(record, run.run_id) if resuming else None
        if kept:
            print(f"Ensemble member {k + 1}/{members} (seed {seed}): trained, kept ({kept})")
            paths.append(kept)
            continue
        print(f"Ensemble member {k + 1}/{members} (seed {seed})")
        pl.seed_everything(seed, workers=True)
        last = member_dir / LAST_CHECKPOINT
        resume_from = last if resuming and written_since_start(last, out_dir) else None
        fitted = fit_member(cfg, config, data, run, member_dir, resume_from, seed, prefix=f"member_{k}/")
        if not fitted.best_path:
            raise RuntimeError(f"ensemble member {k} saved no checkpoint (fast_dev_run?): an ensemble needs them all")
        run.log_metrics({f"member_{k}/best_{cfg.checkpoint.monitor}": fitted.best_score})
        write_json(record, {"run_id": run.run_id, "best_path": fitted.best_path})
        paths.append(fitted.best_path)
        datamodule = fitted.datamodule
    return paths, datamodule or PatchDataModule(data, cfg.data.batch_size, cfg.data.num_workers,
                                                neighbourhood=views_of(config))


def trained_member(record: Path, run_id: str) -> str | None:
    """The best checkpoint of a member that run `run_id` finished, from the member's record: None unless the record
    is that run's and names a file in the member's own checkpoints folder (the member is then trained again)."""
    try:
        saved = json.loads(record.read_text())
        best = Path(saved["best_path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    own = best.parent.resolve() == (record.parent / "checkpoints").resolve()
    return str(best) if saved.get("run_id") == run_id and own and best.is_file() else None


def context_config(cfg: DictConfig) -> DictConfig:
    """The run's `context` group (`none` for configs from before it existed)."""
    return cfg.get("context") or OmegaConf.create({"name": "none"})


def context_record(classifier: IDCClassifier) -> dict[str, Any]:
    """The tuned context settings a checkpoint stores with its threshold (none without context)."""
    if not classifier.uses_context:
        return {}
    return {"context_weight": classifier.context_weight, "context_radius": classifier.context_radius,
            "patch_threshold": classifier.patch_threshold}


def context_metrics(classifier: IDCClassifier, context_cfg: DictConfig) -> dict[str, float]:
    """The tuned context weight (0 when validation chose none) and the threshold without context, as metrics
    (none when the run has no context configured)."""
    if context_cfg.name == "none":
        return {}
    return {"context_weight": classifier.context_weight, "patch_threshold": float(classifier.alone_threshold)}


def log_inputs(run: TrackedRun, config: dict[str, Any], data: PreparedData) -> None:
    """Parameters (the flattened config and data counts), the datasets, the data summary, versions and config."""
    summary = data.summary()
    run.log_params(option_params(config))
    run.log_datasets({split: data.index.frame(rows) for split, rows in data.split.rows.items()},
                     source=summary["root"])
    run.log_params({f"data.count.{split}.{cls}": n for split, counts in summary["split_counts"].items()
                    for cls, n in counts.items()} | {"data.cache_key": summary["cache_key"]})
    run.log_json(summary, "data/summary.json")
    run.log_json(environment(), "environment.json")
    run.log_text(OmegaConf.to_yaml(config), "config/config.yaml")


def option_params(config: dict[str, Any]) -> dict[str, str]:
    """The flattened config as params, each option group under its own name (`loss` = "focal")."""
    params = flatten(config)
    for group in registry.NAMED_GROUPS:
        if f"{group}.name" in params:
            params[group] = params.pop(f"{group}.name")
    return params


def ignored_overrides(requested: dict[str, Any], resumed: dict[str, Any]) -> list[str]:
    """`key=value` of the requested config that differ from the resumed run's (output paths aside)."""
    new, old = flatten(requested), flatten(resumed)
    return [f"{key}={value}" for key, value in sorted(new.items())
            if old.get(key) != value and not key.startswith("paths.") and key != "resume"]


def make_trainer(cfg: DictConfig, out_dir: Path, logger: Any) -> tuple[pl.Trainer, ModelCheckpoint]:
    """The Lightning Trainer of `cfg.trainer`, keeping the best (by `checkpoint.monitor`) and last checkpoints."""
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=cfg.checkpoint.monitor,
                                 mode=cfg.checkpoint.mode)
    callbacks = [checkpoint, LastCheckpoint(out_dir / "checkpoints"), CtrlCGuard(), *training_callbacks(cfg),
                 EpochLine()]
    trainer = pl.Trainer(**cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=out_dir)
    return trainer, checkpoint


def single_process(trainer: pl.Trainer, cfg: DictConfig, run: TrackedRun, out_dir: Path) -> pl.Trainer:
    """The fitted trainer, or after multi-process (DDP) training a one-device trainer for rank 0's
    threshold choice and test, so the test set is seen whole and in order."""
    if trainer.world_size == 1:
        return trainer
    if torch.distributed.is_initialized():  # the workers are done: metrics must not wait for them
        torch.distributed.destroy_process_group()
    return evaluation_trainer(cfg, out_dir, run)


def evaluation_trainer(cfg: DictConfig, out_dir: Path, run: TrackedRun | None = None) -> pl.Trainer:
    """A one-device trainer for validation, threshold choice and test, logging into `run` (if given)."""
    return pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                      logger=run.lightning_logger() if run else False,
                      enable_progress_bar=cfg.trainer.enable_progress_bar, default_root_dir=out_dir)
