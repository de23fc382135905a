"""Shared fixtures: tiny synthetic data, composed configs with a temporary MLflow store."""

from __future__ import annotations

import copy
import functools
import gc
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads; inherited by the entry points tests start

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

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
TINY_REPORT = [  # the test report's figures and intervals, enough to check them
    "report.bootstrap_resamples=20",
    "report.heatmap_patients=1",
    "report.gallery_size=4",
]


torch.set_num_threads(1)  # tests use tiny tensors: a thread pool only adds contention, most of all on a busy machine


def pytest_unconfigure(config: pytest.Config) -> None:
    """Spare the exiting interpreter its last garbage collections over torch's, Lightning's and MLflow's objects.

    Nothing is left to collect that matters at exit; the collections alone took 2-3 s of every test run. (Collection
    stays frozen for the rest of the process: harmless, as pytest exits next when run from the command line.)
    """
    gc.freeze()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder (generated synthetic sets and caches) shared by the whole session."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(tmp_path: Path, data_dir: Path):
    """Compose conf/<config_name>.yaml with overrides, pointing every path at temporary folders."""

    def _make(*overrides: str, config_name: str = "train", tiny: bool = True) -> DictConfig:
        return composed(config_name, [*root_overrides(tmp_path, data_dir, config_name, tiny), *overrides])

    return _make


def root_overrides(root: Path, data_dir: Path, config_name: str = "train", tiny: bool = True) -> list[str]:
    """Overrides pointing a config's project folder, outputs and MLflow store at `root` (and, to train, the tiny
    synthetic data of `data_dir`, with a light test report)."""
    paths = [f"paths.root={root}", f"paths.output_dir={root / 'out'}",
             f"logger.tracking_uri=sqlite:///{root / 'mlflow.db'}"]
    if config_name != "train":
        return paths
    paths += [f"paths.data_dir={data_dir}", "logger.log_model=false"]  # model logging: own tests
    return [*paths, *TINY_DATA, *TINY_TRAINER, *TINY_REPORT] if tiny else paths


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A project folder holding two finished training runs (ann, cnn) of the tiny data: trained once a session."""
    from idclab.training.pipeline import train

    root = tmp_path_factory.mktemp("trained")
    for model in ("ann", "cnn"):
        train(composed("train", [*root_overrides(root, data_dir), f"model={model}"]))
    return root


@pytest.fixture
def trained_copy(trained_template: Path, tmp_path: Path) -> Path:
    """A private copy of `trained_template` in `tmp_path` (its store's paths moved with it): tests may change it."""
    shutil.copytree(trained_template, tmp_path, dirs_exist_ok=True)
    relocate_store(tmp_path / "mlflow.db", str(trained_template), str(tmp_path))
    return tmp_path


def relocate_store(database: Path, old: str, new: str) -> None:
    """Replace the folder `old` by `new` in every text value of an MLflow SQLite store (artifact locations, tags)."""
    with sqlite3.connect(database) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in connection.execute(f"PRAGMA table_info('{table}')").fetchall():
                if any(kind in column[2].upper() for kind in ("CHAR", "TEXT", "CLOB")):
                    connection.execute(f"UPDATE '{table}' SET \"{column[1]}\" = REPLACE(\"{column[1]}\", ?, ?)",
                                       (old, new))


def composed(config_name: str, overrides: list[str]) -> DictConfig:
    """`compose(config_name, overrides)`, from a cached composition of the group choices: Hydra applies value
    overrides (`a.b=v`) after the defaults whatever their order, so they are applied here to a copy in the same way.
    About 100 tests compose; most differ only in values (temporary paths first), and each composition took 0.1-0.2 s.
    """
    groups = tuple(o for o in overrides if not is_value_override(o))
    config = copy.deepcopy(composed_groups(config_name, groups))
    for override in OverridesParser.create().parse_overrides([o for o in overrides if is_value_override(o)]):
        OmegaConf.update(config, override.key_or_group, override.value(), merge=False)  # unknown keys: an error
    return config


def is_value_override(override: str) -> bool:
    """A plain `a.b=v` override of an existing value (not a group choice, an addition `+` or a deletion `~`)."""
    key = override.split("=", 1)[0]
    return "." in key and not key.startswith(("+", "~", "hydra.")) and "@" not in key


@functools.cache
def composed_groups(config_name: str, groups: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(config_name, overrides=list(groups))


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema made (2-3 s of migrations), kept in the system's temporary folder per
    MLflow version so that later sessions, with or without pytest's cache plugin, only copy it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    database = Path(tempfile.gettempdir()) / "idclab-tests" / f"empty-mlflow-store-{mlflow.__version__}.db"
    if not database.is_file():
        building = tmp_path_factory.mktemp("store") / "mlflow.db"
        MlflowClient(f"sqlite:///{building}").search_experiments()
        database.parent.mkdir(exist_ok=True)
        partial = database.with_suffix(f".{os.getpid()}")
        shutil.copyfile(building, partial)
        os.replace(partial, database)  # whole or absent, even with concurrent sessions
    return database


@pytest.fixture(scope="session")
def new_store(empty_store: Path):
    """Copy the empty store into a folder and return its tracking URI."""

    def _new(folder: Path) -> str:
        database = folder / "mlflow.db"
        shutil.copyfile(empty_store, database)
        return f"sqlite:///{database}"

    return _new


def copy_patches(make_cfg, folder: Path) -> Path:
    """A private copy of the tiny synthetic data set, in the Kaggle layout, to change after training."""
    from idclab.data.datamodule import resolve_root

    shutil.copytree(resolve_root(make_cfg().data), folder)
    return folder


def cut_at_second_epoch_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raise RuntimeError("power cut") at the end of the second training epoch, once the first one's checkpoint is
    saved: a run killed mid-training, to resume."""
    from idclab.classifier.module import IDCClassifier

    epoch_end, ends = IDCClassifier.on_train_epoch_end, []

    def power_cut(self: IDCClassifier) -> None:
        epoch_end(self)
        ends.append(1)
        if len(ends) == 2:
            raise RuntimeError("power cut")

    monkeypatch.setattr(IDCClassifier, "on_train_epoch_end", power_cut)
