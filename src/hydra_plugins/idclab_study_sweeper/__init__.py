"""Hydra instantiates sweepers only from the `hydra_plugins` namespace: this names idclab's study sweeper there
(`conf/hydra/sweeper/study.yaml`). The sweeper is `idclab.tracking.study.StudySweeper`, imported on first use so
that Hydra's plugin scan, which imports this module at every start, stays light (no MLflow or torch)."""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.plugins.sweeper import Sweeper


class StudySweeper(BasicSweeper):
    """Hydra's name for `idclab.tracking.study.StudySweeper`: instantiating it gives that class's instance."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Sweeper:  # type: ignore[misc]
        from idclab.tracking import study

        return study.StudySweeper(*args, **kwargs)
