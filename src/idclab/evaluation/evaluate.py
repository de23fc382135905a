"""`python evaluate.py`: test the best (or a given) checkpoint on the test patients it recorded, or predict on
image files with test-time augmentation or before registering the model (plain prediction: `evaluation.predict`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from idclab.classifier.interrupts import InterruptGuard
from idclab.classifier.module import IDCClassifier
from idclab.config.build import CheckpointError, load_classifier
from idclab.config.validation import ConfigError, validate_evaluate_config
from idclab.data.datamodule import PatchDataModule, PreparedData, identity_key, prepare_data
from idclab.data.layout import DataLayoutError, require_root
from idclab.evaluation.calibrate import choose_threshold
from idclab.evaluation.predict import locate_model, plain_prediction, predict
from idclab.evaluation.prediction import files_to_predict, predict_and_write
from idclab.evaluation.reporting import check_heatmap_patients, headline, report_options, test_and_report
from idclab.models.timm_backbone import TimmBackbone
from idclab.models.weights import sha256_of
from idclab.tracking.runs import (
    KIND_TAG,
    PATCH_SPLIT,
    SOURCE_RUN_TAG,
    RunNotFoundError,
    TrackedRun,
    connect,
    logged_model_of,
    register_model,
    run_link,
    store_client,
)
from idclab.verbosity import set_verbose

if TYPE_CHECKING:  # only the tracking package talks to MLflow; these are type names
    from mlflow.entities import Run

EVAL_SUFFIX = "-eval"  # evaluation runs go to the experiment `<experiment>-eval`


def evaluate(cfg: DictConfig) -> dict:
    """Pick the model, optionally register it, then predict on `cfg.predict` files or test it on the
    test split of the data it was trained on. The store is only read until the evaluation run is made."""
    set_verbose(bool(cfg.get("verbose", False)))
    if plain_prediction(cfg):
        return predict(cfg)
    validate_evaluate_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    checkpoint, source_run, source = locate_model(cfg, out_dir / "downloaded")
    classifier = load_classifier(checkpoint)
    print(f"Model: {source} (threshold {classifier.threshold:.4f})")
    if OmegaConf.select(cfg, "export.weights"):
        return export_weights(classifier, cfg.export.weights, source)
    classifier.tta = bool(cfg.tta)
    if classifier.tta:
        require_validation_patients(classifier)
    files = files_to_predict(cfg.predict) if cfg.predict else []
    if cfg.register.name and source_run is None:
        raise RunNotFoundError("register.name needs a training run: let evaluate.py select the best run")
    if cfg.register.name:
        require_patient_split(classifier, "it is not registered")
        logged_model_of(store_client(cfg.logger.tracking_uri), source_run)  # registered once tested: checked now
    # the files to predict (above) and the patients it will be tested (or TTA re-tuned) on are checked before
    # anything is registered; a model is registered only once it has predicted its files or passed its test
    data = evaluation_data(cfg, classifier, needs_test=not cfg.predict) if classifier.tta or not cfg.predict else None
    if not cfg.predict:
        check_heatmap_patients(cfg.report.heatmap_patients, data.split.patients["test"])
    if cfg.predict:
        if classifier.tta:  # labels at thresholds tuned with TTA on the validation patients
            datamodule = PatchDataModule(data, cfg.batch_size, cfg.data.num_workers,
                                         neighbourhood=classifier.input_views)
            trainer = pl.Trainer(**cfg.trainer, logger=False, default_root_dir=out_dir, callbacks=[InterruptGuard()])
            print(f"Threshold with TTA: {retune_with_tta(trainer, classifier, datamodule):.4f}")
        results = predict_and_write(classifier, files, cfg.batch_size, out_dir)
        register(cfg, source_run)
        return results
    client, experiment_id = connect(cfg.logger.tracking_uri, cfg.logger.experiment_name + EVAL_SUFFIX,
                                    cfg.logger.artifact_location)
    datamodule = PatchDataModule(data, cfg.batch_size, cfg.data.num_workers,
                                 neighbourhood=classifier.input_views)
    tags = {KIND_TAG: "evaluate", "checkpoint": source}
    if source_run:
        tags[SOURCE_RUN_TAG] = source_run.info.run_id
    with TrackedRun(client, experiment_id, run_name(cfg, source_run, None), tags,
                    system_metrics=cfg.logger.system_metrics_interval) as run:
        bar = cfg.trainer.enable_progress_bar and sys.stdout.isatty()  # in a log each redraw would be a line
        trainer = pl.Trainer(**{**cfg.trainer, "enable_progress_bar": bar}, enable_model_summary=False,
                             logger=run.lightning_logger(), default_root_dir=out_dir, callbacks=[InterruptGuard()])
        thresholds = {"threshold": classifier.threshold}
        if classifier.tta:
            thresholds = {"threshold_without_tta": classifier.threshold,
                          "threshold": retune_with_tta(trainer, classifier, datamodule)}
        run.log_params({"model": source, "select.metric": cfg.select.metric, "tta": classifier.tta,
                        "split_from": cfg.split_from, **data_changes(classifier, data), **thresholds})
        run.log_metrics(thresholds, step=trainer.current_epoch)
        run.log_json(data.summary(), "data/summary.json")
        results = test_and_report(trainer, classifier, datamodule, out_dir / "test", run,
                                  **report_options(cfg.report))
        run.describe(headline(results))
        version = register(cfg, source_run)
        if version is not None:
            run.rename(run_name(cfg, source_run, version))
    link = run_link(cfg.logger.tracking_uri, experiment_id, run.run_id)
    print(f"Done: evaluation run {run.run_name} ({run.run_id}) in MLflow experiment "
          f"{cfg.logger.experiment_name + EVAL_SUFFIX}{f', {link}' if link else ''}; outputs in {out_dir}")
    return results


def export_weights(classifier: IDCClassifier, path: str, source: str) -> dict[str, str]:
    """Write the selected model's timm backbone to `path` (safetensors, timm's keys) for another run's
    `model.weights`; ConfigError for an ensemble (seeds or folds) or a model that is not a timm backbone."""
    if not isinstance(classifier.model, TimmBackbone):
        members = classifier.hparams.get("members")
        what = (f"an ensemble of {members} models (a seed ensemble or a cross-validation's folds; export one of "
                "them: ckpt_path=<the run's output_dir tag>/member_K/ or fold_K/checkpoints/best.ckpt)" if members
                else f"model={classifier.hparams['config']['model']['name']}")
        raise ConfigError(f"export.weights writes a timm backbone (model=timm) for model.weights; the selected model "
                          f"is {what}")
    written = classifier.model.export(path, source)
    digest = sha256_of(written)
    print(f"Exported the {classifier.model.name} backbone of {source} to {written} (sha256 {digest}); start a run "
          f"from it with {start_command(classifier.model, written)}")
    return {"exported": str(written), "sha256": digest}


def start_command(model: TimmBackbone, path: str | Path) -> str:
    """The overrides that build `model`'s architecture as it was built (patch size, image size) from `path`."""
    settings = "".join(f" {key}={value}" for key, value in model.settings.items())
    return f"model=timm model.name={model.name}{settings} model.weights={path}"


