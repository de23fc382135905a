"""Every trainer's guard: a Ctrl-C Python lost or a SIGTERM stops it at the next batch end of any stage."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import Callback

from idclab.termination import raise_if_interrupted


class InterruptGuard(Callback):
    """Raises a pending interruption (`idclab.termination.raise_if_interrupted`) at each batch end: Lightning's
    own SIGTERM check skips prediction and the last batch of validation and test, and a trainer made after the
    signal (the next fold's) never saw it."""

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        raise_if_interrupted()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        raise_if_interrupted()

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        raise_if_interrupted()

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        raise_if_interrupted()
