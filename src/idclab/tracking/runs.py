"""Everything that writes to MLflow (and, with `idclab.tracking.store` for reading, nothing else in the package
talks to it).

A `TrackedRun` owns one MLflow run for the length of a `with` block and always closes it: FINISHED on
success, KILLED on Ctrl-C, FAILED on any other exception, so no run is ever left RUNNING.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import matplotlib.figure
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.types import ParamSchema, ParamSpec
from mlflow.utils.time import get_current_time_millis
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from idclab.fileutil import file_lock
from idclab.termination import CtrlC, raise_if_interrupted
from idclab.tracking.store import (  # noqa: F401  (the reading half, re-exported: callers import them from here)
    CHECKPOINT_TAG,
    KIND_TAG,
    MODEL_URI_TAG,
    PARENT_TAG,
    PATCH_SPLIT,
    SOURCE_RUN_TAG,
    ModelFormatError,
    RunNotFoundError,
    checkpoint_of,
    download_model_checkpoint,
    fetch_model,
    find_best_run,
    local_store,
    open_experiment,
    store_client,
)

log = logging.getLogger(__name__)
MAX_PARAM_LENGTH = 6000
BATCH = 100
NOTE_TAG = "mlflow.note.content"  # a run's description in the UI (markdown)
TRAIN_MINUTES = "train_minutes"  # the epochs' time (training and validation) over a run's attempts
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # how MLflow 3's UI opens an experiment: on its training runs with
MODEL_TRAINING = "custom_model_development"    # this value (the GenAI traces view without it)
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui --host 127.0.0.1` serves a local store
UI_TRAINING = "workflowType=machine_learning"  # MLflow 3.17's UI opens an experiment as its GenAI/Model training
# toggle says (GenAI until the user switches), not as its experimentKind tag: links ask for the training view


def is_local_database(tracking_uri: str) -> bool:
    """True for a SQLite (or other local database) store, whose artifact root we choose ourselves."""
    return tracking_uri.startswith("sqlite:")


def connect(tracking_uri: str, experiment_name: str, artifact_location: str | None = None
            ) -> tuple[MlflowClient, str]:
    """A client for `tracking_uri` and the id of `experiment_name`, created if missing.

    With a local database store the experiment's artifacts go to `artifact_location` (the project's
    `mlruns/`), whatever the working directory; a server decides its own artifact store.
    """
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        # opening the store creates or migrates the schema: parallel sweep jobs must take turns
        with file_lock(database.with_name(database.name + ".lock")):
            client = MlflowClient(tracking_uri=tracking_uri)
            experiment = client.get_experiment_by_name(experiment_name)
    else:
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # created before the project tagged its experiments
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return client, experiment.experiment_id
    location = None
    if artifact_location and is_local_database(tracking_uri):
        location = Path(artifact_location).expanduser().resolve().as_uri()
    try:
        return client, client.create_experiment(experiment_name, artifact_location=location,
                                                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except Exception:  # another sweep job created it first
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise
        return client, experiment.experiment_id


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The address of a run in the MLflow UI, in its Model training view: on `mlflow ui` (UI_ADDRESS) for a local
    store, on the server itself for an http(s) tracking URI; None for other stores (Databricks, ...)."""
    if local_store(tracking_uri) is not None:
        base = UI_ADDRESS
    elif tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri.rstrip("/")
    else:
        return None
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{UI_TRAINING}"


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves a local store's UI on UI_ADDRESS (None for a server: it serves its own)."""
    if local_store(tracking_uri) is None:
        return None
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"}, values as strings cut to MLflow's parameter length."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def git_state(folder: str | Path) -> dict[str, str]:
    """The git commit of `folder` and whether the work tree has uncommitted changes (if it is a checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower()}


def environment() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("idclab", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "mlflow",
                    "hydra-core", "numpy", "scikit-learn", "imbalanced-learn", "albumentations", "pillow", "timm",
                    "safetensors"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def pip_requirements(versions: Mapping[str, str]) -> list[str]:
    """The served model's pip requirements: the installed versions of the packages in `versions` (as
    `environment` gives them), without local build labels (`2.14.1+cu130` is not on PyPI)."""
    return [f"{name}=={v.split('+')[0]}" for name, v in versions.items()
            if name not in ("python", "platform", "idclab") and v != "not installed"]


class SystemMetrics(SystemMetricsMonitor):
    """MLflow's system-metrics monitor (CPU, memory, disk, network, GPU every `sampling_interval` s), which also
    logs a run shorter than one interval: MLflow's publishes nothing before a whole interval has passed, so such a
    run gets one sample at its end (CPU use since the run started, memory and disk then)."""

    published = False

    def publish_metrics(self, metrics: dict[str, float]) -> None:
        super().publish_metrics(metrics)
        self.published = True

    def finish(self) -> None:
        super().finish()
        if self.published:
            return
        try:
            for monitor in self.monitors:
                monitor.clear_metrics()
            self.collect_metrics()
            self.publish_metrics(self.aggregate_metrics())
            self.mlflow_logger.flush()
        except Exception as error:  # system metrics never fail a run
            log.warning("could not log the run's system metrics: %s", error)


class TrackedRun:
    """One MLflow run, open for the duration of a `with` block."""

    def __init__(self, client: MlflowClient, experiment_id: str, run_name: str, tags: Mapping[str, str],
                 resume_run_id: str | None = None, parent_run_id: str | None = None,
                 system_metrics: float | None = 10.0):
        self.client = client
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.tags = dict(tags) | ({PARENT_TAG: parent_run_id} if parent_run_id else {})
        self.run_id = resume_run_id or ""
        self.system_metrics = system_metrics
        self._monitor: SystemMetrics | None = None

    def __enter__(self) -> TrackedRun:
        raise_if_interrupted()  # after a SIGTERM or a lost Ctrl-C no run opens
        resumed = bool(self.run_id)
        if resumed:  # continue an interrupted run: same run, metrics carry on
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(self.experiment_id, run_name=self.run_name,
                                                 tags=self.tags).info.run_id
        try:  # the run is RUNNING from here: a failure before the `with` block still ends it
            if resumed:  # its other tags are those of the command that started it (whose config it goes on with)
                self.set_tags({"resumed": "true"} | {k: v for k, v in self.tags.items() if k == PARENT_TAG})
            if log.isEnabledFor(logging.INFO):  # the experiment by name: one query
                log.info("MLflow run %s (%s) in experiment %s", self.run_name, self.run_id,
                         self.client.get_experiment(self.experiment_id).name)
            if self.system_metrics:  # CPU, memory, disk, network and (with pynvml) GPU, every `system_metrics` s
                self._monitor = SystemMetrics(self.run_id, sampling_interval=self.system_metrics,
                                              resume_logging=resumed, tracking_uri=self.client.tracking_uri)
                self._monitor.start()
        except BaseException:
            self._monitor = None
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is None and CtrlC.received:  # a Ctrl-C Python lost on the way: the run did not finish
            self.close("KILLED")
            raise KeyboardInterrupt
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into exit(1)
            status = "KILLED"
        else:
            status = "FAILED"
            self.set_tags({"error": f"{exc_type.__name__}: {exc}"[:5000]})
        self.close(status)
        return False

    def close(self, status: str) -> None:
        """Stop the system-metrics monitor and end the run with `status` (FINISHED, FAILED or KILLED)."""
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        self.client.set_terminated(self.run_id, status)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def rename(self, name: str) -> None:
        """Give the open run another name (what it turned out to do)."""
        self.run_name = name
        self.client.set_tag(self.run_id, "mlflow.runName", name)

    def describe(self, markdown: str) -> None:
        """Set the run's description, shown on its page and in the runs table of the MLflow UI."""
        self.set_tags({NOTE_TAG: markdown})

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = get_current_time_millis()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[start:start + BATCH])

    def log_missing_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log those of `metrics` with no value at `step` yet (to finish a write that was cut short)."""
        missing = {key: value for key, value in metrics.items()
                   if all(m.step != step for m in self.client.get_metric_history(self.run_id, key))}
        self.log_metrics(missing, step)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.client.log_text(self.run_id, json.dumps(obj, indent=2, default=str), artifact_file)

    def log_figure(self, figure: matplotlib.figure.Figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_datasets(self, splits: Mapping[str, pd.DataFrame], source: str) -> None:
        """Each split's patch table as an MLflow dataset input (name, digest of the table, source, context)."""
        inputs = []
        for split, frame in splits.items():
            digest = pd.util.hash_pandas_object(frame, index=False).sum().item() % 16**12
            dataset = from_pandas(frame, source=source, targets="label", name=f"{split}", digest=f"{digest:012x}")
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", split)]))
        for attempt in range(3):  # parallel jobs of a sweep may insert the same dataset at once (SQLite store)
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                return
            except MlflowException as error:
                if "UNIQUE constraint failed" not in str(error) or attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))  # the other job's row now exists: the retry links to it

    def lightning_logger(self, prefix: str = "") -> MLflowEpochLogger:
        """A Lightning logger writing each epoch's metrics into this run, with the epoch as step (and each key
        after `prefix`, e.g. `member_1/` for a seed ensemble's members)."""
        return MLflowEpochLogger(self, prefix)


