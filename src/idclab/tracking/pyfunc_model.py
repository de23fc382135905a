"""The MLflow pyfunc model, logged from code (MLflow's models-from-code): no pickled Python object.

MLflow runs this file when a pyfunc loader or `mlflow models serve` loads a logged idclab model; the
weights come from the model's `checkpoint` artifact, a weights-only checkpoint rebuilt through the
option registry. idclab itself never runs this file to load a model (it reads the checkpoint only).
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException

POSITIONS = {"patient": "string", "x": "long", "y": "long"}  # optional params (MLflow types): where each patch
# lies on its slide, in pixels as in the Kaggle names
MAX_COORDINATE = 10**7  # pixels: beyond any slide, and small enough for exact neighbour arithmetic


def slide_positions(params: dict | None, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The `count` patches' (patient, x, y) from the request params, or None when none are given. Bad values raise
    MLflow's invalid-parameter error, whose message a scoring server returns with HTTP 400."""
    given = {name: [] if (params or {}).get(name) is None else list(params[name]) for name in POSITIONS}
    if not any(given.values()):
        return None
    problem = None
    if any(len(values) != count for values in given.values()):
        problem = "one value per patch each: {} patches, {}, {} and {} values".format(
            count, *(len(values) for values in given.values()))
    elif not all(isinstance(p, str) and p for p in given["patient"]):
        problem = "patient must be non-empty strings"
    elif not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < MAX_COORDINATE
                 for axis in ("x", "y") for v in given[axis]):
        problem = f"x and y must be integers from 0 to {MAX_COORDINATE - 1} (pixels)"
    if problem:
        raise MlflowException.invalid_parameter_value(f"params patient, x and y: {problem}")
    return (np.asarray(given["patient"]), np.asarray(given["x"], dtype=np.int64),
            np.asarray(given["y"], dtype=np.int64))


class IDCPyfuncModel(mlflow.pyfunc.PythonModel):
    """Input: uint8 RGB patches, an array N x 50 x 50 x 3, and optionally params `patient`, `x`, `y` (one value
    for every patch of the request, or none). Output: a DataFrame with `probability` (P(IDC)), `label` (1 = IDC
    at the threshold applied), `patch_probability` (P(IDC) before any blending) and `in_context` (whether the
    patch was scored with its neighbours). A model tuned with spatial context given positions blends every patch
    with its neighbours among those sent and labels at its threshold; without positions, each patch is scored
    alone and labelled at the threshold tuned without context. A model with a neighbourhood view
    (`data.neighbourhood`) is shown each patch's neighbours among those sent given positions; without them it sees
    each patch alone, which it rarely saw in training (`in_context` false)."""

    _skip_type_hint_validation = True  # the logged signature describes the input; MLflow need not wrap predict

    def load_context(self, context: Any) -> None:
        from idclab.config.build import load_classifier

        self.classifier = load_classifier(context.artifacts["checkpoint"])

    # model_input: np.ndarray, a hint MLflow infers no signature from (it comes from the input example)
    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        from idclab.data.neighbourhood import in_chunks

        pixels = np.asarray(model_input, dtype=np.uint8)
        positions = slide_positions(params, len(pixels))
        with torch.no_grad():  # a neighbourhood model sees each patch's neighbours among those sent (given positions)
            alone = np.concatenate([np.empty(0), *(
                self.classifier.probabilities(torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2))
                .numpy().astype(np.float64) for chunk in in_chunks(pixels, self.classifier.input_views, positions))])
        in_context = positions is not None and (self.classifier.uses_context or bool(self.classifier.input_views))
        if in_context:
            probs, threshold = self.classifier.blend(alone, *positions), self.classifier.threshold
        else:
            probs, threshold = alone, self.classifier.alone_threshold
        return pd.DataFrame({"probability": probs, "label": (probs >= threshold).astype(np.int64),
                             "patch_probability": alone, "in_context": np.full(len(alone), in_context)})


mlflow.models.set_model(IDCPyfuncModel())
