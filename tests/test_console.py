"""What a user sees: one line per epoch in a log, no third-party noise, one-line errors with exit code 2."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import CONF, PROJECT, TINY_DATA, TINY_TRAINER
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from idclab.console import check_first, one_line, quiet_third_party
from idclab.tracking.runs import KIND_TAG, RunNotFoundError, find_best_run
from idclab.training.progress import epoch_line

NOISE = ("litlogger", "💡 Tip", "LeafSpec", "can be interpreted in multiple ways", "Inferred schema contains integer",
         "Failed to infer signature from type hint", "Validating input example", "`weights_only` was not set",
         "Started monitoring system metrics", "Total FLOPs: 0")


def run(script: str, *args: str, root: Path) -> subprocess.CompletedProcess:
    """An entry point run as a user would, against a store in `root`; stdout is a pipe (not a terminal)."""
    env = {**os.environ, "IDCLAB_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    return subprocess.run([sys.executable, str(PROJECT / script), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


def test_epoch_line():
    metrics = {"train_loss": torch.tensor(0.41234), "val_auprc": torch.tensor(0.87), "val_f1": 0.8,
               "val_balanced_accuracy": 0.81}
    assert epoch_line(2, 10, metrics, 12.345) == (
        "epoch 3/10  train_loss 0.4123  val_auprc 0.8700  val_f1 0.8000  val_bac 0.8100  12.3 s")
    assert epoch_line(0, -1, {}, 1.0) == "epoch 1  train_loss n/a  val_auprc n/a  val_f1 n/a  val_bac n/a  1.0 s"


def composition_error(*overrides: str) -> ConfigCompositionException:
    with initialize_config_dir(str(CONF), version_base="1.3"), pytest.raises(ConfigCompositionException) as caught:
        compose("train", overrides=list(overrides))
    return caught.value


def test_hydra_errors_on_one_line():
    message = one_line(composition_error("loss=nope"))
    assert message.startswith("In 'train': Could not find 'loss/nope'; Available options in 'loss': bce, ")
    assert "focal" in message and "search path" not in message and "\n" not in message
    message = one_line(composition_error("foo.bar=1"))
    assert message == ("Could not override 'foo.bar'; To append to your config use +foo.bar=1; "
                       "Key 'foo' is not in struct")


def test_unknown_options_and_keys_exit_2_with_one_line(tmp_path):
    for override, expected in [("loss=nope", "Could not find 'loss/nope'"),
                               ("foo.bar=1", "foo.bar is not a key of the config")]:
        done = run("train.py", override, root=tmp_path)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and expected in line
    assert list(tmp_path.iterdir()) == []


def test_known_noise_is_filtered_and_the_rest_is_kept(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("The specified dataset source can be interpreted in multiple ways: A, A.", UserWarning,
                      stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        lightning.info("💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/)")
        lightning.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def test_an_unknown_selection_metric_lists_the_metrics(tmp_path, new_store):
    client = MlflowClient(new_store(tmp_path))
    experiment_id = client.create_experiment("idc")
    with pytest.raises(RunNotFoundError, match="train first"):
        find_best_run(client, "idc", "best_val_auprc", "max")
    run_id = client.create_run(experiment_id, tags={KIND_TAG: "train"}).info.run_id
    client.log_batch(run_id, metrics=[Metric(name, 0.5, 0, 0) for name in ("best_val_auprc", "test_f1", "system/cpu")])
    client.set_terminated(run_id, "FINISHED")
    with pytest.raises(RunNotFoundError) as caught:
        find_best_run(client, "idc", "nope", "max")
    assert "'nope'" in str(caught.value) and "best_val_auprc, test_f1" in str(caught.value)
    assert "train first" not in str(caught.value) and "system/" not in str(caught.value)
    assert find_best_run(client, "idc", "best_val_auprc", "max").info.run_id == run_id


@pytest.mark.slow
def test_a_logged_run_prints_one_line_per_epoch_without_noise(tmp_path, data_dir):
    done = run("train.py", *TINY_DATA, *TINY_TRAINER, "trainer.enable_progress_bar=true",
               f"paths.data_dir={data_dir}", root=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert re.fullmatch(r"epoch 2/2  train_loss \d\.\d{4}  val_auprc \d\.\d{4}  val_f1 \d\.\d{4}  "
                        r"val_bac \d\.\d{4}  \d+\.\d s", lines[1])
    assert "Total FLOPs" not in done.stdout  # Lightning's model summary: with verbose=true only
    assert not [noise for noise in NOISE if noise in done.stdout + done.stderr]
    done = run("evaluate.py", "select.metric=val_nope", root=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "'val_nope'" in line and "best_val_auprc" in line and "train first" not in line


@pytest.mark.parametrize("arguments, expected", [
    (["-m", "loss=glob(f*)", "model.dropout=1.5"], "error: model.dropout must be a number in [0, 1), got 1.5"),
    (["-m", "seed=range(1,4)", "model.dropout=0.1,1.5"],
     "error: seed=1 model.dropout=1.5: model.dropout must be a number in [0, 1), got 1.5"),
    (["-m", "seed=1,x"], "error: seed=x: seed must be an integer, got 'x'"),
])
def test_every_job_of_a_sweep_is_checked_before_hydra_starts(capsys, arguments, expected):
    with pytest.raises(SystemExit) as done:
        check_first(PROJECT / "conf", "train", arguments)
    assert done.value.code == 2 and capsys.readouterr().err.strip() == expected


@pytest.mark.parametrize("arguments", [["-m", "loss=focal,weighted", "resume=abc"],
                                       ["-m", "study=smoke", "resume=abc"]])
def test_a_multirun_cannot_resume_one_run(capsys, arguments):
    """Every job would reopen the same run, with that run's config, ignoring what the job sweeps."""
    with pytest.raises(SystemExit) as done:
        check_first(PROJECT / "conf", "train", arguments)
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: resume=abc continues one run: run it without -m (a study's "
                                               "jobs continue when its command is run again)")


