"""Small file-system helpers: an inter-process lock, whole-file writes and content hashing."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


@contextmanager
def whole_file(path: str | Path, exclusive: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; renamed to `path` when the block succeeds, removed
    when it fails, so a reader finds the old file or the new one, never half of one. The temporary name is hidden,
    unique to the process and keeps the extension (`.x.1234.partial.csv.gz`), from which pandas, matplotlib and
    numpy infer the format. `exclusive`: FileExistsError rather than replace a file at `path`, even one made while
    the block wrote (published by a hard link, which fails on an existing name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name, dot, extension = path.name.lstrip(".").partition(".")
    partial = path.with_name(f".{name}.{os.getpid()}.partial{dot}{extension}")
    try:
        yield partial
        if exclusive:
            publish_new(partial, path)
        else:
            partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def publish_new(partial: Path, path: Path) -> None:
    """Give `partial`'s content the name `path`, which must not exist (FileExistsError)."""
    try:
        os.link(partial, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: checked, then renamed
        if path.exists():
            raise FileExistsError(path) from None
        partial.replace(path)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` whole (`whole_file`)."""
    with whole_file(path) as partial:
        partial.write_text(text)


def write_json(path: str | Path, value: object) -> None:
    """Write `value` as JSON to `path` whole (`whole_file`)."""
    write_text(path, json.dumps(value, indent=2))


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> Path:
    """Save `figure` to `path` whole (`whole_file`), then close it; the format follows the extension."""
    import matplotlib.pyplot as plt

    with whole_file(path) as partial:
        figure.savefig(partial, dpi=dpi)
    plt.close(figure)
    return path
