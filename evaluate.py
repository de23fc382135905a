"""Evaluate the best checkpoint of an experiment, or predict on images: python evaluate.py (see README)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("IDCLAB_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from idclab.cli import run_or_explain
    from idclab.evaluation.predict import plain_prediction, predict

    if plain_prediction(cfg):  # plain torch: Lightning is not even imported
        run_or_explain(predict, cfg)
        return
    from idclab.evaluation.evaluate import evaluate

    run_or_explain(evaluate, cfg)


if __name__ == "__main__":
    from idclab.console import run_hydra

    run_hydra(main, Path(__file__).resolve().parent / "conf", "evaluate")
