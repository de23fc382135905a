"""The command lines in README, run as a user would (subprocesses, temporary store)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT, SHARED_SAMPLE, TINY_DATA, TINY_TRAINER
from mlflow.tracking import MlflowClient


def run(script: str, *args: str, root: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "IDCLAB_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    data = [f"paths.data_dir={data_dir}"] if script == "train.py" else []
    return subprocess.run([sys.executable, str(PROJECT / script), *args, *data],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_multirun_is_one_parent_run_with_a_child_per_job(tmp_path, data_dir):
    done = run("train.py", "-m", "loss=focal,weighted", *TINY_DATA, *TINY_TRAINER, root=tmp_path,
               data_dir=data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    everything = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    (parent,) = [r for r in everything if r.data.tags["idclab.kind"] == "sweep"]
    runs = [r for r in everything if r.data.tags["idclab.kind"] == "train"]
    assert parent.info.run_name == "sweep loss=focal,weighted" and parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.data.metrics["children_finished"] == 2
    assert parent.data.tags["best_child_run_id"] in {r.info.run_id for r in runs}
    # the sweep ends with its answer: ranking, winner, and that one seed per option establishes no gap
    assert parent.data.tags["mlflow.note.content"].startswith("Ranking by best_val_auprc (validation):")
    assert "Not established: one run per option" in done.stdout
    assert "Sweep loss=focal,weighted: 2 finished, 0 failed of 2" in done.stdout
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.md", "comparison/comparison.csv", "comparison/comparison.png"} <= artifacts
    assert sorted(r.info.run_name.split(",")[0] for r in runs) == ["loss=focal", "loss=weighted"]
    assert {r.data.params["loss"] for r in runs} == {"focal", "weighted"}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["sweep"] for r in runs}) == 1
    assert {r.data.tags["override.loss"] for r in runs} == {"focal", "weighted"}
    # artifacts land in the project's mlruns/, whatever the working directory
    assert all(r.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri()) for r in runs)
    assert (tmp_path / "multirun").is_dir()


@pytest.mark.slow
def test_real_data_without_root_fails_with_the_layout(tmp_path, data_dir):
    done = run("train.py", "data=idc", root=tmp_path, data_dir=data_dir)
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()  # one line: the problem, the layout, where to get it
    assert "data.root is not set" in line and "kaggle datasets download" in line
    assert not (tmp_path / "mlflow.db").exists()  # failed before any run was created


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="real IDC sample (../shared/data/idc-sample) not present")
def test_real_idc_sample_trains_and_evaluates(tmp_path, data_dir):
    done = run("train.py", "data=idc", f"data.root={SHARED_SAMPLE}", "trainer.max_epochs=1", "verbose=true",
               "trainer.limit_train_batches=5", "trainer.limit_val_batches=3", "trainer.limit_test_batches=3",
               root=tmp_path, data_dir=data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "padded" in done.stdout  # the sample has border patches smaller than 50x50 (the data line: verbose)
    done = run("evaluate.py", root=tmp_path, data_dir=data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^  IDC +\d\.\d{4} +\d\.\d{4} +\d\.\d{4} +\d+$", done.stdout, re.MULTILINE)  # its test report


@pytest.mark.slow
def test_bad_value_is_one_clear_line_and_exit_code_2(tmp_path, data_dir):
    done = run("train.py", "optim.lr=-1", root=tmp_path, data_dir=data_dir)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: optim.lr must be a number > 0, got -1"]


def test_unknown_option_lists_the_available_ones(tmp_path, data_dir):
    done = run("train.py", "model=resnet9000", root=tmp_path, data_dir=data_dir)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "Could not find 'model/resnet9000'" in line and "ann, cnn, idcnet" in line


@pytest.mark.slow
def test_a_study_writes_its_verdict_and_a_rerun_runs_nothing_new(tmp_path, data_dir):
    tiny = [*TINY_DATA, "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.log_every_n_steps=1",
            "study.seeds=[1]"]  # one seed: half the jobs
    done = run("train.py", "-m", "study=smoke", *tiny, root=tmp_path, data_dir=data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("study-smoke").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`idclab.kind` = 'sweep'")
    jobs = client.search_runs([experiment], "tags.`idclab.kind` = 'train'")
    assert parent.info.status == "FINISHED" and len(jobs) == 2
    assert {(r.data.tags["idclab.strategy"], r.data.params["seed"]) for r in jobs} == {("bce", "1"), ("focal", "1")}
    assert "cv2 study.strategy=focal seed=1" in {r.info.run_name for r in jobs}  # named by strategy and seed
    verdict = Path(client.download_artifacts(parent.info.run_id, "study/verdict.csv", str(tmp_path)))
    (row,) = pd.read_csv(verdict).to_dict("records")
    assert row["strategy"] == "focal" and row["verdict"] in ("better", "worse", "not separated")
    assert row["ci_low"] <= row["mean_gain"] <= row["ci_high"]
    assert parent.data.tags["study.verdict.focal"] == row["verdict"] and "# Study smoke: " in done.stdout

    again = run("train.py", "-m", "study=smoke", *tiny, root=tmp_path, data_dir=data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 job(s) already finished, skipped" in again.stdout and "0 job(s) to run" in again.stdout
    assert len(client.search_runs([experiment], "tags.`idclab.kind` = 'train'")) == 2  # nothing new ran
    (reopened,) = client.search_runs([experiment], "tags.`idclab.kind` = 'sweep'")
    assert reopened.info.run_id == parent.info.run_id and reopened.info.status == "FINISHED"
