"""Train an IDC patch classifier: python train.py [group=option ...] (see README)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("IDCLAB_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from idclab.cli import run_or_explain
    from idclab.training.pipeline import train

    return run_or_explain(train, cfg)


if __name__ == "__main__":
    from idclab.console import run_hydra

    run_hydra(main, Path(__file__).resolve().parent / "conf", "train")