def register(cfg: DictConfig, source_run: Run | None) -> int | None:
    """Register the source run's model as `register.name` (alias `register.alias`) when asked; its version."""
    if not cfg.register.name or source_run is None:
        return None
    client = store_client(cfg.logger.tracking_uri)  # the store the run came from
    version = register_model(client, source_run, cfg.register.name, cfg.register.alias)
    print(f"Registered models:/{cfg.register.name}@{cfg.register.alias} (version {version}) "
          f"from run {source_run.info.run_id}")
    return version


def run_name(cfg: DictConfig, source_run: Run | None, version: int | None) -> str:
    """What the evaluation run did: `register NAME vN`, `eval MODEL_URI`, `eval RUN_NAME` or `eval CHECKPOINT`,
    with ` tta` under test-time augmentation."""
    if version is not None:
        name = f"register {cfg.register.name} v{version}"
    elif cfg.model_uri:
        name = f"eval {cfg.model_uri}"
    elif source_run is not None:
        name = f"eval {source_run.info.run_name}"
    else:
        name = f"eval {cfg.ckpt_path}"
    return f"{name} tta" if cfg.tta else name


def evaluation_data(cfg: DictConfig, classifier: IDCClassifier, needs_test: bool = True) -> PreparedData:
    """The training run's data (or `data.root`), decoded into this project's cache and split as the checkpoint
    recorded (`split_from=recorded`) or afresh with the training run's split settings (`split_from=fresh`);
    `needs_test=False` when only the validation patients are used (TTA before `predict`)."""
    config = classifier.hparams["config"]
    data_cfg = OmegaConf.create(config["data"])
    for key in ("cache_dir", "generated_dir", "decode_workers"):  # paths and process counts: this project's own
        data_cfg[key] = cfg.data[key]
    split_cfg = OmegaConf.create(config["split"])
    require_patient_split(classifier, "evaluate.py cannot test it honestly")
    if cfg.split_from == "recorded":
        split_cfg = recorded_split(classifier, split_cfg, needs_val=bool(cfg.tta), needs_test=needs_test)
    root = require_root(cfg.data.root) if cfg.data.root else None
    required = ("test",) * needs_test + ("val",) * (bool(cfg.tta) or not needs_test)
    data = prepare_data(data_cfg, split_cfg, required=required, root=root)
    if cfg.split_from == "fresh":
        leave_out_fitted_patients(classifier, data, required)
    return data


