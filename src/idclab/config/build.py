"""Build a classifier from a run config, and rebuild one from a checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from idclab.classifier.ensemble import ENSEMBLE_KEY, EnsembleClassifier
from idclab.classifier.module import IDCClassifier
from idclab.config import registry
from idclab.config.checkpoint import (  # noqa: F401  (CheckpointError and context_of: re-exported)
    CheckpointError,
    context_of,
    ensemble_parts,
    load_weights,
    read_checkpoint,
    same_views,
    saved_hparams,
)
from idclab.data.neighbourhood import input_channels, views_of
from idclab.fileutil import whole_file


def build_classifier(config: dict[str, Any], class_counts: list[int], mean: list[float], std: list[float],
                     threshold: float = 0.5, split_patients: dict[str, list[str]] | None = None,
                     data_fingerprint: dict[str, Any] | None = None, start: bool = True, **context: Any
                     ) -> IDCClassifier:
    """The LightningModule for a resolved run config (a plain dict); model and loss come from the registry.
    `split_patients`, `data_fingerprint` (see `PreparedData.record`) and the tuned spatial `context`
    (context_weight, context_radius, patch_threshold) are saved with it. `start=False` leaves out the model's
    starting weights (`model.weights`, `model.pretrained`: nothing read or fetched) for weights loaded next."""
    model_config = config["model"] if start else registry.idle_start(config["model"])
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
    match exactly. Nothing named by the file is ever called. (`idclab.config.checkpoint.load_predictor`: the same
    model as plain torch, for prediction.)
    """
    path, checkpoint = read_checkpoint(path)
    if ENSEMBLE_KEY in checkpoint:
        members, threshold, record, context = ensemble_parts(checkpoint, path)
        classifiers = [classifier_from(member, path) for member in members]
        same_views(classifiers, path)
        return EnsembleClassifier(classifiers, threshold, **record, **context).eval()
    return classifier_from(checkpoint, path)


def classifier_from(checkpoint: dict[str, Any], path: Path) -> IDCClassifier:
    """One classifier from a loaded checkpoint mapping (`path` names it in errors)."""
    hparams = saved_hparams(checkpoint, path)
    try:
        classifier = build_classifier(hparams["config"], hparams["class_counts"], hparams["mean"], hparams["std"],
                                      hparams.get("threshold", 0.5), hparams.get("split_patients"),
                                      hparams.get("data_fingerprint"), start=False, **context_of(hparams))
    except (registry.OptionError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a config idclab cannot rebuild: {error}") from error
    load_weights(classifier, checkpoint.get("state_dict"), path)
    if "threshold_method" in hparams:  # the rule the threshold was tuned with (re-tuned for TTA by evaluate.py)
        classifier.hparams["threshold_method"] = hparams["threshold_method"]
    return classifier.eval()


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
