"""What the entry points share: user errors end the program with a clear message, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from idclab.build import CheckpointError
from idclab.data.cache import BadPatchError
from idclab.data.layout import DataLayoutError
from idclab.registry import OptionError
from idclab.resume import ResumeError
from idclab.validation import ConfigError

T = TypeVar("T")
USER_ERRORS = (ConfigError, OptionError, DataLayoutError, BadPatchError, CheckpointError, ResumeError, LookupError,
               FileNotFoundError)


def run_or_explain(task: Callable[..., T], *args: object) -> T:
    """Run `task`; on an error the user can fix, print it (no traceback) and exit with status 2."""
    try:
        return task(*args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
