"""`python evaluate.py`: test the best (or a given) checkpoint, or predict on image files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from idclab.build import load_classifier
from idclab.data.datamodule import PatchDataModule, prepare_data
from idclab.module import IDCClassifier
from idclab.prediction import format_table, predict_files, write_csv, write_heatmaps
from idclab.reporting import report_options, test_and_report
from idclab.tracking import (
    KIND_TAG,
    SOURCE_RUN_TAG,
    TrackedRun,
    checkpoint_of,
    connect,
    download_model_checkpoint,
    find_best_run,
    model_source_run,
    register_model,
)
from idclab.validation import validate_evaluate_config

if TYPE_CHECKING:  # only tracking.py talks to MLflow; these are type names
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

def select_model(cfg: DictConfig, client: MlflowClient, out_dir: Path) -> tuple[IDCClassifier, Run | None, str]:
    """The classifier to use, the training run it came from (if known) and where it was loaded from:
    `model_uri`, else `ckpt_path`, else the best finished run of the experiment by `select.metric`."""
    if cfg.model_uri:
        checkpoint = download_model_checkpoint(client, cfg.model_uri, out_dir / "downloaded")
        return load_classifier(checkpoint), model_source_run(client, cfg.model_uri), cfg.model_uri
    source_run = None
    if cfg.ckpt_path:
        ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    else:
        source_run = find_best_run(client, cfg.logger.experiment_name, cfg.select.metric, cfg.select.mode)
        ckpt_path = checkpoint_of(client, source_run, out_dir / "downloaded")
        print(f"Best run by {cfg.select.metric} ({cfg.select.mode}): {source_run.info.run_name} "
              f"({source_run.info.run_id}) = {source_run.data.metrics[cfg.select.metric]:.4f}")
    return load_classifier(ckpt_path), source_run, str(ckpt_path)


def evaluate(cfg: DictConfig) -> dict:
    """Pick the model, optionally register it, then predict on `cfg.predict` files or test it on the
    test split of the data it was trained on."""
    validate_evaluate_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    client, experiment_id = connect(cfg.logger.tracking_uri, cfg.logger.experiment_name,
                                    cfg.logger.artifact_location)
    classifier, source_run, source = select_model(cfg, client, out_dir)
    print(f"Model: {source} (threshold {classifier.threshold:.4f})")
    classifier.tta = bool(cfg.tta)
    if cfg.register.name:
        if source_run is None:
            raise LookupError("register.name needs a training run: let evaluate.py select the best run")
        version = register_model(client, source_run, cfg.register.name, cfg.register.alias)
        print(f"Registered models:/{cfg.register.name}@{cfg.register.alias} (version {version}) "
              f"from run {source_run.info.run_id}")

    if cfg.predict:
        predictions = predict_files(classifier, list(cfg.predict), cfg.batch_size)
        print(format_table(predictions))
        write_csv(predictions, out_dir / "predictions.csv")
        for name in write_heatmaps(predictions, out_dir / "heatmaps", classifier.threshold):
            print(f"Heatmap: {name}")
        failed = sum(p.error is not None for p in predictions)
        print(f"{len(predictions) - failed} predicted, {failed} failed; CSV: {out_dir / 'predictions.csv'}")
        return {"predicted": len(predictions) - failed, "failed": failed}

    train_config = classifier.hparams["config"]
    data_cfg = OmegaConf.create(train_config["data"])
    data = prepare_data(data_cfg, OmegaConf.create(train_config["split"]))
    datamodule = PatchDataModule(data, cfg.batch_size, data_cfg.num_workers)
    source_name = source_run.info.run_name if source_run else Path(source).name
    tags = {KIND_TAG: "evaluate", "checkpoint": source}
    if source_run:
        tags[SOURCE_RUN_TAG] = source_run.info.run_id
    with TrackedRun(client, experiment_id, f"eval:{source_name}", tags) as run:
        run.log_params({"model": source, "select.metric": cfg.select.metric, "data.cache_key": data.cache.key,
                        "tta": classifier.tta, "threshold": classifier.threshold})
        run.log_json(data.summary(), "data/summary.json")
        trainer = pl.Trainer(**cfg.trainer, logger=run.lightning_logger(), default_root_dir=out_dir)
        results = test_and_report(trainer, classifier, datamodule, out_dir / "test", run,
                                  **report_options(cfg.report))
        print(f"Evaluation run {run.run_id} logged; outputs in {out_dir}")
    return results
