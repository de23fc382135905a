"""Reading an MLflow store without changing it: an experiment, its best training run, a run's checkpoint, a logged
model's checkpoint. Nothing is ever created (no database file, store folder or experiment), and only MLflow's client is
imported, when first needed (no pyfunc, no Lightning): `python evaluate.py predict=[...]` starts with this alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import yaml

if TYPE_CHECKING:  # type names
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

KIND_TAG = "idclab.kind"
SOURCE_RUN_TAG = "idclab.source_run_id"
CHECKPOINT_TAG = "best_checkpoint"
MODEL_URI_TAG = "model_uri"
PARENT_TAG = "mlflow.parentRunId"
PATCH_SPLIT = "patches"  # `split=patches`: patients in training and validation alike, so never a best run


class ModelFormatError(ValueError):
    """An MLflow model that is not an idclab model, or whose files are not where its MLmodel says."""


class RunNotFoundError(LookupError):
    """No MLflow store, experiment, run, metric or run file matches what the user asked for."""


def local_store(tracking_uri: str) -> Path | None:
    """The database file or folder of a local store (SQLite, file store); None for a server."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    parsed = urlparse(tracking_uri)
    return Path(parsed.path) if parsed.scheme in ("", "file") else None


def require_store(tracking_uri: str) -> None:
    """RunNotFoundError when `tracking_uri` names a local store that does not exist (no MLflow import)."""
    local = local_store(tracking_uri)
    if local is not None and not local.exists():
        raise RunNotFoundError(f"no MLflow store at {tracking_uri}; train first (python train.py)")


