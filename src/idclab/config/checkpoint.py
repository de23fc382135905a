"""A checkpoint file is data: read weights-only, its saved config and settings checked before anything is built
(the refusals `idclab.config.build.load_classifier` and `load_predictor` share), and for prediction the model it
describes rebuilt as plain torch (`idclab.classifier.predictor`), without Lightning or the training code.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from idclab.classifier.predictor import ENSEMBLE_KEY, EnsemblePredictor, OperatingPoint, Predictor
from idclab.config import registry
from idclab.config.validation import check_saved_config
from idclab.data.neighbourhood import input_channels, views_of
from idclab.data.split import SPLITS
from idclab.scoring.context import MAX_RADIUS
from idclab.scoring.thresholds import METHODS as THRESHOLD_METHODS


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded into the model its config describes."""


CONTEXT_KEYS = ("context_weight", "context_radius", "patch_threshold")
PREDICTION_GROUPS = ("model", "stain")  # what prediction builds; the other groups are checked by name
TRAINING_ONLY = ("criterion.",)  # state dict entries of what prediction does not build (a loss's class weights)


def read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file's mapping, read with `torch.load(weights_only=True)`: no object is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(unloadable(path, error)) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} was not written by idclab (not a checkpoint mapping)")
    return path, checkpoint


def unloadable(path: Path, error: Exception) -> str:
    """Why a weights-only load of `path` failed, in one line: a pickled object it holds (never loaded: torch's own
    message suggests loading it without `weights_only`, which would run its code), or torch's first line."""
    pickled = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if pickled:
        return f"{path} holds a pickled object ({pickled.group(1)}), which idclab never loads: not an idclab checkpoint"
    reason = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{path} is not a checkpoint (torch.load: {type(error).__name__} {reason})"


def ensemble_parts(checkpoint: dict[str, Any], path: Path) -> tuple[list[Any], float, dict[str, Any], dict[str, Any]]:
    """An ensemble checkpoint's members (their checkpoint mappings), threshold, record (split patients, data
    fingerprint) and spatial context, checked."""
    members = checkpoint[ENSEMBLE_KEY]
    if not isinstance(members, list) or not members:
        raise CheckpointError(f"{path}: the ensemble holds no member checkpoint")
    threshold = checkpoint.get("threshold", 0.5)
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise CheckpointError(f"{path}: ensemble threshold must be a number in [0, 1], got {threshold!r}")
    record = {key: checkpoint.get(key) for key in ("split_patients", "data_fingerprint")}
    try:
        check_record(record)
        context = context_of(checkpoint)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error
    return members, float(threshold), record, context


def same_views(members: list[Any], path: Path) -> None:
    """Refuse an ensemble whose members see different neighbourhoods: they cannot share inputs."""
    views = sorted({member.input_views for member in members})
    if len(views) > 1:
        raise CheckpointError(f"{path}: the ensemble's members see different neighbourhoods (views of "
                              f"{' and '.join(str(list(v)) for v in views)} rings): they cannot share inputs")


def saved_hparams(checkpoint: Any, path: Path, settings_of: Collection[str] = registry.GROUPS) -> dict[str, Any]:
    """A member checkpoint's saved hyperparameters, checked (`check_hparams`); CheckpointError naming the file."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "config" not in hparams:
        raise CheckpointError(f"{path} was not written by idclab (no saved run config)")
    try:
        check_hparams(hparams, settings_of)
    except (registry.OptionError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a config idclab cannot rebuild: {error}") from error
    return hparams


def load_weights(module: torch.nn.Module, state: Any, path: Path) -> None:
    """Load `state` into `module`: every key matched exactly, or CheckpointError naming the first mismatches."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no weights (state_dict) idclab can load")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        detail = " ".join(str(error).split())  # one line
        raise CheckpointError(f"{path} does not match the model config saved in it (weights: "
                              f"{detail[:300]}{'...' if len(detail) > 300 else ''})") from error


def load_predictor(path: str | Path) -> OperatingPoint:
    """A trained model (or seed/fold ensemble) from its checkpoint, as plain torch for prediction, with the refusals
    of `load_classifier`: the file read weights-only, its config rebuilt through the closed registry (the groups
    prediction does not build, such as the loss, checked by name), the weights matched exactly."""
    path, checkpoint = read_checkpoint(path)
    if ENSEMBLE_KEY not in checkpoint:
        return predictor_from(checkpoint, path)
    members, threshold, _, context = ensemble_parts(checkpoint, path)
    predictors = [predictor_from(member, path) for member in members]
    same_views(predictors, path)
    return EnsemblePredictor(predictors, threshold=threshold, **context).eval()


