"""SIGTERM (a SLURM time limit, `timeout`, `kill`) stops a task like Ctrl-C, then the process exits with 143;
Ctrl-C is never lost.

Outside Lightning the handler raises `Terminated` at once; the `TrackedRun` being unwound ends its MLflow
run KILLED. While a Lightning trainer runs, its own SIGTERM handler calls ours too, and the trainer stops at
its next batch end (never inside a checkpoint write): Lightning's loops check for training and for all but the
last batch of validation and test; `raise_if_interrupted`, called at every batch end (training, validation, test,
prediction) and before a run opens, covers the rest, so no later stage, fold or trainer starts. Either way the
process leaves with status 143 (128 + SIGTERM), as a process killed by the signal does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_STATUS = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """The process received SIGTERM."""

    def __init__(self) -> None:
        super().__init__(EXIT_STATUS)


class CtrlC:
    """Ctrl-C raises KeyboardInterrupt and is remembered. Python drops an exception raised inside a finalizer
    (`__del__`, a weakref callback), so a Ctrl-C that lands there would be lost and training would go on:
    `raise_if_lost` raises it again (called at every batch end and when a tracked run closes)."""

    received = False

    @classmethod
    def handler(cls, signum: int, frame: FrameType | None) -> None:
        cls.received = True
        raise KeyboardInterrupt

    @classmethod
    def raise_if_lost(cls) -> None:
        if cls.received:
            raise KeyboardInterrupt


class SigtermHandler:
    """Records SIGTERM; raises `Terminated` on the first one unless a Lightning trainer handles it."""

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        first = not self.received
        self.received = True
        if first and signal.getsignal(signal.SIGTERM) is self:  # else Lightning's handler called us
            raise Terminated


_active: list[SigtermHandler] = []  # the handler of the innermost `sigterm_exits_143` block


def raise_if_interrupted() -> None:
    """Raise a Ctrl-C that Python lost (KeyboardInterrupt) or a SIGTERM a trainer took (`Terminated`)."""
    CtrlC.raise_if_lost()
    if _active and _active[-1].received:
        raise Terminated


@contextmanager
def sigterm_exits_143() -> Iterator[None]:
    """Within the block SIGTERM stops the work and Ctrl-C is remembered (`CtrlC`); on leaving the block after a
    SIGTERM, raise `Terminated` (exit 143)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    handler = SigtermHandler()
    previous = signal.signal(signal.SIGTERM, handler)
    previous_sigint = signal.signal(signal.SIGINT, CtrlC.handler)
    _active.append(handler)
    try:
        yield
    finally:
        _active.pop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_sigint)
        if handler.received:
            raise Terminated  # whatever the block raised on the way out, the exit status is 143
