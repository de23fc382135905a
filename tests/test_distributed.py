"""Lightning DDP on CPU (2 processes, gloo): one MLflow run, metrics close to a single-process run."""

from __future__ import annotations

import pytest
from conftest import TINY_DATA
from mlflow.tracking import MlflowClient
from test_reliability import start_training

COMMON = [*TINY_DATA, "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "logger.log_model=false",
          "trainer.accelerator=cpu", "threshold=fixed"]
# on validation/test AUROC and the last training loss: batches are split differently across processes, and
# the validation loss of a batch-norm model this early is too unstable to compare
TOLERANCE = 0.1


def finished_run(root):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    return client, runs


@pytest.mark.slow
def test_ddp_two_processes_log_one_run_that_agrees_with_one_process(tmp_path, data_dir):
    results = {}
    # the same global batch: 2 processes x 8 patches, or 1 process x 16
    for name, args in (("ddp", ["trainer=ddp", "trainer.devices=2", "data.batch_size=8"]),
                       ("single", ["trainer.devices=1", "data.batch_size=16"])):
        root = tmp_path / name
        root.mkdir()
        process = start_training(root, data_dir, *COMMON, *args)
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
        client, runs = finished_run(root)
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one run per job, not one per rank
        assert len(client.get_metric_history(runs[0].info.run_id, "val_loss")) == 3
        results[name] = runs[0].data.metrics
    for metric in ("test_auroc", "val_auroc", "train_loss"):
        assert abs(results["ddp"][metric] - results["single"][metric]) < TOLERANCE, metric
