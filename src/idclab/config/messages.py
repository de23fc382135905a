"""Hydra's and OmegaConf's multi-line messages as the one line a user error gets."""

from __future__ import annotations

import re

from omegaconf.errors import OmegaConfBaseException


def one_line(error: BaseException) -> str:
    """Hydra's message (and its OmegaConf cause) on one line: the config search path and OmegaConf's key and type
    details left out, listed options joined by commas."""
    text = str(error).split("Config search path:")[0]
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        text += "\n" + str(cause).splitlines()[0]
    text = re.sub(r":\s*\n\t", ": ", text).replace("\n\t", ", ")
    return "; ".join(line.strip().rstrip(".") for line in text.splitlines()
                     if line.strip() and not line.strip().startswith(("full_key:", "object_type=")))
