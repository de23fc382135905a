"""`python evaluate.py`: test the best (or a given) checkpoint, or predict on image files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from idclab.build import load_classifier
from idclab.data.datamodule import PatchDataModule, prepare_data
from idclab.prediction import format_table, predict_files, write_csv
from idclab.reporting import report_options, test_and_report
from idclab.tracking import KIND_TAG, SOURCE_RUN_TAG, TrackedRun, checkpoint_of, connect, find_best_run
from idclab.validation import validate_evaluate_config

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Pick the checkpoint, then predict on `cfg.predict` files or test it on its run's test split."""
    validate_evaluate_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    client, experiment_id = connect(cfg.logger.tracking_uri, cfg.logger.experiment_name,
                                    cfg.logger.artifact_location)
    source_run = None
    if cfg.ckpt_path:
        ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    else:
        source_run = find_best_run(client, cfg.logger.experiment_name, cfg.select.metric, cfg.select.mode)
        ckpt_path = checkpoint_of(client, source_run, out_dir / "downloaded")
        print(f"Best run by {cfg.select.metric} ({cfg.select.mode}): {source_run.info.run_name} "
              f"({source_run.info.run_id}) = {source_run.data.metrics[cfg.select.metric]:.4f}")
    print(f"Checkpoint: {ckpt_path}")
    classifier = load_classifier(ckpt_path)
    classifier.tta = bool(cfg.tta)

    if cfg.predict:
        predictions = predict_files(classifier, list(cfg.predict), cfg.batch_size)
        print(format_table(predictions))
        write_csv(predictions, out_dir / "predictions.csv")
        failed = sum(p.error is not None for p in predictions)
        print(f"{len(predictions) - failed} predicted, {failed} failed; CSV: {out_dir / 'predictions.csv'}")
        return {"predicted": len(predictions) - failed, "failed": failed}

    train_config = classifier.hparams["config"]
    data_cfg = OmegaConf.create(train_config["data"])
    data = prepare_data(data_cfg, OmegaConf.create(train_config["split"]))
    datamodule = PatchDataModule(data, cfg.batch_size, data_cfg.num_workers)
    source_name = source_run.info.run_name if source_run else ckpt_path.name
    tags = {KIND_TAG: "evaluate", "checkpoint": str(ckpt_path)}
    if source_run:
        tags[SOURCE_RUN_TAG] = source_run.info.run_id
    with TrackedRun(client, experiment_id, f"eval:{source_name}", tags) as run:
        run.log_params({"ckpt_path": str(ckpt_path), "select.metric": cfg.select.metric,
                        "data.cache_key": data.cache.key})
        run.log_json(data.summary(), "data/summary.json")
        trainer = pl.Trainer(**cfg.trainer, logger=run.lightning_logger(), default_root_dir=out_dir)
        run.log_params({"tta": classifier.tta, "threshold": classifier.threshold})
        results = test_and_report(trainer, classifier, datamodule, out_dir / "test", run,
                                  **report_options(cfg.report))
        print(f"Evaluation run {run.run_id} logged; outputs in {out_dir}")
    return results
