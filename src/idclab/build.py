"""Build a classifier from a run config, and rebuild one from a checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from idclab.module import IDCClassifier


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded into the model its config describes."""


def build_classifier(config: dict[str, Any], class_counts: list[int], mean: list[float], std: list[float],
                     threshold: float = 0.5) -> IDCClassifier:
    """The LightningModule for a resolved run config (a plain dict)."""
    model = instantiate(config["model"])
    criterion = instantiate(config["loss"], class_counts=class_counts)
    optim = config["optim"]
    return IDCClassifier(model, criterion, config=config, mean=mean, std=std, class_counts=class_counts,
                         threshold=threshold, lr=optim["lr"], weight_decay=optim["weight_decay"])


def load_classifier(path: str | Path) -> IDCClassifier:
    """Rebuild a trained classifier from a Lightning checkpoint.

    The file is read with `torch.load(weights_only=True)`, so a checkpoint cannot run code; the model
    is rebuilt from the config saved inside it and its weights must match exactly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is not a loadable checkpoint (weights-only load): {error}") from error
    hparams = checkpoint.get("hyper_parameters")
    if not hparams or "config" not in hparams:
        raise CheckpointError(f"{path} was not written by idclab (no saved run config)")
    classifier = build_classifier(hparams["config"], hparams["class_counts"], hparams["mean"], hparams["std"],
                                  hparams.get("threshold", 0.5))
    try:
        classifier.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not match the model config saved in it: {error}") from error
    return classifier.eval()


def store_threshold(path: str | Path, threshold: float, method: str) -> None:
    """Write the tuned operating threshold into a checkpoint, so it travels with the weights."""
    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["threshold"] = float(threshold)
    checkpoint["hyper_parameters"]["threshold_method"] = method
    partial = path.with_suffix(".ckpt.partial")
    torch.save(checkpoint, partial)
    partial.replace(path)