def require_patient_split(classifier: IDCClassifier, consequence: str) -> None:
    """ConfigError for a model trained on split=patches: no patient is unseen by it, so it can be neither tested
    honestly nor made a registered model."""
    if classifier.hparams["config"]["split"]["name"] == PATCH_SPLIT:
        raise ConfigError(f"the model was trained on split={PATCH_SPLIT}, which puts patches of every patient in "
                          f"training: no patient is unseen, so {consequence} (train with a patient split)")


def leave_out_fitted_patients(classifier: IDCClassifier, data: PreparedData, required: tuple[str, ...]) -> None:
    """A fresh split reshuffles the patients: the ones the checkpoint records as trained on (or validated on, for
    test) are left out of its test and validation splits, and named, so the model is never tested, nor its TTA
    threshold tuned, on patients it learned from."""
    recorded = classifier.hparams.get("split_patients")
    if recorded is None:  # saved before idclab recorded them: nothing to leave out, and the run says so
        data.split.notes["fitted_patients_unknown"] = True
        print("Warning: split_from=fresh on a checkpoint that records no patient lists: its test patients may "
              "include ones it was trained on (noted as fitted_patients_unknown)")
        return
    trained = {str(p) for p in recorded.get("train", [])}
    fitted = {"test": trained | {str(p) for p in recorded.get("val", [])}, "val": trained}
    left_out: list[str] = []
    for split, seen in fitted.items():
        drop = [str(p) for p in data.split.patients.get(split, []) if str(p) in seen]
        if not drop:
            continue
        rows = data.split.rows[split]
        data.split.rows[split] = rows[~np.isin(data.index.patients[rows].astype(str), drop)]
        data.split.patients[split] = [p for p in data.split.patients[split] if str(p) not in seen]
        left_out += drop
        if split in required and not data.split.rows[split].size:
            raise DataLayoutError(f"split_from=fresh: every {split} patient of the fresh split was one this model "
                                  f"was fitted on ({', '.join(drop)}); add patients or use split_from=recorded")
    if left_out:
        data.split.notes["left_out_trained_patients"] = sorted(left_out)
        print(f"split_from=fresh: left out {len(left_out)} patients the model was fitted on: "
              f"{', '.join(sorted(left_out))}")


