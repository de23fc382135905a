"""What the entry points print: config errors on one line (exit code 2), without known third-party noise.

Light on purpose (no torch, Lightning or MLflow import): a config that does not compose fails at once.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Callable

from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

# (logger, message fragment): records dropped from the project's own runs
DROPPED_LOG_RECORDS = (
    ("pytorch_lightning.utilities.rank_zero", "💡 Tip:"),  # the litlogger advertisement
    ("mlflow.pyfunc", "Validating input example against model signature"),  # every logged model
)
# (category, start of the message): third-party warnings every run gets, about nothing the user can change
IGNORED_WARNINGS = (
    (FutureWarning, "`isinstance(treespec, LeafSpec)` is deprecated"),  # Lightning on torch >= 2.10
    (UserWarning, "The specified dataset source can be interpreted in multiple ways"),  # MLflow log_input
    (UserWarning, "Hint: Inferred schema contains integer column(s)"),  # MLflow: uint8 patches never miss values
)
QUIET_LOGGERS = ("mlflow.system_metrics.system_metrics_monitor",)  # "started/stopped monitoring" on every run


class DropMessages(logging.Filter):
    """Drops the records whose message contains a given fragment."""

    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_third_party() -> None:
    """Silence the known third-party noise listed above, each by its own filter (idempotent)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # download bars in every log
    for category, start in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(start), category=category)
    for name, fragment in DROPPED_LOG_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(DropMessages(fragment))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def one_line(error: BaseException) -> str:
    """Hydra's multi-line message (and its OmegaConf cause) as one line; listed options joined by commas."""
    text = str(error).split("Config search path:")[0]
    if isinstance(error.__cause__, OmegaConfBaseException):
        text += "\n" + str(error.__cause__).splitlines()[0]
    text = re.sub(r":\s*\n\t", ": ", text).replace("\n\t", ", ")
    return "; ".join(line.strip().rstrip(".") for line in text.splitlines() if line.strip())


def run_hydra(main: Callable[[], object]) -> None:
    """Run a `@hydra.main` entry point; a config that does not compose (unknown group, option or key, bad override
    syntax) is one line on stderr and exit code 2, like every other error the user can fix."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing and exiting with code 1
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from error
