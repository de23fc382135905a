"""Runs that survive: kill and resume, Ctrl-C, parallel sweep jobs, reproducibility, flat memory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT, TINY_DATA, TINY_TRAINER, copy_patches, cut_at_second_epoch_end
from mlflow.tracking import MlflowClient

from idclab.tracking.runs import RunNotFoundError
from idclab.training.pipeline import train
from idclab.training.resume import (
    LAST_CHECKPOINT,
    STATE_FILE,
    ResumeError,
    check_resumed_data,
    find_resume_point,
    write_state,
)

SLOW_EPOCHS = [*TINY_DATA, *TINY_TRAINER, "trainer.max_epochs=6", "trainer.limit_train_batches=8"]


def start_training(root: Path, data_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "IDCLAB_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    return subprocess.Popen([sys.executable, str(PROJECT / "train.py"), *args, f"paths.data_dir={data_dir}"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def only_run(root: Path):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("idc")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return client, runs


def wait_for_epochs(root: Path, epochs: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Poll the store until the run has logged `epochs` validation epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        if list(root.glob("outputs/**/run_state.json")):  # the run exists, so the store is initialised
            client, runs = only_run(root)
            if runs and len(client.get_metric_history(runs[0].info.run_id, "val_auprc")) >= epochs:
                return
        time.sleep(0.2)
    raise TimeoutError("training did not reach the epoch in time")


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_continues_the_same_run(tmp_path, data_dir):
    run_dir = tmp_path / "outputs" / "fixed"
    args = [*SLOW_EPOCHS, f"hydra.run.dir={run_dir}"]
    process = start_training(tmp_path, data_dir, *args)
    wait_for_epochs(tmp_path, 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    client, runs = only_run(tmp_path)
    assert [r.info.status for r in runs] == ["RUNNING"]  # SIGKILL leaves no chance to close it
    # the same command (same output folder) resumes by itself
    process = start_training(tmp_path, data_dir, *args)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    assert "Resuming MLflow run" in output
    client, runs = only_run(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(runs[0].info.run_id, "val_auprc")}
    assert steps == set(range(6))  # the epoch count of an uninterrupted run
    assert runs[0].data.tags["resumed"] == "true" and "test_f1" in runs[0].data.metrics


@pytest.mark.slow
def test_ctrl_c_ends_the_run_killed(tmp_path, data_dir):
    process = start_training(tmp_path, data_dir, *SLOW_EPOCHS, "trainer.max_epochs=1000")  # training at the signal
    wait_for_epochs(tmp_path, 1, process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    _, runs = only_run(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"], output[-3000:]


@pytest.mark.slow
def test_resume_by_run_id(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("trainer.max_epochs=3")
    cut_at_second_epoch_end(monkeypatch)
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg)
    monkeypatch.undo()
    client = MlflowClient(cfg.logger.tracking_uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert failed.info.status == "FAILED"
    fresh = make_cfg(f"resume={failed.info.run_id}", f"paths.output_dir={tmp_path / 'elsewhere'}",
                     "logger.experiment_name=another")  # ignored, with a warning: the run stays in its experiment
    train(fresh)
    assert client.get_experiment_by_name("another") is None
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.info.run_id == failed.info.run_id and run.info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run.info.run_id, "train_loss")} == {0, 1, 2}
    with pytest.raises(ResumeError, match="it finished"):  # nothing to resume
        train(make_cfg(f"resume={run.info.run_id}"))
    client.set_terminated(run.info.run_id, "KILLED")  # as if killed again, after its output folder was removed
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(ResumeError, match="no run_state.json"):
        train(make_cfg(f"resume={run.info.run_id}"))


def test_a_resume_refuses_data_whose_content_changed_since_the_run_started(tmp_path):
    started = {"cache_key": "k1", "content": "c1", "patches": {"train": 8, "val": 2, "test": 2}}
    (tmp_path / "checkpoints").mkdir()
    write_state(tmp_path, "run-a", {"seed": 1}, started)
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"epoch 1")
    point = find_resume_point(tmp_path, "run-a", lambda run_id: ("KILLED", {}))
    assert point.data_fingerprint == started
    check_resumed_data(point, started | {"cache_key": "k2"})  # a fresh copy of the same files: resumed
    with pytest.raises(ResumeError, match=r"cannot resume run run-a: the data changed since it started \(content "
                                          r"c1 -> c2\)") as error:
        check_resumed_data(point, started | {"content": "c2"})
    assert "start a new run" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ResumeError, match=r"patches per split \{'train': 8, 'val': 2, 'test': 2\} -> "):
        check_resumed_data(point, started | {"patches": {"train": 9, "val": 2, "test": 2}})
    (tmp_path / STATE_FILE).write_text(json.dumps({"run_id": "run-a", "config": {"seed": 1},
                                                   "data_fingerprint": "c1"}))  # damaged: refused, in one line
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"epoch 1")
    with pytest.raises(ResumeError, match="run-a: its run_state.json holds no readable data fingerprint"):
        check_resumed_data(find_resume_point(tmp_path, "run-a", lambda run_id: ("KILLED", {})), started)
    (tmp_path / STATE_FILE).write_text(json.dumps({"run_id": "run-a", "config": {"seed": 1},
                                                   "data_fingerprint": {"cache_key": "k0", "patches": {}}}))
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"epoch 1")  # an older record: its cache key tells
    with pytest.raises(ResumeError, match=r"\(cache key k0 -> k1; patches per split \{\} -> "):
        check_resumed_data(find_resume_point(tmp_path, "run-a", lambda run_id: ("KILLED", {})), started)
    write_state(tmp_path, "run-b", {"seed": 2}, started)  # another run's start: written
    assert json.loads((tmp_path / STATE_FILE).read_text())["run_id"] == "run-b"
    (tmp_path / STATE_FILE).write_text(json.dumps({"run_id": "run-a", "config": {"seed": 1}}))  # by an older idclab
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"epoch 1")
    with pytest.warns(UserWarning, match="records no data fingerprint"):
        check_resumed_data(find_resume_point(tmp_path, "run-a", lambda run_id: ("KILLED", {})), started)


def test_a_folder_whose_run_left_the_store_starts_afresh_but_a_finished_run_is_not_resumed_by_id(tmp_path, capsys):
    """A study rerun against a new store finds its job folders' states naming runs that store never had: each job
    starts a new run (as a cross-validation's fold does), where it used to stop with exit 2. Asked by id, a run
    that finished has nothing to resume."""
    (tmp_path / "checkpoints").mkdir()
    write_state(tmp_path, "run-a", {"seed": 1}, {})
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"epoch 1")

    def gone(run_id: str):
        raise RunNotFoundError(f"no MLflow run {run_id!r} at sqlite:///new.db")

    assert find_resume_point(tmp_path, None, gone) is None
    assert "names run run-a, which is not in this MLflow store: starting a new run" in capsys.readouterr().out
    with pytest.raises(RunNotFoundError):  # asked for by id: still an error
        find_resume_point(tmp_path, "run-a", gone)
    with pytest.raises(ResumeError, match="cannot resume run run-a: it finished; start a new run") as error:
        find_resume_point(tmp_path, "run-a", lambda run_id: ("FINISHED", {}))
    assert "\n" not in str(error.value)


def test_a_run_killed_before_its_first_checkpoint_is_ended_when_its_folder_starts_anew(tmp_path):
    """kill -9 (or the OOM killer) in the first epoch leaves the run RUNNING and no checkpoint to resume from: the
    next attempt in that folder starts a new run and ends the old one KILLED (a DDP worker process never does)."""
    write_state(tmp_path, "run-a", {"seed": 1}, {})
    ended = []
    assert find_resume_point(tmp_path, None, lambda run_id: ("RUNNING", {}), abandon=ended.append) is None
    assert ended == ["run-a"]
    assert find_resume_point(tmp_path, None, lambda run_id: ("FAILED", {}), abandon=ended.append) is None
    assert find_resume_point(tmp_path, None, lambda run_id: ("RUNNING", {})) is None  # a worker: nothing ended
    assert ended == ["run-a"]


@pytest.mark.slow
def test_a_killed_run_is_not_resumed_on_changed_data_and_stays_as_it_ended(make_cfg, tmp_path, monkeypatch):
    patches = copy_patches(make_cfg, tmp_path / "patches")
    args = ("data=idc", f"data.root={patches}", "data.batch_size=16", "data.decode_workers=1", *TINY_TRAINER,
            "trainer.max_epochs=3")
    cut_at_second_epoch_end(monkeypatch)
    with pytest.raises(RuntimeError, match="power cut"):
        train(make_cfg(*args, tiny=False))
    monkeypatch.undo()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (cut,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    (a_file, *_) = sorted(patches.rglob("*.png"))
    a_file.write_bytes(next(p for p in sorted(patches.rglob("*.png")) if p.read_bytes() != a_file.read_bytes())
                       .read_bytes())  # one patch's pixels replaced by another's
    with pytest.raises(ResumeError, match="the data changed since it started"):
        train(make_cfg(*args, tiny=False))  # the same command: it would resume
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.info.status == "FAILED"  # as the cut left it: not reopened, not left RUNNING
    assert run.data.metrics == cut.data.metrics and run.info.end_time == cut.info.end_time


@pytest.mark.slow
def test_resume_of_unknown_or_unstarted_run_is_a_clear_error(make_cfg):
    cfg = make_cfg("resume=nope")
    with pytest.raises(LookupError, match="no MLflow store at "):
        train(cfg)
    assert not Path(cfg.logger.tracking_uri.removeprefix("sqlite:///")).exists()  # none is made
    MlflowClient(cfg.logger.tracking_uri).create_experiment("idc")
    with pytest.raises(LookupError, match="no MLflow run 'nope'"):
        train(cfg)


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(make_cfg, tmp_path):
    results = []
    for name in ("first", "second"):
        cfg = make_cfg("sampler=oversample", "augment=stain", f"paths.output_dir={tmp_path / name}",
                       f"logger.tracking_uri=sqlite:///{tmp_path / name / 'mlflow.db'}")
        train(cfg)
        client = MlflowClient(cfg.logger.tracking_uri)
        (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
        timing = {k for k in run.data.metrics if k.startswith("system/") or k == "train_minutes"}  # machine load
        results.append({k: v for k, v in run.data.metrics.items() if k not in timing})
        assert run.data.tags["mlflow.source.git.commit"]
        assert run.data.params["data.cache_key"]
    assert results[0] == results[1]


@pytest.mark.slow
def test_parallel_sweep_jobs_share_one_store_and_cache(tmp_path, data_dir):
    env = {**os.environ, "IDCLAB_ROOT": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    fresh_data = tmp_path / "data"  # no cache yet: both first jobs race to build it
    done = subprocess.run(
        [sys.executable, str(PROJECT / "train.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
         "loss=bce,weighted", "model=ann", *TINY_DATA, *TINY_TRAINER, f"paths.data_dir={fresh_data}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "database is locked" not in done.stderr
    client, everything = only_run(tmp_path)
    (parent,) = [r for r in everything if r.data.tags.get("idclab.kind") == "sweep"]  # one parent, 2 children
    runs = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(everything) == 3 and len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert parent.info.status == "FINISHED" and parent.data.tags["best_child_run_id"] in {r.info.run_id for r in runs}
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2
        assert "test_auprc" in run.data.metrics
    assert len({r.data.params["data.cache_key"] for r in runs}) == 1
    assert len(list((fresh_data / "cache").glob("*.npy"))) == 1


@pytest.mark.slow
def test_memory_does_not_grow_per_epoch(make_cfg, monkeypatch):
    import resource

    import pytorch_lightning as pl

    rss = []

    def current_rss_mb() -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 2**20

    class RecordMemory(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            rss.append(current_rss_mb())

    original = pl.Trainer.__init__

    def with_callback(self, *args, callbacks=(), **kwargs):
        original(self, *args, callbacks=[*callbacks, RecordMemory()], **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", with_callback)
    train(make_cfg("trainer.max_epochs=12", "trainer.limit_train_batches=null", "trainer.limit_val_batches=null"))
    growth = max(rss[3:]) - rss[2]
    assert growth < 40, f"RSS grew {growth:.1f} MB over epochs 3-12: {[round(r) for r in rss]}"