class MLflowEpochLogger(Logger):
    """Lightning logger that forwards metrics to a `TrackedRun` (rank zero only).

    Parameters are logged by the training code from the resolved config, not from Lightning's
    hyperparameters, so `log_hyperparams` records nothing. While `holding` (training, see
    `resume.LastCheckpoint`), metrics wait in `held` until `commit` once their epoch's checkpoint is
    saved, and metrics of an epoch already committed are dropped: each epoch lands in MLflow once.
    """

    def __init__(self, run: TrackedRun, prefix: str = ""):
        super().__init__()
        self.run = run
        self.prefix = prefix
        self.holding = False
        self.held: dict[int, dict[str, float]] = {}
        self.committed = -1  # the last epoch whose metrics are in MLflow

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run.run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Parameters come from the resolved config (see `TrackedRun.log_params`)."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {f"{self.prefix}{key}": value for key, value in metrics.items()}
        epoch = values.pop(f"{self.prefix}epoch", None)
        step = int(epoch) if epoch is not None else int(step or 0)
        if not self.holding:
            self.run.log_metrics(values, step=step)
        elif step > self.committed:
            self.held.setdefault(step, {}).update(values)

    @rank_zero_only
    def commit(self, epoch: int) -> None:
        """Write the metrics held for epochs up to `epoch`, whose checkpoint is saved."""
        for step in sorted(s for s in self.held if s <= epoch):
            self.run.log_metrics(self.held.pop(step), step=step)
        self.committed = max(self.committed, epoch)

    @rank_zero_only
    def recover(self, epoch: int, held: Mapping[int, Mapping[str, float]]) -> None:
        """On resuming from the checkpoint of `epoch`, write those of its `held` metrics MLflow lacks."""
        for step, metrics in sorted(held.items()):
            self.run.log_missing_metrics(metrics, step)
        self.committed = epoch