def store_client(tracking_uri: str) -> MlflowClient:
    """A client of an existing store (`require_store`): reading through it creates nothing."""
    require_store(tracking_uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def open_experiment(tracking_uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """A client and the id of an existing experiment; RunNotFoundError if the store or the experiment is missing.

    Unlike `connect`, nothing is ever created: not a database file, a store folder or an experiment.
    """
    client = store_client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise RunNotFoundError(f"no MLflow experiment named {experiment_name!r} at {tracking_uri} "
                               f"(experiments: {names})")
    return client, experiment.experiment_id


def download_model_checkpoint(client: MlflowClient, model_uri: str, download_dir: str | Path) -> Path:
    """The checkpoint file inside an MLflow model (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/...`),
    downloaded as plain files: the model's code is never run and nothing in it is unpickled."""
    import mlflow.artifacts

    mlflow.set_tracking_uri(client.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(download_dir)))
    try:
        meta = yaml.safe_load((local / "MLmodel").read_text()) if (local / "MLmodel").is_file() else None
    except yaml.YAMLError as error:
        raise ModelFormatError(f"{model_uri} is not an idclab model: its MLmodel is not YAML") from error
    try:
        relative = meta["flavors"]["python_function"]["artifacts"]["checkpoint"]["path"]
    except (TypeError, KeyError):
        relative = None
    if not isinstance(relative, str):  # absent, or not a path
        raise ModelFormatError(f"{model_uri} is not an idclab model (no checkpoint artifact in MLmodel)")
    path = (local / relative).resolve()
    if not path.is_file() or local.resolve() not in path.parents:
        raise ModelFormatError(f"{model_uri}: checkpoint artifact {relative!r} is missing or outside the model")
    return path


def fetch_model(client: MlflowClient, model_uri: str, download_dir: str | Path) -> tuple[Path, Run | None]:
    """The checkpoint inside an MLflow model and, for a registered version or a logged model (`models:/m-ID`, as
    training prints it), the training run it came from. An alias is resolved once, to the version it points at now,
    so both come from that version even if the alias moves meanwhile. A model, alias, version or run that does not
    exist is a RunNotFoundError naming the URI."""
    from mlflow.exceptions import MlflowException

    try:
        source_run = None
        model_id = model_uri.removeprefix("models:/")
        if model_uri.startswith("models:/m-") and not {"/", "@"} & set(model_id):  # a logged model, not a version
            model = client.get_logged_model(model_id)
            source_run = client.get_run(model.source_run_id) if model.source_run_id else None
        elif model_uri.startswith("models:/"):
            name, _, alias = model_id.partition("@")
            if alias:
                version = client.get_model_version_by_alias(name, alias)
            else:
                name, _, number = name.partition("/")
                version = client.get_model_version(name, number)
            model_uri = f"models:/{version.name}/{version.version}"
            source_run = client.get_run(version.run_id) if version.run_id else None
        return download_model_checkpoint(client, model_uri, download_dir), source_run
    except MlflowException as error:
        raise RunNotFoundError(f"no MLflow model {model_uri} at {client.tracking_uri}: "
                               f"{(str(error).splitlines() or [type(error).__name__])[0]}") from error


def find_best_run(client: MlflowClient, experiment_name: str, metric: str, mode: str, tested: bool = False) -> Run:
    """The finished training run of an experiment with the best value of `metric`, among those split by patient
    (a `split=patches` run's validation figures are inflated by patients it trained on) and, if `tested`, those with
    test patients (not a cross-validation of every patient, `split.test=0`)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise RunNotFoundError(f"no MLflow experiment named {experiment_name!r} at {client.tracking_uri}; "
                          "train first (python train.py)")
    order = "DESC" if mode == "max" else "ASC"
    without_metric, leaky, untested, token = [], 0, 0, None
    while True:  # best first, page by page, until a run split by patient has the metric
        page = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`{KIND_TAG}` = 'train' and attributes.status = 'FINISHED'",
                                  order_by=[f"metrics.`{metric}` {order}"], max_results=100, page_token=token)
        for run in page:
            if run.data.params.get("split") == PATCH_SPLIT:
                leaky += 1
            elif tested and run.data.params.get("split.test") in ("0", "0.0"):
                untested += 1
            elif metric in run.data.metrics:
                return run
            else:
                without_metric.append(run)
        token = page.token
        if not token:
            break
    if not without_metric and not leaky and not untested:
        raise RunNotFoundError(f"no finished training run in experiment {experiment_name!r} at {client.tracking_uri}; "
                               "train first (python train.py)")
    if not without_metric and untested:
        raise RunNotFoundError(f"every finished training run of experiment {experiment_name!r} that could be chosen "
                               "has no test patients (a cross-validation of every patient: its out-of-fold report is "
                               "its result); predict with one (predict=[...]) or test another with ckpt_path=PATH")
    if not without_metric:
        raise RunNotFoundError(f"every finished training run of experiment {experiment_name!r} was trained on "
                               f"split={PATCH_SPLIT}, which validates on patients it trained on: none is a best run; "
                               "train with a patient split")
    known = sorted({m for r in without_metric for m in r.data.metrics if not m.startswith("system/")})
    raise RunNotFoundError(f"no finished training run of experiment {experiment_name!r} has metric {metric!r}; "
                           f"its runs have: {', '.join(known)}")


def checkpoint_of(client: MlflowClient, run: Run, download_dir: str | Path) -> Path:
    """A local copy of the run's best checkpoint: the artifact the run logged (the one its `best_checkpoint` tag
    names, when it logged several), downloaded; the tag's local file only for a run that logged none
    (`logger.log_checkpoint=false`). A tag can be changed after the run, its artifacts cannot be replaced."""
    recorded = run.data.tags.get(CHECKPOINT_TAG)
    logged = {Path(a.path).name: a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    if logged:
        chosen = logged.get(Path(recorded).name) if recorded else None
        if chosen is None and len(logged) > 1:
            raise RunNotFoundError(f"run {run.info.run_id} logged checkpoints {', '.join(sorted(logged))} and its "
                                   f"{CHECKPOINT_TAG} tag names none of them: pass ckpt_path=... instead")
        os.makedirs(download_dir, exist_ok=True)
        return Path(client.download_artifacts(run.info.run_id, chosen or next(iter(logged.values())),
                                              str(download_dir)))
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    raise RunNotFoundError(f"run {run.info.run_id} has no checkpoint file or artifact")
