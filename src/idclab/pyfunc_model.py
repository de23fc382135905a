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


class IDCPyfuncModel(mlflow.pyfunc.PythonModel):
    """Input: uint8 RGB patches, an array N x 50 x 50 x 3. Output: a DataFrame with `probability`
    (P(IDC)) and `label` (1 = IDC at the tuned threshold). Patches come without slide positions, so each is
    scored alone: a model tuned with spatial context labels them at its threshold tuned without context."""

    _skip_type_hint_validation = True  # the logged signature describes the input; MLflow need not wrap predict

    def load_context(self, context: Any) -> None:
        from idclab.build import load_classifier

        self.classifier = load_classifier(context.artifacts["checkpoint"])

    # model_input: np.ndarray, a hint MLflow infers no signature from (it comes from the input example)
    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        images = torch.from_numpy(np.ascontiguousarray(np.asarray(model_input, dtype=np.uint8)))
        with torch.no_grad():
            probs = self.classifier.probabilities(images.permute(0, 3, 1, 2)).numpy()
        return pd.DataFrame({"probability": probs.astype(np.float64),
                             "label": (probs >= self.classifier.alone_threshold).astype(np.int64)})


mlflow.models.set_model(IDCPyfuncModel())
