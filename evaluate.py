"""Evaluate the best checkpoint of an experiment, or predict on images: python evaluate.py (see README)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("IDCLAB_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from idclab.evaluation import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
