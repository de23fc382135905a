"""A finished cross-validation fold on disk: written as the fold ends, read when its interrupted run resumes.

`fold.json` (plain values) and `fold.npz` (arrays, read without pickle) in the fold's folder hold what the pooled
out-of-fold report and the fold ensemble need: the fold's table row, best checkpoint, threshold, tuned context and
its validation and out-of-fold predictions. A record counts only for the cross-validation run that wrote it, for the
same patients, and only if the checkpoint it names is in the fold's own folder; otherwise the fold is trained again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from idclab.fileutil import whole_file, write_json
from idclab.training.fit import FitResult

RECORD = "fold.json"
ARRAYS = "fold.npz"
ARRAY_FIELDS = ("val_rows", "val_probs", "val_patch_probs", "test_rows", "test_probs", "test_patch_probs")


def save_fold(folder: Path, parent_run_id: str, patients: list[str], row: dict[str, Any], result: FitResult
              ) -> None:
    """Record a finished fold of run `parent_run_id` (arrays first: a record without its arrays is never read)."""
    with whole_file(folder / ARRAYS) as partial:
        np.savez(partial, **{name: np.asarray(getattr(result, name)) for name in ARRAY_FIELDS})
    write_json(folder / RECORD, {"parent_run_id": parent_run_id, "patients": patients, "row": row,
                                 "best_score": result.best_score, "best_path": result.best_path,
                                 "threshold": result.threshold, "context": result.context,
                                 "train_seconds": result.train_seconds})


def kept_fold(folder: Path, parent_run_id: str, patients: list[str]) -> tuple[dict[str, Any], FitResult] | None:
    """The (table row, result) of a fold that run `parent_run_id` finished on `patients`, or None."""
    try:
        record = json.loads((folder / RECORD).read_text())
        with np.load(folder / ARRAYS, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in ARRAY_FIELDS}
        if record["parent_run_id"] != parent_run_id or record["patients"] != patients \
                or not own_checkpoint(record["best_path"], folder):
            return None
        result = FitResult(best_score=float(record["best_score"]), best_path=record["best_path"],
                           threshold=float(record["threshold"]), metrics={}, context=dict(record["context"]),
                           train_seconds=float(record["train_seconds"]), **arrays)
        return dict(record["row"]), result
    except (OSError, ValueError, KeyError, TypeError):  # missing, damaged or not a record: the fold is trained again
        return None


def own_checkpoint(path: object, folder: Path) -> bool:
    """Whether `path` is an existing file in `folder/checkpoints`."""
    if not isinstance(path, str):
        return False
    best = Path(path)
    return best.is_file() and best.parent.resolve() == (folder / "checkpoints").resolve()
