"""What the entry points share: user errors end the program with a clear message, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from idclab.config.build import CheckpointError
from idclab.config.registry import OptionError
from idclab.config.validation import ConfigError
from idclab.console import quiet_third_party
from idclab.data.cache import BadPatchError
from idclab.data.layout import DataLayoutError
from idclab.termination import sigterm_exits_143
from idclab.tracking.runs import ModelFormatError, RunNotFoundError
from idclab.training.resume import ResumeError

T = TypeVar("T")
# only the project's own error classes: a KeyError or IndexError is a bug and keeps its traceback
USER_ERRORS = (ConfigError, OptionError, DataLayoutError, BadPatchError, CheckpointError, ResumeError, RunNotFoundError,
               ModelFormatError)


def run_or_explain(task: Callable[..., T], *args: object) -> T:
    """Run `task` without known third-party noise; on an error the user can fix, print it (no traceback) and
    exit with status 2. SIGTERM stops it like Ctrl-C (its MLflow run ends KILLED) and exits with status 143."""
    quiet_third_party()
    with sigterm_exits_143():
        try:
            return task(*args)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
