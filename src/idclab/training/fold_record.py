"""A finished cross-validation fold on disk: written as the fold ends, read when its interrupted run resumes.

`fold.json` (plain values) and `fold.npz` (arrays, read without pickle) in the fold's folder hold what the pooled
out-of-fold report and the fold ensemble need: the fold's table row, best checkpoint, threshold, tuned context,
training time and its validation and out-of-fold predictions. A record counts only for the cross-validation run
that wrote it, on the same data (content digest and patches per split) and the same validation and out-of-fold
patches, and only if the checkpoint it names is in the fold's own folder; otherwise the fold is trained again.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idclab.data.datamodule import PreparedData, same_data
from idclab.fileutil import whole_file, write_json
from idclab.training.fit import FitResult, own_checkpoint

RECORD = "fold.json"
ARRAYS = "fold.npz"
ARRAY_FIELDS = ("val_rows", "val_probs", "val_patch_probs", "test_rows", "test_probs", "test_patch_probs")
UNREADABLE = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)  # missing, cut or not a record


@dataclass
class KeptFold:
    """A finished fold read back: its table row, its result and its MLflow run."""

    row: dict[str, Any]
    result: FitResult
    run_id: str


def save_fold(folder: Path, parent_run_id: str, run_id: str, data: PreparedData, row: dict[str, Any],
              result: FitResult) -> None:
    """Record fold run `run_id` of cross-validation `parent_run_id` on `data` (the fold's split) as finished."""
    (folder / RECORD).unlink(missing_ok=True)  # the arrays and the record of one attempt, never of two
    with whole_file(folder / ARRAYS) as partial:
        np.savez(partial, **{name: np.asarray(getattr(result, name)) for name in ARRAY_FIELDS})
    write_json(folder / RECORD, {"parent_run_id": parent_run_id, "run_id": run_id,
                                 "data_fingerprint": data.record()["data_fingerprint"], "row": row,
                                 "best_score": result.best_score, "best_path": result.best_path,
                                 "threshold": result.threshold, "context": result.context,
                                 "train_seconds": result.train_seconds})


def kept_fold(folder: Path, parent_run_id: str, data: PreparedData) -> KeptFold | None:
    """The fold that run `parent_run_id` finished on `data` (the fold's split), or None."""
    try:
        record = json.loads((folder / RECORD).read_text())
        now = data.record()["data_fingerprint"]
        if record["parent_run_id"] != parent_run_id or not same_data(record["data_fingerprint"], now) \
                or not own_checkpoint(record["best_path"], folder):
            return None
        with np.load(folder / ARRAYS, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in ARRAY_FIELDS}
        if not same_patches(arrays, data):
            return None
        result = FitResult(best_score=float(record["best_score"]), best_path=record["best_path"],
                           threshold=float(record["threshold"]), metrics={}, context=dict(record["context"]),
                           train_seconds=float(record["train_seconds"]), **arrays)
        return KeptFold(dict(record["row"]), result, str(record["run_id"]))
    except UNREADABLE:
        return None


def same_patches(arrays: dict[str, np.ndarray], data: PreparedData) -> bool:
    """Whether the saved predictions are of the split's validation and out-of-fold patches (all of them, or fewer
    under the trainer's `limit_*_batches`), one value each."""
    for split in ("val", "test"):
        rows = arrays[f"{split}_rows"]
        if rows.dtype.kind not in "iu" or len(np.unique(rows)) != len(rows) \
                or not np.isin(rows, data.split.rows[split]).all():
            return False
        if any(arrays[f"{split}_{kind}"].shape != rows.shape for kind in ("probs", "patch_probs")):
            return False
    return True
