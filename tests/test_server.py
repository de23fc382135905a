"""A real client against a real `mlflow server` on 127.0.0.1 (SQLite backend, served artifacts)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from idclab.evaluation.evaluate import evaluate
from idclab.training.pipeline import train


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            assert process.poll() is None, process.stderr.read()[-2000:]
            time.sleep(0.5)
    else:
        process.kill()
        raise TimeoutError("mlflow server did not start")
    yield uri
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.slow
def test_training_and_registry_over_http(server, make_cfg, tmp_path):
    cfg = make_cfg(f"logger.tracking_uri={server}", "logger.log_model=true")
    train(cfg)
    client = MlflowClient(server)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # artifacts went through the server
    assert len(client.get_metric_history(run.info.run_id, "val_auprc")) == 2
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert "test/classification_report.json" in listed and "test/calibration.png" in listed
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    evaluate(make_cfg(f"logger.tracking_uri={server}", "register.name=idc-server", config_name="evaluate"))
    version = client.get_model_version_by_alias("idc-server", "champion")
    assert version.run_id == run.info.run_id
