"""Tracking details that need no training: dataset inputs under concurrent sweep jobs."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from idclab.tracking import TrackedRun

SPLITS = {"train": pd.DataFrame({"patient": ["8863"], "label": [1]})}


class RacingClient:
    """Stands in for MlflowClient: `log_inputs` fails `failures` times with `message`, then records the call."""

    def __init__(self, failures: int, message: str):
        self.failures, self.message, self.logged = failures, message, []

    def log_inputs(self, run_id: str, datasets: list) -> None:
        if self.failures:
            self.failures -= 1
            raise MlflowException(self.message)
        self.logged.append((run_id, [d.dataset.name for d in datasets]))


def test_a_dataset_inserted_by_a_parallel_job_is_linked_on_retry():
    client = RacingClient(1, "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
    run = TrackedRun(client, "1", "job", {}, resume_run_id="r1")
    run.log_datasets(SPLITS, source="/data")
    assert client.logged == [("r1", ["train"])]


def test_other_tracking_errors_are_not_retried():
    client = RacingClient(1, "RESOURCE_DOES_NOT_EXIST: no run r1")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        TrackedRun(client, "1", "job", {}, resume_run_id="r1").log_datasets(SPLITS, source="/data")
    assert client.logged == []
