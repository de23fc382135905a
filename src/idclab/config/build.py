"""Build a classifier from a run config, and rebuild one from a checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from idclab.classifier.ensemble import ENSEMBLE_KEY, EnsembleClassifier
from idclab.classifier.module import IDCClassifier
from idclab.config import registry
from idclab.config.validation import check_saved_config
from idclab.data.neighbourhood import input_channels, views_of
from idclab.data.split import SPLITS
from idclab.fileutil import whole_file
from idclab.scoring.context import MAX_RADIUS
from idclab.scoring.thresholds import METHODS as THRESHOLD_METHODS


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded into the model its config describes."""


START_SETTINGS = {"weights": None, "pretrained": False}  # where a model's weights start: a checkpoint's replace them


def build_classifier(config: dict[str, Any], class_counts: list[int], mean: list[float], std: list[float],
                     threshold: float = 0.5, split_patients: dict[str, list[str]] | None = None,
                     data_fingerprint: dict[str, Any] | None = None, start: bool = True, **context: Any
                     ) -> IDCClassifier:
    """The LightningModule for a resolved run config (a plain dict); model and loss come from the registry.
    `split_patients`, `data_fingerprint` (see `PreparedData.record`) and the tuned spatial `context`
    (context_weight, context_radius, patch_threshold) are saved with it. `start=False` leaves out the model's
    starting weights (`model.weights`, `model.pretrained`: nothing read or fetched) for weights loaded next."""
    model_config = config["model"] if start else {**config["model"], **{
        key: idle for key, idle in START_SETTINGS.items() if key in config["model"]}}
    model = registry.build("model", model_config, in_channels=input_channels(views_of(config)))
    criterion = registry.build("loss", config["loss"], class_counts=class_counts)
    stain = registry.build("stain", registry.group_config(config, "stain"))  # its fitted target: in the state dict
    optim = config["optim"]
    return IDCClassifier(model, criterion, config=config, mean=mean, std=std, class_counts=class_counts,
                         threshold=threshold, lr=optim["lr"], weight_decay=optim["weight_decay"], stain=stain,
                         split_patients=split_patients, data_fingerprint=data_fingerprint, **context)


def load_classifier(path: str | Path) -> IDCClassifier:
    """Rebuild a trained classifier from a Lightning checkpoint.

    The file is read with `torch.load(weights_only=True)` (no unpickling of objects); the model and loss
    are rebuilt through the closed option registry from the plain config saved inside it (a name the
    registry does not know, or a keyword its class does not take, is refused), and the weights must
    match exactly. Nothing named by the file is ever called.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is not a loadable checkpoint (weights-only load): {error}") from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} was not written by idclab (not a checkpoint mapping)")
    if ENSEMBLE_KEY in checkpoint:
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
        classifiers = [classifier_from(member, path) for member in members]
        views = sorted({member.input_views for member in classifiers})
        if len(views) > 1:
            raise CheckpointError(f"{path}: the ensemble's members see different neighbourhoods (views of "
                                  f"{' and '.join(str(list(v)) for v in views)} rings): "
                                  "they cannot share inputs")
        return EnsembleClassifier(classifiers, threshold, **record, **context).eval()
    return classifier_from(checkpoint, path)


def classifier_from(checkpoint: dict[str, Any], path: Path) -> IDCClassifier:
    """One classifier from a loaded checkpoint mapping (`path` names it in errors)."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "config" not in hparams:
        raise CheckpointError(f"{path} was not written by idclab (no saved run config)")
    try:
        check_hparams(hparams)
        classifier = build_classifier(hparams["config"], hparams["class_counts"], hparams["mean"], hparams["std"],
                                      hparams.get("threshold", 0.5), hparams.get("split_patients"),
                                      hparams.get("data_fingerprint"), start=False, **context_of(hparams))
    except (registry.OptionError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a config idclab cannot rebuild: {error}") from error
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no weights (state_dict) idclab can load")
    try:
        classifier.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        detail = " ".join(str(error).split())  # one line
        raise CheckpointError(f"{path} does not match the model config saved in it (weights: "
                              f"{detail[:300]}{'...' if len(detail) > 300 else ''})") from error
    if "threshold_method" in hparams:  # the rule the threshold was tuned with (re-tuned for TTA by evaluate.py)
        classifier.hparams["threshold_method"] = hparams["threshold_method"]
    return classifier.eval()


def _numbers(value: object, length: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def check_hparams(hparams: dict[str, Any]) -> None:
    """Refuse saved hyperparameters that are not the plain values idclab writes (ValueError naming the key)."""
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
    registry.check(hparams["config"])


CONTEXT_KEYS = ("context_weight", "context_radius", "patch_threshold")


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


def check_record(hparams: dict[str, Any]) -> None:
    """Refuse recorded split patients or data fingerprints that are not plain lists and mappings."""
    patients = hparams.get("split_patients")
    if patients is not None and not (isinstance(patients, dict) and set(patients) <= set(SPLITS) and all(
            isinstance(names, list) and all(isinstance(n, str) for n in names) for names in patients.values())):
        raise ValueError(f"split_patients must map {', '.join(SPLITS)} to lists of patient ids")
    fingerprint = hparams.get("data_fingerprint")
    if fingerprint is None:
        return
    counts = fingerprint.get("patches") if isinstance(fingerprint, dict) else None
    if not (isinstance(fingerprint, dict) and isinstance(fingerprint.get("cache_key"), str)
            and isinstance(counts, dict) and set(counts) <= set(SPLITS)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in counts.values())):
        raise ValueError("data_fingerprint must hold a cache_key string and patch counts per split")


def store_threshold(path: str | Path, threshold: float, method: str, **context: float | int) -> None:
    """Write the tuned operating threshold (and the tuned spatial `context`: context_weight, context_radius,
    patch_threshold) into a checkpoint, so they travel with the weights."""
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["threshold"] = float(threshold)
    checkpoint["hyper_parameters"]["threshold_method"] = method
    checkpoint["hyper_parameters"].update(context)
    with whole_file(path) as partial:
        torch.save(checkpoint, partial)


def load_ensemble(path: str | Path) -> EnsembleClassifier:
    """Rebuild an ensemble checkpoint (`load_classifier` accepts these too); ValueError for a single model."""
    classifier = load_classifier(path)
    if not isinstance(classifier, EnsembleClassifier):
        raise ValueError(f"{path} is a single model, not an ensemble")
    return classifier
