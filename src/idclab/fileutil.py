"""Small file-system helpers: an inter-process lock, whole-file JSON writes and content hashing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if needed) for the `with` block.

    Used so that two jobs of a parallel sweep never build the same dataset or cache at once. `filelock`
    picks the mechanism that works on the platform and file system (Windows, network file systems).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def stable_hash(obj: object, length: int = 12) -> str:
    """A short hash of a JSON-serialisable object, stable across runs and machines."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def write_json(path: Path, value: object) -> None:
    """Write `value` as JSON to `path` whole: into a temporary file, then renamed (a kill leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2))
    partial.replace(path)
