"""The Kaggle IDC layout: `<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png`.

Scanning turns a data root into a patch index (one row per unique patch) plus counts of what was
skipped, so that nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a frame is made: reading patch names stays light (predict, checks)
    import pandas as pd

log = logging.getLogger(__name__)
PATCH_NAME = re.compile(r"^(?P<patient>[^_/]+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$")

EXPECTED_LAYOUT = ("expected the Kaggle \"Breast Histopathology Images\" layout "
                   "<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png (kaggle datasets download -d "
                   "paultimothymooney/breast-histopathology-images, unzipped into PATH)")


class DataLayoutError(RuntimeError):
    """The data root is missing, empty or not in the expected layout."""


@dataclass(frozen=True)
class PatchName:
    """What a patch file name says about the patch."""

    patient: str
    x: int
    y: int
    label: int


def parse_patch_name(name: str) -> PatchName | None:
    """Parse a Kaggle patch file name; None when it does not follow the pattern."""
    match = PATCH_NAME.match(name)
    if match is None:
        return None
    return PatchName(match["patient"], int(match["x"]), int(match["y"]), int(match["label"]))


def patch_file_name(patient: str, x: int, y: int, label: int) -> str:
    """The Kaggle file name of a patch."""
    return f"{patient}_idx5_x{x}_y{y}_class{label}.png"


@dataclass
class PatchIndex:
    """Unique patches found under a root, in a stable (sorted) order."""

    root: Path
    paths: list[str]  # relative to root
    patients: np.ndarray  # str
    xs: np.ndarray
    ys: np.ndarray
    labels: np.ndarray
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.paths)

    def merged_with(self, other: PatchIndex, patient_prefix: str) -> PatchIndex:
        """This index followed by `other`, whose patients get `patient_prefix` (to keep sites apart)."""
        root = Path(os.path.commonpath([self.root, other.root]))
        paths = [os.path.relpath(index.root / p, root) for index in (self, other) for p in index.paths]
        return PatchIndex(
            root=root, paths=paths,
            patients=np.concatenate([self.patients, np.char.add(patient_prefix, other.patients.astype(str))]),
            xs=np.concatenate([self.xs, other.xs]), ys=np.concatenate([self.ys, other.ys]),
            labels=np.concatenate([self.labels, other.labels]), skipped=self.skipped + other.skipped)

    def frame(self, rows: np.ndarray) -> pd.DataFrame:
        """The patches of `rows` as a table: file, patient, x, y, label."""
        import pandas as pd

        return pd.DataFrame({"file": [self.paths[i] for i in rows], "patient": self.patients[rows].astype(str),
                             "x": self.xs[rows], "y": self.ys[rows], "label": self.labels[rows]})

    def class_counts(self, rows: np.ndarray | None = None) -> list[int]:
        """Number of negative and positive patches (over `rows`, or all)."""
        labels = self.labels if rows is None else self.labels[rows]
        return [int((labels == 0).sum()), int((labels == 1).sum())]


def require_root(root: str | Path | None) -> Path:
    """The given data root as an absolute path; DataLayoutError if it is unset or not a folder."""
    if not root:
        raise DataLayoutError(f"data.root is not set: pass data.root=PATH; {EXPECTED_LAYOUT}")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataLayoutError(f"data root {path} does not exist or is not a folder; {EXPECTED_LAYOUT}")
    return path


def report_unreadable(root: Path, folders: list[str], strict: bool) -> None:
    """Warn about (or, in strict mode, fail on) folders under `root` that could not be listed."""
    listing = ", ".join(folders[:20]) + (f" and {len(folders) - 20} more" if len(folders) > 20 else "")
    message = f"{len(folders)} folder(s) under {root} could not be read: {listing}"
    if strict:
        raise DataLayoutError(f"{message} (data.strict=true; fix their permissions or set data.strict=false)")
    log.warning("%s. Their patches are skipped (data.strict=false).", message)


def scan(root: str | Path, strict: bool = False) -> PatchIndex:
    """Index every patch under `root` (recursively).

    A file whose name does not parse, or whose class folder disagrees with its name, is skipped and
    counted (never relabelled). The same patch seen twice (the Kaggle archive nests a full copy of
    every patient folder) is kept once. A folder that cannot be read is counted and named in a warning,
    or is an error with `strict`.
    """
    root = require_root(root)
    skipped: Counter = Counter()
    unreadable: list[str] = []
    found: dict[tuple[str, int, int, int], str] = {}
    for folder, _dirs, files in os.walk(root, onerror=lambda error: unreadable.append(str(error.filename or error))):
        folder_path = Path(folder)
        for name in files:
            if not name.lower().endswith(".png"):
                continue
            parsed = parse_patch_name(name)
            if parsed is None:
                skipped["unparsed_name"] += 1
                continue
            if folder_path.name != str(parsed.label):
                skipped["folder_label_mismatch"] += 1
                continue
            key = (parsed.patient, parsed.x, parsed.y, parsed.label)
            rel = str((folder_path / name).relative_to(root))
            if key in found:
                skipped["duplicate"] += 1
                # keep the shallowest copy, so the choice does not depend on walk order
                if (rel.count(os.sep), rel) < (found[key].count(os.sep), found[key]):
                    found[key] = rel
                continue
            found[key] = rel
    if unreadable:
        skipped["unreadable_folder"] += len(unreadable)
        report_unreadable(root, sorted(unreadable), strict)
    if not found:
        raise DataLayoutError(f"no patch files found under {root}; {EXPECTED_LAYOUT}")
    keys = sorted(found)
    return PatchIndex(
        root=root,
        paths=[found[k] for k in keys],
        patients=np.array([k[0] for k in keys]),
        xs=np.array([k[1] for k in keys], dtype=np.int64),
        ys=np.array([k[2] for k in keys], dtype=np.int64),
        labels=np.array([k[3] for k in keys], dtype=np.int64),
        skipped=skipped,
    )