def require_validation_patients(classifier: IDCClassifier) -> None:
    """TTA re-tunes the threshold on the model's validation patients: refuse a model that records none (a
    cross-validation ensemble, whose threshold comes from its folds' validation patients, all of whom trained
    some member), whatever `split_from` says."""
    recorded = classifier.hparams.get("split_patients")
    if recorded is not None and not recorded.get("val"):
        raise ConfigError("tta=true: this model records no validation patients to re-tune its threshold with TTA "
                          "on (a cross-validation ensemble's threshold comes from its folds' validation "
                          "patients); evaluate it without tta")


def recorded_split(classifier: IDCClassifier, split_cfg: DictConfig, needs_val: bool, needs_test: bool = True
                   ) -> DictConfig:
    """The split config that rebuilds the patient lists saved in the checkpoint (the test patients unless only
    validation is used, and the validation ones when TTA re-tunes the threshold, must all be in the data)."""
    patients = classifier.hparams.get("split_patients")
    if patients is None:
        raise CheckpointError("the checkpoint records no patient lists (saved before idclab recorded them): test "
                              "a fresh split of the data with split_from=fresh (it cannot leave out the patients "
                              "the model was trained on)")
    if needs_test and not patients.get("test"):
        raise ConfigError("this model records no test patients (a cross-validation run without a held-out test "
                          "split: its estimate is the out-of-fold report); score patches with predict=[...]")
    required = (["val"] if needs_val else []) + (["test"] if needs_test else [])
    return OmegaConf.create({"name": "recorded", "root": split_cfg.get("root"), **patients, "required": required})


def data_changes(classifier: IDCClassifier, data: PreparedData) -> dict[str, object]:
    """Print how the data differ from the checkpoint's record; the facts as run parameters."""
    recorded = classifier.hparams.get("data_fingerprint") or {}
    now = data.record()["data_fingerprint"]
    new = data.split.notes.get("new_patients", [])
    field = identity_key(recorded)
    if recorded and recorded.get(field) != now[field]:
        print(f"The data changed since training ({field.replace('_key', '')} {recorded.get(field)} -> {now[field]})"
              + (f"; {len(new)} new patients left out: {', '.join(new)}" if new else ""))
    test_then, test_now = recorded.get("patches", {}).get("test"), now["patches"]["test"]
    if test_then is not None and test_then != test_now:
        print(f"Warning: the test patients now have {test_now} patches, {test_then} when trained "
              "(files added, removed or unreadable)")
    return {"data.cache_key": now["cache_key"], "data.recorded_cache_key": recorded.get("cache_key"),
            "data.content": now["content"], "data.recorded_content": recorded.get("content"),
            "data.count.test": test_now, "data.recorded_count.test": test_then, "data.new_patients": len(new)}


def retune_with_tta(trainer: pl.Trainer, classifier: IDCClassifier, datamodule: PatchDataModule) -> float:
    """Tune the threshold again on the validation patients with TTA on, by the rule the checkpoint's was tuned
    (with the checkpoint's spatial context, when it has one: the conditions the threshold is used in)."""
    threshold_cfg = OmegaConf.create(classifier.hparams["config"]["threshold"])
    threshold_cfg.name = classifier.hparams.get("threshold_method", threshold_cfg.name)
    context_cfg = None
    if classifier.uses_context:
        context_cfg = OmegaConf.create({"name": "neighbours", "radius": classifier.context_radius,
                                        "weight": classifier.context_weight})
    threshold, *_ = choose_threshold(trainer, classifier, datamodule, None, threshold_cfg, context_cfg)
    return threshold
