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

POSITIONS = ("patient", "x", "y")  # optional params: where each patch lies on its slide (pixels, Kaggle names)


class IDCPyfuncModel(mlflow.pyfunc.PythonModel):
    """Input: uint8 RGB patches, an array N x 50 x 50 x 3, and optionally params `patient`, `x`, `y` (one value
    per patch). Output: a DataFrame with `probability` (P(IDC)), `label` (1 = IDC at the tuned threshold) and
    `patch_probability` (P(IDC) of the patch alone). A model tuned with spatial context blends the patches sent
    with positions with their neighbours among them; patches sent without are scored alone and labelled at the
    threshold tuned without context."""

    _skip_type_hint_validation = True  # the logged signature describes the input; MLflow need not wrap predict

    def load_context(self, context: Any) -> None:
        from idclab.build import load_classifier

        self.classifier = load_classifier(context.artifacts["checkpoint"])

    # model_input: np.ndarray, a hint MLflow infers no signature from (it comes from the input example)
    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        images = torch.from_numpy(np.ascontiguousarray(np.asarray(model_input, dtype=np.uint8)))
        with torch.no_grad():
            alone = self.classifier.probabilities(images.permute(0, 3, 1, 2)).numpy().astype(np.float64)
        positions = [list((params or {}).get(name) or []) for name in POSITIONS]
        if not any(positions):
            probs, threshold = alone, self.classifier.alone_threshold
        elif any(len(values) != len(alone) for values in positions):
            counts = "{}, {} and {}".format(*(len(values) for values in positions))
            raise ValueError(f"params patient, x and y must each give one value per patch: {len(alone)} patches, "
                             f"{counts} values")
        else:
            patients, xs, ys = (np.asarray(values) for values in positions)
            probs = self.classifier.blend(alone, patients, xs.astype(np.int64), ys.astype(np.int64))
            threshold = self.classifier.threshold
        return pd.DataFrame({"probability": probs, "label": (probs >= threshold).astype(np.int64),
                             "patch_probability": alone})


mlflow.models.set_model(IDCPyfuncModel())
