"""Where an interrupted training run can continue from.

Every run writes `run_state.json` (its MLflow run id, resolved config and data fingerprint) into its output folder,
and `LastCheckpoint` keeps `checkpoints/last.ckpt` up to date at the end of every epoch. A run killed mid-epoch
resumes from the last completed epoch, in the same MLflow run, with the config it started with, on the data it
started on (the same content: a fresh copy of the same files at the same path will do); a seed ensemble keeps its
finished members and a cross-validation its finished folds.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from idclab.data.datamodule import fingerprint_changes
from idclab.fileutil import write_json
from idclab.tracking.inputs import recorded_start_weights, start_weights
from idclab.tracking.runs import KIND_TAG, PARENT_TAG, MLflowEpochLogger, RunNotFoundError, flatten
from idclab.training.plan import lookup as setting

STATE_FILE = "run_state.json"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
OUTPUT_DIR_TAG = "output_dir"
FOLD_KIND = "cv_fold"  # the kind tag of a cross-validation fold's run


class ResumeError(RuntimeError):
    """A run cannot resume: nothing to resume from, another run's folder, or data changed since it started."""


@dataclass
class ResumePoint:
    """An interrupted run: its MLflow id, output folder, last checkpoint, resolved config and data fingerprint."""

    run_id: str
    output_dir: Path
    checkpoint: Path
    config: dict[str, Any]
    data_fingerprint: dict[str, Any] | None = None  # None: a state written before fingerprints were recorded


def write_state(output_dir: Path, run_id: str, config: dict[str, Any], data_fingerprint: dict[str, Any] | None
                ) -> None:
    """Record which MLflow run an output folder belongs to, its config and its data (`PreparedData.record`), as the
    run starts. A resumed run leaves the file as it is, so that its time stays the run's start (see
    `written_since_start`)."""
    state = read_state(output_dir)
    if state is None or state[0] != run_id:
        write_json(output_dir / STATE_FILE, {"run_id": run_id, "config": config, "data_fingerprint": data_fingerprint})


def starts_more(config: dict[str, Any]) -> bool:
    """Whether a resumed run may still start models from its starting weights (folds or seed-ensemble members)."""
    return bool(setting(config, "cv.folds")) or (setting(config, "ensemble.members") or 1) > 1


def starting_weights(config: dict[str, Any], recorded: Mapping[str, str] | None) -> dict[str, str]:
    """The starting weights as params and tags: read now for a fresh run (`recorded` None); for a resumed one, what
    its tags `recorded`, after a ResumeError if a file its folds or members still to start would read has changed."""
    if recorded is None:
        return start_weights(config)
    weights = recorded_start_weights(recorded)
    if starts_more(config) and config["model"].get("weights"):
        now, then = start_weights(config)["model.weights.sha256"], weights.get("model.weights.sha256", "")
        if then and now != then:
            raise ResumeError(f"model.weights={config['model']['weights']} changed since the run started (sha256 "
                              f"{then[:12]}..., now {now[:12]}...): the folds or members it has still to start would "
                              "start from other weights; put the file it started from back")
    return weights


def has_state(output_dir: Path) -> bool:
    """Whether `output_dir` holds a run's state file: a run started there, which this one may resume."""
    return (output_dir / STATE_FILE).is_file()


def read_state(output_dir: Path) -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
    """The (run id, config, data fingerprint) recorded in an output folder, or None."""
    path = output_dir / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return state["run_id"], state["config"], state.get("data_fingerprint")


def check_resumed_data(resume: ResumePoint, now: dict[str, Any]) -> None:
    """ResumeError unless the resumed run started on the data fingerprinted `now` (the same content and patches per
    split: the cache key may differ); only a warning for a state that records no fingerprint."""
    started = resume.data_fingerprint
    if started is None:
        warnings.warn(f"the state of run {resume.run_id} records no data fingerprint (written by an older idclab): "
                      "resuming without checking that the data is the one it started on", stacklevel=2)
    elif not isinstance(started, dict):
        raise ResumeError(f"cannot resume run {resume.run_id}: its {STATE_FILE} holds no readable data fingerprint; "
                          "start a new run")
    elif changes := fingerprint_changes(started, now):
        raise ResumeError(f"cannot resume run {resume.run_id}: the data changed since it started "
                          f"({'; '.join(changes)}); restore the data, or start a new run (without resume=, in another "
                          "output folder)")


