"""Lightning DDP on CPU (2 processes, gloo): one MLflow run, metrics close to a single-process run."""

from __future__ import annotations

import pytest
from conftest import TINY_DATA
from mlflow.tracking import MlflowClient
from test_reliability import start_training

COMMON = [*TINY_DATA, "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "logger.log_model=false",
          "trainer.accelerator=cpu", "threshold=fixed"]
# on validation/test AUROC and loss and the last training loss: the two runs split each global batch differently
# (and weigh an epoch's last, partial batch differently), so they agree closely, not exactly
TOLERANCE = 0.05


def finished_run(root):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    return client, runs


@pytest.mark.slow
def test_ddp_two_processes_log_one_run_that_agrees_with_one_process(tmp_path, data_dir):
    results = {}
    # the same initial weights and global batches (2 processes x 8 patches, or 1 process x 16, from one seeded
    # shuffle) through a model without batch norm, dropout or augmentation, at a learning rate small enough that
    # training stays near the start (on 8 tiny slides, runs that move far diverge whatever the split of the work):
    # the metrics, gathered across processes, must then agree
    deterministic = ["model=ann", "model.dropout=0", "augment=none", "optim.lr=1e-5"]
    for name, args in (("ddp", ["trainer=ddp", "trainer.devices=2", "data.batch_size=8"]),
                       ("single", ["trainer.devices=1", "data.batch_size=16"])):
        root = tmp_path / name
        root.mkdir()
        process = start_training(root, data_dir, *COMMON, *deterministic, *args)
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
        client, runs = finished_run(root)
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one run per job, not one per rank
        assert len(client.get_metric_history(runs[0].info.run_id, "val_loss")) == 3
        results[name] = runs[0].data.metrics
    for metric in ("test_auroc", "val_auroc", "val_loss", "train_loss"):
        assert abs(results["ddp"][metric] - results["single"][metric]) < TOLERANCE, metric


@pytest.mark.slow
def test_ddp_validation_counts_every_patch_once_like_one_process(tmp_path, data_dir):
    import json
    import subprocess
    import sys

    import numpy as np
    from conftest import PROJECT

    results = {}
    for devices in (1, 2):
        out = tmp_path / str(devices)
        out.mkdir()
        done = subprocess.run([sys.executable, str(PROJECT / "tests" / "ddp_probe.py"), str(out), str(devices),
                               str(data_dir)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[devices] = (dict(np.load(out / "gathered.npz")), json.loads((out / "metrics.json").read_text()))
    (one, one_metrics), (two, two_metrics) = results[1], results[2]
    assert two["seen"] > len(two["rows"]) == one["seen"]  # the distributed sampler repeated patches; counted once
    assert np.array_equal(two["rows"], one["rows"]) and np.array_equal(two["targets"], one["targets"])
    assert np.allclose(two["probs"], one["probs"], atol=1e-6)
    assert set(two_metrics) == set(one_metrics) and "val_loss" in one_metrics
    for name, value in one_metrics.items():
        assert two_metrics[name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.slow
def test_optuna_search_maximises_the_returned_validation_score(tmp_path, data_dir):
    import yaml

    process = start_training(tmp_path, data_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                             *TINY_DATA, "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                             "logger.log_model=false")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    everything = client.search_runs([client.get_experiment_by_name("hparams_search").experiment_id])
    (parent,) = [r for r in everything if r.data.tags.get("idclab.kind") == "sweep"]  # the trials are its children
    runs = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(everything) == 3 and len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    (results,) = tmp_path.glob("multirun/*/*/optimization_results.yaml")
    best = yaml.safe_load(results.read_text())
    assert best["best_value"] == pytest.approx(max(r.data.metrics["best_val_auprc"] for r in runs))


@pytest.mark.parametrize(("environment", "worker"), [
    ({}, False),
    ({"NODE_RANK": "1"}, True),   # a node started by hand (MASTER_ADDR, NODE_RANK): Lightning has not ranked it yet
    ({"GROUP_RANK": "2"}, True),  # torchelastic's name for the node rank
    ({"NODE_RANK": "0"}, False),
])
def test_only_the_first_process_of_the_first_node_tracks(monkeypatch, environment, worker):
    from idclab.training.trainer import is_worker_process
    for name in ("NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert is_worker_process() == worker


def test_cluster_and_gpu_configs_compose(make_cfg):
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "paths.root=/tmp", "paths.output_dir=/tmp/o"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node
    with initialize_config_dir(str(CONF), version_base="1.3"):
        one = compose("train", overrides=["hydra/launcher=slurm_1gpu", "paths.root=/tmp", "paths.output_dir=/tmp/o",
                                          "logger.tracking_uri=http://tracking:5000"], return_hydra_config=True)
    launcher = one.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 1, 1) == (1, one.trainer.devices, 1)
    assert launcher.setup == ["export MLFLOW_TRACKING_URI=http://tracking:5000"]  # the jobs log where the parent does
    assert make_cfg().trainer.devices == 1  # a plain run never becomes DDP on a multi-GPU machine
    gpu = make_cfg("trainer=gpu")
    assert (gpu.trainer.accelerator, gpu.trainer.devices, gpu.trainer.precision) == ("gpu", 1, "bf16-mixed")
    ddp = make_cfg("trainer=ddp")
    assert ddp.trainer.strategy == "ddp" and ddp.trainer.num_nodes == 1
    from idclab.config.validation import check_trainer

    check_trainer(ddp.trainer)  # Lightning builds it: DDP over 2 CPU processes is a real setting here too


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_with_mixed_precision(make_cfg):
    from idclab.training.pipeline import train

    cfg = make_cfg("trainer=gpu")
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.info.status == "FINISHED"
