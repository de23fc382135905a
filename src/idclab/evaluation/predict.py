"""`python evaluate.py 'predict=[...]'`: P(IDC) of image files with the selected model, loaded as plain torch.

The model is `model_uri`, else `ckpt_path`, else the best finished training run of the experiment by
`select.metric`. Only what prediction uses is imported: torch and the model's own modules, MLflow's client only to
find the model in a store; never Lightning. With test-time augmentation or `register.name` (they need the
validation data, or a run to register) `evaluate.py` takes its full path instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from idclab.config.checkpoint import load_predictor
from idclab.config.validation import validate_evaluate_config
from idclab.evaluation.prediction import files_to_predict, predict_and_write
from idclab.tracking.store import checkpoint_of, fetch_model, find_best_run, store_client
from idclab.verbosity import set_verbose

if TYPE_CHECKING:  # a type name
    from mlflow.entities import Run


def plain_prediction(cfg: DictConfig) -> bool:
    """Whether `cfg` asks only to predict files (no test-time augmentation, registration or export)."""
    return bool(cfg.predict) and not cfg.tta and not cfg.register.name and not OmegaConf.select(cfg, "export.weights")


def locate_model(cfg: DictConfig, download_dir: Path) -> tuple[Path, Run | None, str]:
    """The selected model's checkpoint file, the training run it came from (if known) and what it was selected as:
    `model_uri` (downloaded), else `ckpt_path`, else the best finished training run by `select.metric`."""
    if cfg.model_uri:
        checkpoint, source_run = fetch_model(store_client(cfg.logger.tracking_uri), cfg.model_uri, download_dir)
        return checkpoint, source_run, cfg.model_uri
    if cfg.ckpt_path:
        path = Path(cfg.ckpt_path).expanduser().resolve()
        return path, None, str(path)
    client = store_client(cfg.logger.tracking_uri)
    run = find_best_run(client, cfg.logger.experiment_name, cfg.select.metric, cfg.select.mode,
                        tested=not cfg.predict and not OmegaConf.select(cfg, "export.weights"))
    print(f"Best run by {cfg.select.metric} ({cfg.select.mode}): {run.info.run_name} ({run.info.run_id}) = "
          f"{run.data.metrics[cfg.select.metric]:.4f}")
    checkpoint = checkpoint_of(client, run, download_dir)
    return checkpoint, run, str(checkpoint)


def predict(cfg: DictConfig) -> dict:
    """Score every file of `cfg.predict` (files and folders): `predictions.csv`, heatmaps, a summary."""
    set_verbose(bool(cfg.get("verbose", False)))
    validate_evaluate_config(cfg, trainer=False)  # plain prediction builds no Lightning trainer
    out_dir = Path(cfg.paths.output_dir)
    files = files_to_predict(cfg.predict)
    checkpoint, _, source = locate_model(cfg, out_dir / "downloaded")
    predictor = load_predictor(checkpoint)
    print(f"Model: {source} (threshold {predictor.threshold:.4f})")
    return predict_and_write(predictor, files, cfg.batch_size, out_dir)