def run_status(client: MlflowClient, run_id: str) -> tuple[str, dict[str, str]]:
    """An MLflow run's status and tags; RunNotFoundError if there is no such run (or it was deleted)."""
    try:
        run = client.get_run(run_id)
    except Exception as error:
        raise RunNotFoundError(f"no MLflow run {run_id!r} at {client.tracking_uri}") from error
    if run.info.lifecycle_stage == "deleted":
        raise RunNotFoundError(f"MLflow run {run_id!r} at {client.tracking_uri} is deleted")
    return run.info.status, dict(run.data.tags)


def experiment_of(client: MlflowClient, run_id: str) -> str:
    """The id of the experiment a run is in."""
    return client.get_run(run_id).info.experiment_id


def end_abandoned(client: MlflowClient, run_id: str) -> None:
    """End KILLED a run left RUNNING by a process killed before its first checkpoint (a new run replaces it)."""
    client.set_tag(run_id, "error", "killed before its first checkpoint; a new run started in its output folder")
    client.set_terminated(run_id, "KILLED")


def finish_run(client: MlflowClient, run_id: str) -> None:
    """Mark a run whose work is done FINISHED (one cut off after its last result was recorded)."""
    if client.get_run(run_id).info.status != "FINISHED":
        client.set_terminated(run_id, "FINISHED")


