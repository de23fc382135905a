"""What the entry points share: an error the user can fix ends the program with one line, not a traceback, and
leaves nothing behind.

Light on purpose: the user errors are named, not imported, so a task that never imports Lightning or MLflow
(`python evaluate.py predict=[...]`) does not import them here either.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from idclab.console import STARTED, quiet_third_party
from idclab.termination import sigterm_exits_143

T = TypeVar("T")
# only the project's own error classes (module.Class, subclasses included): a KeyError or IndexError is a bug and
# keeps its traceback
USER_ERRORS = frozenset({
    "idclab.config.validation.ConfigError", "idclab.config.registry.OptionError", "idclab.data.layout.DataLayoutError",
    "idclab.data.cache.BadPatchError", "idclab.config.checkpoint.CheckpointError", "idclab.training.resume.ResumeError",
    "idclab.tracking.store.RunNotFoundError", "idclab.tracking.store.ModelFormatError",
    "idclab.models.weights.WeightsError",
})


class JobFailed(Exception):
    """A multirun job stopped by an error the user can fix, already printed: Hydra fails that job, runs the others and
    raises it at the sweep's end (`run_hydra` then exits with status 2)."""


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is (a subclass of) one of USER_ERRORS."""
    return any(f"{cls.__module__}.{cls.__qualname__}" in USER_ERRORS for cls in type(error).__mro__)


def run_or_explain(task: Callable[..., T], *args: object) -> T:
    """Run `task` without known third-party noise; on an error the user can fix, print it (no traceback), remove
    the output folder Hydra made for nothing and exit with status 2 (a multirun's job: raise JobFailed). SIGTERM
    stops it like Ctrl-C (its MLflow run ends KILLED) and exits with status 143."""
    quiet_third_party()
    with sigterm_exits_143():
        try:
            return task(*args)
        except Exception as error:
            if not is_user_error(error):
                raise
            discard_untouched_output()
            print(f"error: {error}", file=sys.stderr)
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                raise JobFailed(str(error)) from error  # SystemExit would escape the launcher: no later job would run
            raise SystemExit(2) from error


HYDRA_FILES = {".hydra"}  # what Hydra writes into a run's folder before the task starts, with `<job>.log`
DOWNLOADS = {"downloaded"}  # evaluate.py's copy of the selected model, fetched before the model can be refused


def discard_untouched_output() -> None:
    """Remove this run's output folder (and its date folder and `outputs/`, left empty) when the task wrote nothing
    into it but a downloaded model: it holds only what Hydra made at the start. A sweep's job folders stay (the sweep
    owns them), as does a folder that existed before this process (a resumed run's)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir)
    made = HYDRA_FILES | DOWNLOADS | {f"{hydra.job.name}.log"}
    if not folder.is_dir() or {p.name for p in folder.iterdir()} - made or folder.stat().st_ctime < STARTED:
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):
        if parent.is_dir() and not any(parent.iterdir()) and parent != Path(hydra.runtime.cwd):
            parent.rmdir()
