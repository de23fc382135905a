"""How much the console shows: quiet by default (a header, a line per epoch, the answer and the next commands);
`verbose=true` adds the details (the whole config, Lightning's device lines and model summary, the full test report).

One switch for the process, set by the entry point's task. The details are in the run's artifacts and in Hydra's log
file either way: only the console leaves them out.
"""

from __future__ import annotations

import logging
import sys

# INFO records these loggers send to the console only with verbose=true (GPU/TPU lines, "Seed set", "Restoring
# states", the MLflow run opened): Hydra's log file keeps them
DETAIL_LOGGERS = ("pytorch_lightning", "lightning", "idclab.tracking.runs")
# loggers with their own console handler (not Hydra's), quiet unless verbose: MLflow's "Creating initial MLflow
# database tables..." on a new store
TERSE_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")


class _Switch:
    verbose = False


class DetailFilter(logging.Filter):
    """Drops the INFO (and lower) records of `DETAIL_LOGGERS` from a console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(DETAIL_LOGGERS)


def set_verbose(on: bool) -> None:
    """Show the details from now on (`on`), or leave them out of the console (idempotent)."""
    _Switch.verbose = bool(on)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "stream", None) not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            continue  # a file (or a test's capture) keeps every record
        for old in [f for f in handler.filters if isinstance(f, DetailFilter)]:
            handler.removeFilter(old)
        if not on:
            handler.addFilter(DetailFilter())
    for name in TERSE_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if on else logging.WARNING)


def is_verbose() -> bool:
    return _Switch.verbose


def detail(text: str) -> None:
    """Print `text` with verbose=true only."""
    if _Switch.verbose:
        print(text)