@pytest.mark.parametrize(("arguments", "expected"), [
    (["hydra/launcher=slurm", "loss=bce,focal"], "error: hydra.launcher.tasks_per_node=8 but trainer.devices=1: "
     "Lightning starts one process per SLURM task and refuses the difference in every job; use "
     "hydra/launcher=slurm_1gpu for one-device jobs (studies, sweeps, ensembles, cross-validation), or set both"),
    (["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2", "loss=bce,focal"],
     "error: hydra.launcher.nodes=1 but trainer.num_nodes=2: set hydra.launcher.nodes=2"),
])
def test_a_slurm_job_shaped_unlike_its_trainer_is_refused_before_submission(capsys, arguments, expected):
    with pytest.raises(SystemExit) as done:
        check_first(PROJECT / "conf", "train", ["-m", *arguments])
    assert done.value.code == 2 and capsys.readouterr().err.strip() == expected


def test_another_sweepers_jobs_are_left_to_it():
    check_first(PROJECT / "conf", "train", ["-m", "hydra/sweeper=basic", "model.dropout=0.1,1.5"])


def test_a_search_goes_the_way_its_metric_is_better():
    """train.py returns checkpoint.monitor's best value: Optuna maximising a loss would search for the worst runs."""
    lower = ["-m", "hparams_search=optuna", "checkpoint.monitor=val_loss", "checkpoint.mode=min"]
    with pytest.raises(SystemExit) as done:
        check_first(PROJECT / "conf", "train", lower)
    assert done.value.code == 2
    check_first(PROJECT / "conf", "train", [*lower, "hydra.sweeper.direction=minimize"])
    check_first(PROJECT / "conf", "train", ["-m", "hparams_search=optuna"])
    with pytest.raises(SystemExit):  # what Optuna's jobs share is checked before the search opens its run
        check_first(PROJECT / "conf", "train", ["-m", "hparams_search=optuna", "checkpoint.monitor=val_loss"])
