"""Shared fixtures: tiny synthetic data, composed configs with a temporary MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

PROJECT = Path(__file__).resolve().parents[1]
CONF = PROJECT / "conf"
SHARED_SAMPLE = PROJECT.parent / "shared" / "data" / "idc-sample"

TINY_DATA = [
    "data.synthetic.n_patients=8",
    "data.synthetic.min_grid=5",
    "data.synthetic.max_grid=6",
    "data.synthetic.edge_fraction=0.5",
    "data.batch_size=16",
    "data.decode_workers=1",
]
TINY_TRAINER = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder (generated synthetic sets and caches) shared by the whole session."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(tmp_path: Path, data_dir: Path):
    """Compose conf/<config_name>.yaml with overrides, pointing every path at temporary folders."""

    def _make(*overrides: str, config_name: str = "train", tiny: bool = True) -> DictConfig:
        paths = [f"paths.root={tmp_path}", f"paths.output_dir={tmp_path / 'out'}",
                 f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
        if config_name == "train":
            paths += [f"paths.data_dir={data_dir}", "logger.log_model=false"]  # model logging: own tests
            extra = [*TINY_DATA, *TINY_TRAINER] if tiny else []
        else:
            extra = []
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose(config_name, overrides=[*paths, *extra, *overrides])

    return _make