def sweep_children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """The child runs of a sweep's parent run, one row each (MLflow's DataFrame: run_id, status, params.*, ...)."""
    return search_runs(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}'")


def search_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> pd.DataFrame:
    """Every run of an experiment matching `filter_string`, newest first, as MLflow's DataFrame
    (run_id, status, start_time, params.*, metrics.*, tags.*)."""
    mlflow.set_tracking_uri(client.tracking_uri)
    return mlflow.search_runs([experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"],
                              output_format="pandas")


def training_runs(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> pd.DataFrame:
    """The finished training runs of an experiment (the children of one sweep's parent run, if given)."""
    query = f"tags.`{KIND_TAG}` = 'train' and attributes.status = 'FINISHED'"
    if parent_run_id:
        query += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    return search_runs(client, experiment_id, query)


def sweep_runs(client: MlflowClient, experiment_id: str, folder: str | None = None) -> pd.DataFrame:
    """The sweeps' parent runs of an experiment (of the sweep writing into `folder`, if given), newest first."""
    query = f"tags.`{KIND_TAG}` = 'sweep'"
    if folder:
        query += f" and tags.sweep = '{folder}'"
    return search_runs(client, experiment_id, query)


def synthetic_example(count: int = 2, seed: int = 0) -> np.ndarray:
    """A model input example that holds no patient's pixels: random pink-purple noise, N x 50 x 50 x 3 uint8."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 120, 180], dtype=np.int16)
    return np.clip(base + rng.integers(-60, 60, (count, 50, 50, 3)), 0, 255).astype(np.uint8)


def served_signature(example: np.ndarray, output: pd.DataFrame) -> ModelSignature:
    """The served model's signature: patches in, `output`'s columns out, and the optional params `patient`,
    `x`, `y` (one value per patch; empty by default, when every patch is scored alone)."""
    from idclab.tracking.pyfunc_model import POSITIONS

    inferred = infer_signature(example, output)
    return ModelSignature(inferred.inputs, inferred.outputs,
                          params=ParamSchema([ParamSpec(name, kind, [], (-1,)) for name, kind in POSITIONS.items()]))


def log_model(run: TrackedRun, checkpoint: str | Path) -> str:
    """Log `checkpoint` as the run's MLflow pyfunc model, from code (`idclab/tracking/pyfunc_model.py`, nothing
    pickled), with signature and a synthetic input example; return its URI."""
    from idclab.config.build import load_classifier
    from idclab.tracking import pyfunc_model

    example = synthetic_example()
    model = pyfunc_model.IDCPyfuncModel()
    model.classifier = load_classifier(checkpoint)
    signature = served_signature(example, model.predict(None, example))
    requirements = pip_requirements(environment())
    mlflow.set_tracking_uri(run.client.tracking_uri)
    with mlflow.start_run(run_id=run.run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=pyfunc_model.__file__,
                                       artifacts={"checkpoint": str(checkpoint)}, signature=signature,
                                       input_example=example, pip_requirements=requirements)
    run.client.update_run(run.run_id, status="RUNNING")  # the fluent run context closed it; we are not done
    run.set_tags({MODEL_URI_TAG: info.model_uri})
    return info.model_uri


def logged_model_of(client: MlflowClient, run: Run) -> str:
    """The URI of the model a training run logged, as its `model_uri` tag names it, checked against the store: a tag
    anyone may edit must name a model of that very run (RunNotFoundError otherwise)."""
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise RunNotFoundError(f"run {run.info.run_id} has no logged model (train with logger.log_model=true)")
    try:
        source = client.get_logged_model(model_uri.removeprefix("models:/")).source_run_id
    except MlflowException:
        source = None
    if source != run.info.run_id:
        raise RunNotFoundError(f"run {run.info.run_id}'s {MODEL_URI_TAG} tag names {model_uri}, which is not a model "
                               "that run logged: not registered")
    return model_uri


def register_model(client: MlflowClient, run: Run, name: str, alias: str) -> int:
    """Register a training run's logged model under `name` and point `alias` at the new version."""
    model_uri = logged_model_of(client, run)
    mlflow.set_tracking_uri(client.tracking_uri)
    version = mlflow.register_model(model_uri, name)
    client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


