"""Build a classifier from a run config, and rebuild one from a checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from idclab import registry
from idclab.ensemble import ENSEMBLE_KEY, EnsembleClassifier
from idclab.module import IDCClassifier


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded into the model its config describes."""


def build_classifier(config: dict[str, Any], class_counts: list[int], mean: list[float], std: list[float],
                     threshold: float = 0.5) -> IDCClassifier:
    """The LightningModule for a resolved run config (a plain dict); model and loss come from the registry."""
    model = registry.build("model", config["model"])
    criterion = registry.build("loss", config["loss"], class_counts=class_counts)
    optim = config["optim"]
    return IDCClassifier(model, criterion, config=config, mean=mean, std=std, class_counts=class_counts,
                         threshold=threshold, lr=optim["lr"], weight_decay=optim["weight_decay"])


def load_classifier(path: str | Path) -> IDCClassifier:
    """Rebuild a trained classifier from a Lightning checkpoint.

    The file is read with `torch.load(weights_only=True)` (no unpickling of objects); the model and loss
    are rebuilt through the closed option registry from the plain config saved inside it (a name the
    registry does not know, or a keyword its class does not take, is refused), and the weights must
    match exactly. Nothing named by the file is ever called.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
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
        return EnsembleClassifier([classifier_from(member, path) for member in members], threshold).eval()
    return classifier_from(checkpoint, path)


def classifier_from(checkpoint: dict[str, Any], path: Path) -> IDCClassifier:
    """One classifier from a loaded checkpoint mapping (`path` names it in errors)."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "config" not in hparams:
        raise CheckpointError(f"{path} was not written by idclab (no saved run config)")
    try:
        check_hparams(hparams)
        classifier = build_classifier(hparams["config"], hparams["class_counts"], hparams["mean"], hparams["std"],
                                      hparams.get("threshold", 0.5))
    except (registry.OptionError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a config idclab cannot rebuild: {error}") from error
    try:
        classifier.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not match the model config saved in it: {error}") from error
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
    registry.check(hparams["config"])


def store_threshold(path: str | Path, threshold: float, method: str) -> None:
    """Write the tuned operating threshold into a checkpoint, so it travels with the weights."""
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["threshold"] = float(threshold)
    checkpoint["hyper_parameters"]["threshold_method"] = method
    partial = path.with_suffix(".ckpt.partial")
    torch.save(checkpoint, partial)
    partial.replace(path)
