"""A mistake on the command line fails before any side effect: one line naming it (and the key or option meant),
exit code 2, no output folder, no MLflow store, and before torch, Lightning or MLflow is imported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT
from mlflow.tracking import MlflowClient

from idclab.console import close_key

HEAVY = ("torch", "pytorch_lightning", "mlflow", "sklearn", "pandas")


def run(script: str, *args: str, root: Path, importtime: bool = False) -> subprocess.CompletedProcess:
    """An entry point as a user runs it, its project and store in `root` (empty)."""
    env = {**os.environ, "IDCLAB_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, str(PROJECT / script), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    (line,) = lines
    assert line.startswith("error: ") and done.stdout == ""
    return line


def imported(done: subprocess.CompletedProcess) -> set[str]:
    """The top-level packages a `-X importtime` run imported."""
    return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+(\S+)$", done.stderr, re.MULTILINE)}


@pytest.mark.parametrize("script, args, expected", [
    ("train.py", ["data=idc", "data.root=/nonexistent"], "data root /nonexistent does not exist"),
    ("train.py", ["trainer.max_epoch=1"], "trainer.max_epoch is not a key of the config: did you mean "
                                          "trainer.max_epochs?"),
    ("evaluate.py", [], "no MLflow store at sqlite:///"),
])
def test_the_mistake_is_one_line_before_any_side_effect_or_heavy_import(tmp_path, script, args, expected):
    done = run(script, *args, root=tmp_path, importtime=True)
    assert expected in error_line(done)
    assert list(tmp_path.iterdir()) == []  # no outputs/DATE/TIME, no mlflow.db
    assert not imported(done) & set(HEAVY)


@pytest.mark.slow
@pytest.mark.parametrize("script, args, expected", [
    ("train.py", ["data=idc"], "data.root is not set: pass data.root=PATH"),
    ("train.py", ["split=external"], "split.root must name"),  # a value check: after the imports, no folder left
    ("train.py", ["-m", "data=idc", "data.root=/nonexistent", "loss=focal,bce"], "data root /nonexistent"),
    ("train.py", ["-m", "model=timm", "model.name=resnt18", "loss=bce,focal"], "close names: resnet18"),
    ("train.py", ["-m", "model.dropout=0.1,1.5"], "model.dropout=1.5: model.dropout must be a number in [0, 1)"),
    ("train.py", ["-m", "data=idc", "data.root=/nonexistent,/alsonot"], "data.root=/nonexistent: data root "),
    ("train.py", ["loss=focall"], "did you mean loss=focal?"),
    ("train.py", ["lr=0.1"], "lr is not a key of the config: did you mean optim.lr?"),
    ("train.py", ["trainr.max_epochs=2"], "did you mean trainer.max_epochs?"),
    ("train.py", ["+trainer.foo=1"], "trainer.foo is not an option of Lightning's Trainer"),  # was a FAILED run
    ("evaluate.py", ["ckpt_path=/nonexistent.ckpt"], "checkpoint /nonexistent.ckpt does not exist"),
    ("evaluate.py", ["model_uri=models:/idc-classifier@champion"], "no MLflow store at"),
    ("evaluate.py", ["ckpt_path=/etc/hostname", "predict=[/nonexistent.png]"], "predict: no file to predict"),
])
def test_more_mistakes_leave_nothing_behind(tmp_path, script, args, expected):
    assert expected in error_line(run(script, *args, root=tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.slow
def test_evaluating_a_store_without_the_experiment_creates_no_experiment(tmp_path, new_store):
    uri = new_store(tmp_path)
    done = run("evaluate.py", root=tmp_path)
    assert "no MLflow experiment named 'idc'" in error_line(done)
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["Default"]  # no idc-eval made
    assert not (tmp_path / "evaluation").exists()


def test_the_key_meant():
    keys = ["trainer", "trainer.max_epochs", "optim", "optim.lr", "averaging.swa_lr", "loss", "loss.alpha"]
    assert close_key("trainer.max_epoch", keys) == "trainer.max_epochs"
    assert close_key("trainr.max_epochs", keys) == "trainer.max_epochs"
    assert close_key("lr", keys) == "optim.lr"  # the only key ending in `.lr`
    assert close_key("looss", keys) == "loss"
    assert close_key("foo.bar", keys) is None


@pytest.mark.slow
def test_a_refusal_after_the_model_was_downloaded_leaves_no_evaluation_folder(trained_copy):
    """The selected run's checkpoint is downloaded before the model can be refused (here: it is no timm backbone to
    export): the refusal removes the download with the folder Hydra made."""
    before = set(trained_copy.iterdir())
    done = run("evaluate.py", "export.weights=backbone.safetensors", root=trained_copy)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1].startswith("error: export.weights writes a timm backbone")
    assert set(trained_copy.iterdir()) == before  # no evaluation/DATE/TIME/downloaded/best.ckpt
    assert not (trained_copy / "backbone.safetensors").exists()


@pytest.fixture
def multirun_job():
    """Inside a multirun's job, as Hydra's launcher runs it (its config state undone after the test)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(str(PROJECT / "conf"), version_base="1.3"):
        config = compose("train", overrides=["hydra.mode=MULTIRUN"], return_hydra_config=True)
    HydraConfig.instance().set_config(config)
    yield
    HydraConfig.instance().cfg = None


def test_a_sweep_jobs_mistake_fails_that_job_and_lets_the_others_run(multirun_job, capsys):
    """SystemExit would escape Hydra's launcher and stop the sweep at that job (a study's parent ended KILLED, as if
    stopped); an ordinary exception fails the job, Hydra runs the rest and raises it at the end."""
    from hydra.core.utils import JobReturn, JobStatus

    from idclab.cli import JobFailed, run_or_explain
    from idclab.config.validation import ConfigError
    from idclab.tracking.sweep import SweepParentRun

    def mistaken() -> None:
        raise ConfigError("the val split holds no IDC patches")

    with pytest.raises(JobFailed):
        run_or_explain(mistaken)
    assert capsys.readouterr().err == "error: the val split holds no IDC patches\n"
    parent = SweepParentRun()
    parent.on_job_end(None, JobReturn(status=JobStatus.COMPLETED))
    parent.on_job_end(None, JobReturn(status=JobStatus.FAILED))
    assert parent.failed_jobs == 1  # the parent ends FAILED, even with no child run to count