def find_resume_point(output_dir: Path, requested_run_id: str | None,
                      lookup: Callable[[str], tuple[str, dict[str, str]]], parent_run_id: str | None = None,
                      abandon: Callable[[str], None] | None = None) -> ResumePoint | None:
    """Decide whether to resume; `lookup(run_id)` gives an MLflow run's (status, tags).

    With `requested_run_id` (`resume=RUN_ID`), that run's output folder (tag `output_dir`) must hold
    its state file and a last checkpoint, or ResumeError is raised. Without it, a run whose output
    folder is reused (same `hydra.run.dir`) resumes automatically if its MLflow run did not finish.
    A cross-validation fold is resumed by its cross-validation, which passes `parent_run_id`: only a child of
    that run resumes there; anywhere else ResumeError names the cross-validation to resume. A run the folder's state
    names that is still RUNNING without a checkpoint (killed in its first epoch) is passed to `abandon`, if given.
    """
    folder = output_dir
    if requested_run_id:
        status, tags = lookup(requested_run_id)
        if status == "FINISHED":
            raise ResumeError(f"cannot resume run {requested_run_id}: it finished; start a new run (without resume=)")
        refuse_fold(requested_run_id, tags)
        folder = Path(tags.get(OUTPUT_DIR_TAG, output_dir))
    state = read_state(folder)
    checkpoint = last_checkpoint(folder)
    if requested_run_id:
        if state is None or state[0] != requested_run_id:
            raise ResumeError(f"cannot resume run {requested_run_id}: no {STATE_FILE} for it in {folder}")
        if checkpoint is None:
            raise ResumeError(f"cannot resume run {requested_run_id}: {folder} holds no last checkpoint of it "
                              "(it stopped before finishing its first epoch); start it again")
    elif state is None:
        return None
    elif checkpoint is None:  # stopped in its first epoch: nothing to resume; a new run starts in the folder
        if abandon is not None:
            with contextlib.suppress(RunNotFoundError):
                if lookup(state[0])[0] == "RUNNING":
                    abandon(state[0])
        return None
    else:
        try:
            status, tags = lookup(state[0])
        except RunNotFoundError:  # another store (a new one, or MLFLOW_TRACKING_URI changed), or the run deleted
            print(f"The state in {folder} names run {state[0]}, which is not in this MLflow store: starting a new "
                  "run there")
            return None
        if status == "FINISHED" or (parent_run_id and tags.get(PARENT_TAG) != parent_run_id):
            return None
        if not parent_run_id:
            refuse_fold(state[0], tags)
    return ResumePoint(run_id=state[0], output_dir=folder, checkpoint=checkpoint, config=state[1],
                       data_fingerprint=state[2])


def refuse_fold(run_id: str, tags: dict[str, str]) -> None:
    """ResumeError if `run_id` is a cross-validation fold (its cross-validation resumes it)."""
    if tags.get(KIND_TAG) == FOLD_KIND:
        parent = tags.get(PARENT_TAG, "?")
        raise ResumeError(f"run {run_id} is a fold of cross-validation run {parent}: resume that one "
                          f"(resume={parent}, or the same command in its output folder)")


def ignored_overrides(requested: dict[str, Any], resumed: dict[str, Any]) -> list[str]:
    """`key=value` of the requested config that differ from the resumed run's (output paths aside)."""
    new, old = flatten(requested), flatten(resumed)
    return [f"{key}={value}" for key, value in sorted(new.items())
            if old.get(key) != value and not key.startswith("paths.") and key != "resume"]


def last_checkpoint(folder: Path) -> Path | None:
    """The newest last checkpoint of the run recorded in `folder`: its own, a seed ensemble member's or a
    cross-validation fold's (None if none was written since the run started: files of an earlier run in a reused
    folder do not count)."""
    patterns = ("member_*", "fold_*", "fold_*/member_*")
    candidates = [folder / LAST_CHECKPOINT, *(path for pattern in patterns
                                              for path in folder.glob(f"{pattern}/{LAST_CHECKPOINT}"))]
    written = [path for path in candidates if written_since_start(path, folder)]
    return max(written, key=lambda path: path.stat().st_mtime_ns, default=None)


def written_since_start(path: Path, folder: Path) -> bool:
    """Whether `path` exists and was written after the run recorded in `folder` started (its state file)."""
    state = folder / STATE_FILE
    return path.is_file() and state.is_file() and path.stat().st_mtime_ns >= state.stat().st_mtime_ns


class LastCheckpoint(Checkpoint):
    """Writes `last.ckpt` at the end of every training epoch, then commits the epoch's metrics to MLflow.

    (Lightning 2.6's `ModelCheckpoint(save_last=True)` rewrites it only when the best checkpoint improves.)
    As a `Checkpoint` it runs after the module's epoch-end hook and after the best-checkpoint callback. The
    MLflow logger holds an epoch's metrics; they are saved inside the checkpoint and written once it is on
    disk. A run killed before the save repeats the epoch and logs it then; one killed after writes the
    saved metrics MLflow lacks on resume: each epoch lands in MLflow exactly once.
    It also saves whether the fit was stopping (early stopping decided it in that epoch, which Lightning does not
    save): a run that fails after such a fit resumes with its fit done, not with more epochs.
    """

    def __init__(self, checkpoint_dir: Path):
        self.path = checkpoint_dir / LAST_CHECKPOINT.name
        self.logger: MLflowEpochLogger | None = None
        self.stopping = False  # the fit was stopping when the last checkpoint was saved

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loggers = trainer.loggers if stage == "fit" else []  # predicting from a checkpoint restores nothing
        self.logger = next((lg for lg in loggers if isinstance(lg, MLflowEpochLogger)), None)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.logger:
            self.logger.holding = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopping:  # restored: the fit had ended before the run failed, so the loop ends before any epoch
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.stopping = trainer.should_stop
        if self.logger:  # Lightning logs the train metrics after this hook: too late for the checkpoint
            train_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train_")}
            self.logger.log_metrics({**train_metrics, "epoch": epoch})
        if not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path, weights_only=False)  # the full training state, to resume
        if self.logger:
            self.logger.commit(epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.logger:
            self.logger.commit(trainer.current_epoch)
            self.logger.holding = False

    def state_dict(self) -> dict[str, Any]:
        return {"stopping": self.stopping, **({"held": dict(self.logger.held)} if self.logger else {})}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stopping = bool(state_dict.get("stopping", False))
        if self.logger and state_dict.get("held"):
            self.logger.recover(max(state_dict["held"]), state_dict["held"])
