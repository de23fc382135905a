"""Check a composed config before any work is done, naming the offending key in one line."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from idclab import registry
from idclab.data.layout import require_root


class ConfigError(ValueError):
    """A config value that cannot work."""


Rule = tuple[str, Callable[[Any], bool], str]

NUMBER = (int, float)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, NUMBER) and not isinstance(value, bool) and math.isfinite(value)


TRAIN_RULES: list[Rule] = [
    ("seed", _is_int, "an integer"),
    ("optim.lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("optim.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("data.num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("data.strict", lambda v: isinstance(v, bool), "true or false"),
    ("data.decode_workers", lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    ("data.synthetic.n_patients", lambda v: _is_int(v) and v >= 3, "an integer >= 3"),
    ("data.synthetic.min_grid", lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    ("data.synthetic.max_grid", lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    ("data.synthetic.tumour_burden", lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    ("data.synthetic.label_noise", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("data.synthetic.edge_fraction", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("split.train", lambda v: _is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    ("split.val", lambda v: _is_number(v) and 0 <= v < 1, "a fraction in [0, 1)"),
    ("split.test", lambda v: _is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    ("split.seed", _is_int, "an integer"),
    ("loss.alpha", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("loss.gamma", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("loss.pos_weight", lambda v: v is None or (_is_number(v) and v > 0), "null or a number > 0"),
    ("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("augment.p_flip", lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("augment.p_stain", lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("trainer.max_epochs", lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1)"),
    ("checkpoint.mode", lambda v: v in ("min", "max"), "min or max"),
    ("report.bootstrap_resamples", lambda v: _is_int(v) and v >= 10, "an integer >= 10"),
    ("report.gallery_size", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
]

EVALUATE_RULES: list[Rule] = [
    ("batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("select.mode", lambda v: v in ("min", "max"), "min or max"),
    ("report.bootstrap_resamples", lambda v: _is_int(v) and v >= 10, "an integer >= 10"),
    ("report.gallery_size", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
]


def _check(cfg: DictConfig, rules: list[Rule]) -> None:
    for key, ok, expected in rules:
        if OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False) == "__absent__":
            continue
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {expected}, got {value!r}")


def validate_train_config(cfg: DictConfig) -> None:
    """Raise ConfigError (or OptionError) for the first value that cannot work (before any data is read)."""
    _check(cfg, TRAIN_RULES)
    registry.check({group: OmegaConf.to_container(cfg[group], resolve=True) for group in registry.GROUPS})
    synthetic = cfg.data.get("synthetic")
    if synthetic is not None and synthetic.min_grid > synthetic.max_grid:
        raise ConfigError(f"data.synthetic.min_grid ({synthetic.min_grid}) must be <= max_grid ({synthetic.max_grid})")
    if cfg.split.name in ("stratified", "patches"):
        total = cfg.split.train + cfg.split.val + cfg.split.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ConfigError(f"split.train + split.val + split.test must sum to 1, got {total:g}")
    if cfg.split.name == "external" and not cfg.split.root:
        raise ConfigError("split.root must name the second site's data root for split=external")
    if cfg.data.source != "synthetic":
        require_root(cfg.data.root)
    if cfg.split.get("root"):
        require_root(cfg.split.root)


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first evaluate.py value that cannot work."""
    _check(cfg, EVALUATE_RULES)


BALANCING_SAMPLERS = {"weighted", "oversample", "undersample"}


def reweights_classes(loss_cfg: DictConfig) -> bool:
    """True for a loss that weights the classes differently (weighted, class_balanced, focal with alpha)."""
    if loss_cfg.name == "focal":
        return 0 <= loss_cfg.alpha != 0.5
    return loss_cfg.name in ("weighted", "class_balanced")


def double_correction(cfg: DictConfig) -> str | None:
    """A warning when a class-balancing sampler meets a class re-weighting loss (unless allowed)."""
    sampler = cfg.sampler.name
    if cfg.get("allow_double_correction") or sampler not in BALANCING_SAMPLERS or not reweights_classes(cfg.loss):
        return None
    loss = cfg.loss.name
    return (f"sampler {sampler} already balances the classes and loss {loss} re-weights them too: the minority "
            "class is corrected twice. Set allow_double_correction=true if that is what you want.")