def predictor_from(checkpoint: dict[str, Any], path: Path) -> Predictor:
    """One backbone from a loaded checkpoint mapping (`path` names it in errors)."""
    hparams = saved_hparams(checkpoint, path, PREDICTION_GROUPS)
    config = hparams["config"]
    try:
        views = views_of(config)
        model = registry.build("model", registry.idle_start(config["model"]), in_channels=input_channels(views))
        stain = registry.build("stain", registry.group_config(config, "stain"))  # its fitted target: in the weights
        predictor = Predictor(model, stain, hparams["mean"], hparams["std"], config, views,
                              threshold=hparams.get("threshold", 0.5), **context_of(hparams))
    except (registry.OptionError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a config idclab cannot rebuild: {error}") from error
    state = checkpoint.get("state_dict")
    if isinstance(state, dict):
        state = {key: value for key, value in state.items() if not key.startswith(TRAINING_ONLY)}
    load_weights(predictor, state, path)
    return predictor.eval()


def _numbers(value: object, length: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def check_hparams(hparams: dict[str, Any], settings_of: Collection[str] = registry.GROUPS) -> None:
    """Refuse saved hyperparameters that are not the plain values idclab writes (ValueError naming the key); the
    option groups not in `settings_of` are checked by their option's name alone."""
    if not isinstance(hparams["config"], dict):
        raise ValueError("config is not a mapping")
    for key, length in (("class_counts", 2), ("mean", 3), ("std", 3)):
        if not _numbers(hparams.get(key), length):
            raise ValueError(f"{key} must be {length} numbers, got {hparams.get(key)!r}")
    threshold = hparams.get("threshold", 0.5)
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if hparams.get("threshold_method", "fixed") not in THRESHOLD_METHODS:
        raise ValueError(f"threshold_method must be one of {THRESHOLD_METHODS}, got {hparams['threshold_method']!r}")
    check_record(hparams)
    context_of(hparams)
    check_saved_config(hparams["config"])
    registry.check(hparams["config"], settings_of)


def context_of(saved: dict[str, Any]) -> dict[str, Any]:
    """The spatial context settings saved in a checkpoint, checked to be the plain numbers idclab writes
    (ValueError naming the key); empty for a checkpoint without context."""
    context = {key: saved[key] for key in CONTEXT_KEYS if saved.get(key) is not None}
    weight, radius = context.get("context_weight", 0.0), context.get("context_radius", 1)
    if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 <= weight < 1):
        raise ValueError(f"context_weight must be a number in [0, 1), got {weight!r}")
    if not (isinstance(radius, int) and not isinstance(radius, bool) and 1 <= radius <= MAX_RADIUS):
        raise ValueError(f"context_radius must be an integer from 1 to {MAX_RADIUS}, got {radius!r}")
    patch = context.get("patch_threshold", 0.5)
    if not (isinstance(patch, (int, float)) and not isinstance(patch, bool) and 0 <= patch <= 1):
        raise ValueError(f"patch_threshold must be a number in [0, 1], got {patch!r}")
    return context


def plain_text(value: object) -> bool:
    """A string that is no OmegaConf interpolation (`${...}` would call the resolver it names) or missing value."""
    return isinstance(value, str) and "${" not in value and value != "???"


def check_record(hparams: dict[str, Any]) -> None:
    """Refuse recorded split patients or data fingerprints that are not plain lists, mappings and strings (evaluate.py
    rebuilds the split from the patient lists through OmegaConf)."""
    patients = hparams.get("split_patients")
    if patients is not None and not (isinstance(patients, dict) and set(patients) <= set(SPLITS) and all(
            isinstance(names, list) and all(plain_text(n) for n in names) for names in patients.values())):
        raise ValueError(f"split_patients must map {', '.join(SPLITS)} to lists of plain patient ids")
    fingerprint = hparams.get("data_fingerprint")
    if fingerprint is None:
        return
    counts = fingerprint.get("patches") if isinstance(fingerprint, dict) else None
    if not (isinstance(fingerprint, dict) and plain_text(fingerprint.get("cache_key"))
            and plain_text(fingerprint.get("content", ""))
            and isinstance(counts, dict) and set(counts) <= set(SPLITS)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in counts.values())):
        raise ValueError("data_fingerprint must hold a cache_key string, a content digest string (when recorded) "
                         "and patch counts per split")
