"""Check a composed config before any work is done, naming the offending key in one line."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from idclab.config import registry
from idclab.data.layout import DataLayoutError, require_root
from idclab.data.neighbourhood import MAX_RINGS, check_rings, input_channels, views_of
from idclab.data.split import SPLIT_METHODS
from idclab.data.synthetic import SyntheticSpec
from idclab.models.timm_backbone import FREEZE, PATCH_SIDE
from idclab.scoring.context import MAX_RADIUS
from idclab.scoring.thresholds import METHODS as THRESHOLD_METHODS


class ConfigError(ValueError):
    """A config value that cannot work."""


Rule = tuple[str, Callable[[Any], bool], str]

NUMBER = (int, float)
SCHEDULES = ("none", "cosine", "onecycle")
NEXT_FOLD = "next_fold"  # cv.val: each fold validates on the next fold's patients


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_views(value: Any) -> bool:
    """A valid `data.neighbourhood` (`idclab.data.neighbourhood.check_rings`)."""
    try:
        check_rings(value)
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, NUMBER) and not isinstance(value, bool) and math.isfinite(value)


VALIDATION_METRIC_PREFIXES = ("val_", "best_val_", "cv_val_")


def is_validation_metric(name: Any) -> bool:
    """A metric measured on validation patients: the only kind a run or a group of runs may be selected on (test and
    out-of-fold metrics are measured on the patients they report)."""
    return isinstance(name, str) and name.startswith(VALIDATION_METRIC_PREFIXES)


LOWER_IS_BETTER = ("_fp", "_fn", "_ece", "_brier")  # metric endings minimised, as is any loss


def better_when(metric: str) -> str:
    """`min` for a metric that is better when lower (a loss, false positives or negatives, calibration error),
    else `max`."""
    return "min" if "loss" in metric or metric.endswith(LOWER_IS_BETTER) else "max"


def check_direction(cfg: DictConfig, metric_key: str, mode_key: str) -> None:
    """ConfigError when the mode at `mode_key` would pick the worst value of the metric at `metric_key`."""
    metric, mode = OmegaConf.select(cfg, metric_key), OmegaConf.select(cfg, mode_key)
    if not isinstance(metric, str) or better_when(metric) == mode:
        return
    if mode == "max":
        raise ConfigError(f"{metric_key}={metric} is better when lower: add {mode_key}=min")
    raise ConfigError(f"{metric_key}={metric} is better when higher: drop {mode_key}=min")


def is_model_name(value: Any) -> bool:
    """MLflow's rule for a registered model's name: not blank, no '/' or ':', not a relative path."""
    return (isinstance(value, str) and bool(value.strip()) and not {"/", ":"} & set(value)
            and not value.startswith(".."))


def is_alias(value: Any) -> bool:
    """MLflow's rule for a model alias: letters, digits, '_' and '-', up to 255; 'latest' and 'v<N>' are reserved
    (they already mean the newest version and version N)."""
    return (isinstance(value, str) and re.fullmatch(r"[\w-]{1,255}", value) is not None
            and value.lower() != "latest" and re.fullmatch(r"[vV]\d+", value) is None)


@functools.cache
def epoch_metrics() -> tuple[str, ...]:
    """What a run logs on its validation patients each epoch: the metrics `checkpoint.monitor` may pick from."""
    from idclab.scoring.metrics import binary_metrics

    names = binary_metrics(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]))
    return (*(f"val_{name}" for name in names), "val_loss")


def check_monitor(monitor: Any) -> None:
    """ConfigError unless `monitor` is a metric the run logs on validation each epoch (a typo, a test metric or a
    training one would fail after the run opened, or choose the epoch on the patients it reports)."""
    allowed = epoch_metrics()
    if monitor not in allowed:
        raise ConfigError(f"checkpoint.monitor={monitor} is not a metric a run logs on its validation patients each "
                          f"epoch: one of {', '.join(allowed)}")


def check_deferred_reweighting(cfg: DictConfig) -> None:
    """ConfigError for a `drw.start_epoch` with nothing to defer, or later than the run's last epoch."""
    start = OmegaConf.select(cfg, "drw.start_epoch")
    if start is None:
        return
    if not reweights_classes(cfg.loss) and cfg.sampler.name not in BALANCING_SAMPLERS:
        raise ConfigError(f"drw.start_epoch={start} defers the class weights of the loss or a balancing sampler: "
                          f"loss={cfg.loss.name} has none and sampler={cfg.sampler.name} (use loss=weighted, "
                          "class_balanced or focal, or sampler=weighted, oversample or undersample)")
    if start >= cfg.trainer.max_epochs > 0:
        raise ConfigError(f"drw.start_epoch ({start}) must be < trainer.max_epochs ({cfg.trainer.max_epochs})")


SET_BY_IDCLAB = ("logger", "callbacks", "default_root_dir", "enable_checkpointing", "enable_model_summary")


def check_trainer(trainer: DictConfig) -> None:
    """ConfigError, in one line, for trainer settings Lightning would refuse once a run is open: a key its Trainer
    does not take, an accelerator this machine lacks, an unknown strategy. Builds (and drops) a Trainer without
    logger or checkpoints; the global torch flags it sets are restored."""
    import pytorch_lightning as pl

    options = OmegaConf.to_container(trainer, resolve=True)
    accepted = inspect.signature(pl.Trainer.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())  # a wrapped __init__
    for key in options:
        if key not in accepted and not takes_any:
            raise ConfigError(f"trainer.{key} is not an option of Lightning's Trainer")
        if key in SET_BY_IDCLAB:
            raise ConfigError(f"trainer.{key} is set by idclab (the MLflow logger, its callbacks and checkpoints in "
                              "the run's output folder; verbose=true shows the model summary): drop it")
    flags, silenced = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark), \
        logging.root.manager.disable
    logging.disable(logging.WARNING)  # the real trainer says it all again: device lines, precision warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pl.Trainer(**{**options, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                          "enable_model_summary": False})
    except Exception as error:  # Lightning's MisconfigurationException, ValueError, RuntimeError...
        setting = ", ".join(f"trainer.{key}={options[key]}" for key in ("accelerator", "strategy") if key in options)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{setting}: {reason}") from None
    finally:
        logging.disable(silenced)
        torch.use_deterministic_algorithms(flags[0])
        torch.backends.cudnn.benchmark = flags[1]


PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16")  # "*-true" half or double precision would cast
# the model's weights but not the float32 images the stain and colour maths make
PRECISION_RULE: Rule = ("trainer.precision", lambda v: str(v) in PRECISIONS,
                        f"one of {', '.join(PRECISIONS)} (full or mixed precision)")
SYSTEM_METRICS_RULE: Rule = ("logger.system_metrics_interval", lambda v: v is None or (_is_number(v) and v > 0),
                             "null or a number of seconds > 0")
MAX_WORKERS = 256  # processes a data loader or the decoder may start
LOADER_WORKERS_RULE: Rule = ("data.num_workers", lambda v: is_int(v) and 0 <= v <= MAX_WORKERS,
                             f"an integer from 0 to {MAX_WORKERS}")
DECODE_WORKERS_RULE: Rule = ("data.decode_workers", lambda v: v is None or (is_int(v) and 1 <= v <= MAX_WORKERS),
                             f"null or an integer from 1 to {MAX_WORKERS}")
REPORT_RULES: list[Rule] = [
    ("report.bootstrap_resamples", lambda v: is_int(v) and v >= 10, "an integer >= 10"),
    ("report.gallery_size", lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    ("report.heatmap_patients", lambda v: (is_int(v) and v >= 0) or (OmegaConf.is_list(v) and all(
        isinstance(p, (str, int)) and not isinstance(p, bool) for p in v)), "an integer >= 0 or a list of patient ids"),
]
TRAIN_RULES: list[Rule] = [
    ("seed", is_int, "an integer"),
    ("verbose", lambda v: isinstance(v, bool), "true or false"),
    ("optim.lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("optim.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("data.batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    LOADER_WORKERS_RULE,
    ("data.strict", lambda v: isinstance(v, bool), "true or false"),
    ("data.neighbourhood", lambda v: _is_views(v),
     f"an integer from 0 to {MAX_RINGS} (rings of patches) or a list of distinct integers from 1 to {MAX_RINGS} "
     "(one view each)"),
    DECODE_WORKERS_RULE,
    ("data.synthetic.n_patients", lambda v: is_int(v) and 3 <= v <= 1000, "an integer from 3 to 1000"),
    ("data.synthetic.min_grid", lambda v: is_int(v) and 2 <= v <= 200, "an integer from 2 to 200"),
    ("data.synthetic.max_grid", lambda v: is_int(v) and 2 <= v <= 200, "an integer from 2 to 200"),
    ("data.synthetic.tumour_burden", lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    ("data.synthetic.label_noise", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("data.synthetic.edge_fraction", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("split.train", lambda v: _is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    ("split.val", lambda v: _is_number(v) and 0 <= v < 1, "a fraction in [0, 1)"),
    ("split.test", lambda v: _is_number(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    ("split.seed", is_int, "an integer"),
    ("loss.alpha", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("loss.gamma", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("loss.pos_weight", lambda v: v is None or (_is_number(v) and v > 0), "null or a number > 0"),
    ("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("augment.p_flip", lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("augment.p_stain", lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("trainer.max_epochs", lambda v: is_int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1)"),
    ("checkpoint.mode", lambda v: v in ("min", "max"), "min or max"),
    ("optim.schedule", lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    ("optim.warmup_epochs", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("drw.start_epoch", lambda v: v is None or (is_int(v) and v >= 0), "null or an integer >= 0"),
    ("early_stopping.patience", lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1"),
    ("mixup.alpha", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("loss.tau", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("loss.weight", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("loss.drop", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("model.depth", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    ("model.widths", lambda v: OmegaConf.is_list(v) and len(v) >= 1 and all(is_int(w) and w >= 1 for w in v),
     "a non-empty list of integers >= 1"),
    ("model.freeze", lambda v: v in FREEZE, f"one of {', '.join(FREEZE)}"),
    ("model.encoder_lr_scale", lambda v: _is_number(v) and v > 0, "a number > 0 (freeze the encoder with "
     "model.freeze=encoder)"),
    ("model.weights", lambda v: v is None or (isinstance(v, str) and v.lower().endswith(".safetensors")),
     "null or the path of a .safetensors file (pickled .pth/.ckpt/.bin files are refused: a weights file is data)"),
    ("model.pretrained", lambda v: isinstance(v, bool), "true or false"),
    ("model.img_size", lambda v: v is None or (is_int(v) and v == PATCH_SIDE),
     f"null or {PATCH_SIDE} (the patches' side)"),
    ("model.patch_size", lambda v: v is None or (is_int(v) and 1 <= v <= PATCH_SIDE and PATCH_SIDE % v == 0),
     f"null or a divisor of {PATCH_SIDE} (a ViT's token grid must tile the patch)"),
    ("stain.sample", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    ("stain.alpha", lambda v: _is_number(v) and 0 <= v < 50, "a percentile in [0, 50)"),
    ("stain.beta", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("averaging.decay", lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    ("averaging.swa_lr", lambda v: v is None or (_is_number(v) and v > 0), "null or a number > 0"),
    ("averaging.epoch_start", lambda v: _is_number(v) and (0 < v <= 1 or (is_int(v) and v >= 1)),
     "a fraction in (0, 1] of max_epochs or an epoch >= 1"),
    ("averaging.annealing_epochs", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    ("threshold.name", lambda v: v in THRESHOLD_METHODS, f"one of {', '.join(THRESHOLD_METHODS)}"),
    ("threshold.value", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("threshold.target_sensitivity", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    ("context.name", lambda v: v in ("none", "neighbours"), "none or neighbours"),
    ("context.radius", lambda v: is_int(v) and 1 <= v <= MAX_RADIUS,
     f"an integer from 1 to {MAX_RADIUS} (patch steps)"),
    ("context.weight", lambda v: v is None or (_is_number(v) and 0 <= v < 1), "null (tuned) or a number in [0, 1)"),
    *REPORT_RULES,
    ("ensemble.members", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    ("cv.folds", lambda v: v is None or (is_int(v) and v >= 2), "null or an integer >= 2"),
    ("cv.val", lambda v: v == NEXT_FOLD or (_is_number(v) and 0 < v < 1), f"a fraction in (0, 1) or {NEXT_FOLD}"),
    ("cv.seed", is_int, "an integer"),
    ("cv.train_patients", lambda v: _is_number(v) and 0 < v <= 1, "a fraction in (0, 1]"),
    ("cv.train_patches", lambda v: _is_number(v) and 0 < v <= 1, "a fraction in (0, 1]"),
    PRECISION_RULE,
    SYSTEM_METRICS_RULE,
]

EVALUATE_RULES: list[Rule] = [
    ("batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    ("select.metric", is_validation_metric,
     f"a validation metric ({', '.join(prefix + '*' for prefix in VALIDATION_METRIC_PREFIXES)})"),
    ("select.mode", lambda v: v in ("min", "max"), "min or max"),
    ("tta", lambda v: isinstance(v, bool), "true or false"),
    ("verbose", lambda v: isinstance(v, bool), "true or false"),
    ("register.name", lambda v: v is None or is_model_name(v), "null or a model name without '/' or ':'"),
    ("register.alias", is_alias, "an alias other than 'latest' or 'v<N>' (letters, digits, '_', '-')"),
    ("split_from", lambda v: v in ("recorded", "fresh"), "recorded or fresh"),
    ("export.weights", lambda v: v is None or (isinstance(v, str) and v.lower().endswith(".safetensors")),
     "null or the path of a .safetensors file to write"),
    LOADER_WORKERS_RULE,
    DECODE_WORKERS_RULE,
    *REPORT_RULES,
    PRECISION_RULE,
    SYSTEM_METRICS_RULE,
]


def _check(cfg: DictConfig, rules: list[Rule]) -> None:
    for key, ok, expected in rules:
        if OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False) == "__absent__":
            continue
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested mapping/list/tuple."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _leaves(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for number, item in enumerate(value):
            yield from _leaves(item, f"{key}[{number}]")
    else:
        yield key, value


PLAIN = (str, int, float, bool, type(None))


def check_saved_config(config: dict[str, Any]) -> None:
    """A run config read from a file (a checkpoint, a run state) before anything uses it: plain values only (an
    `${...}` interpolation would make OmegaConf call the resolver it names; `???` is OmegaConf's missing value),
    values the training checks accept, a known split method and a synthetic spec of known keys. ConfigError naming
    the key."""
    if not isinstance(config, dict):
        raise ConfigError("the saved config is not a mapping")
    for key, value in _leaves(config):
        if not isinstance(value, PLAIN):
            raise ConfigError(f"{key} holds a {type(value).__name__}: a saved config holds plain values only")
        if isinstance(value, str) and ("${" in value or value == "???"):
            raise ConfigError(f"{key} holds an interpolation ({value!r}): a saved config holds plain values only")
    _check(OmegaConf.create(config), TRAIN_RULES)
    split = (config.get("split") or {}).get("name")
    if split is not None and split not in SPLIT_METHODS:
        raise ConfigError(f"split.name must be one of {', '.join(sorted(SPLIT_METHODS))}, got {split!r}")
    synthetic = (config.get("data") or {}).get("synthetic") or {}
    unknown = sorted(set(synthetic) - {spec.name for spec in fields(SyntheticSpec)})
    if unknown:
        raise ConfigError(f"data.synthetic holds unknown keys: {', '.join(unknown)}")


def job_view(config: DictConfig) -> DictConfig:
    """A composed config as its job will see it, before it runs: without Hydra's node, and with a stand-in for the
    job's output folder (known only once Hydra starts the job)."""
    view = copy.deepcopy(config)
    with open_dict(view):
        view.pop("hydra", None)
        OmegaConf.update(view, "paths.output_dir", "(the job's output folder)", force_add=True)
    return view


def validate_train_config(cfg: DictConfig, start: bool = True) -> None:
    """Raise ConfigError (or OptionError) for the first value that cannot work (before any data is read).
    `start=False` (a resumed run: its checkpoint holds the weights) leaves the model's starting weights unread."""
    _check(cfg, TRAIN_RULES)
    check_fine_tuning(cfg)
    registry.check({group: OmegaConf.to_container(cfg[group], resolve=True) for group in registry.GROUPS
                    if group in cfg})
    check_recipe(cfg)
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
    elif cfg.data.get("root"):
        raise ConfigError(f"data.root is read with data=idc; data=synthetic generates its patches (add data=idc to "
                          f"train on {cfg.data.root})")
    if cfg.split.get("root"):
        require_root(cfg.split.root)
    check_monitor(cfg.checkpoint.monitor)
    check_direction(cfg, "checkpoint.monitor", "checkpoint.mode")
    check_deferred_reweighting(cfg)
    if cfg.trainer.get("fast_dev_run"):
        for key, alone in (("ensemble.members", 1), ("cv.folds", None)):
            if OmegaConf.select(cfg, key, default=alone) not in (alone, 1):
                raise ConfigError(f"trainer.fast_dev_run saves no checkpoint: {key}={OmegaConf.select(cfg, key)} "
                                  "builds its model from each member's or fold's best one (drop either)")
    check_family_model(cfg, start)
    check_trainer(cfg.trainer)


FINE_TUNING = (("freeze", "none"), ("encoder_lr_scale", 1.0))  # settings of models with an encoder/head split


def fine_tuning_settings(cfg: DictConfig) -> list[str]:
    """The fine-tuning settings a config turns on, as `model.KEY=VALUE`."""
    return [f"model.{key}={cfg.model.get(key)}" for key, idle in FINE_TUNING if cfg.model.get(key, idle) != idle]


def check_fine_tuning(cfg: DictConfig) -> None:
    """A fine-tuning setting on a model without an encoder/head split (ann, cnn, idcnet) names the model."""
    name = cfg.model.get("name")
    factory = registry.REGISTRY["model"][registry.option_of("model", name)].factory
    settings = fine_tuning_settings(cfg)
    if settings and not hasattr(factory, "encoder_parameters"):
        raise ConfigError(f"{settings[0]} needs a model with an encoder/head split (model=timm): model={name} has none")


def check_family_model(cfg: DictConfig, start: bool = True) -> None:
    """Build a family's model (a timm architecture) as the run will, with its starting weights unless `start` is
    false (a local file checked key by key, or timm's download after the hub answers; a ViT's tokens must tile the
    patch), and pass one 50x50 batch through it: what only building shows fails here, before any run opens."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if registry.REGISTRY["model"][registry.option_of("model", config["model"]["name"])].family is None:
        return
    channels = input_channels(views_of(config))
    model_config = config["model"] if start else registry.idle_start(config["model"])
    try:
        model = registry.build("model", model_config, in_channels=channels).eval()
        if start:  # a new run: a saved one was built as it was
            model.check_tiling()
        with torch.no_grad():
            model(torch.zeros(1, channels, PATCH_SIDE, PATCH_SIDE))
    except (ValueError, TypeError, RuntimeError, AssertionError) as error:
        detail = " ".join(str(error).split())
        raise ConfigError(f"model.name={config['model']['name']}: {detail[:400]}") from error


def check_recipe(cfg: DictConfig) -> None:
    """Training-recipe settings that cannot work together."""
    schedule = OmegaConf.select(cfg, "optim.schedule", default="none")
    if schedule != "none" and cfg.trainer.max_epochs == -1:
        raise ConfigError(f"optim.schedule={schedule} needs trainer.max_epochs >= 1 (it spans the whole run)")
    warmup = OmegaConf.select(cfg, "optim.warmup_epochs", default=0)
    if warmup and cfg.trainer.max_epochs == -1:
        raise ConfigError(f"optim.warmup_epochs={warmup} needs trainer.max_epochs >= 1 (its steps are a share of the "
                          "run's)")
    if warmup >= cfg.trainer.max_epochs > 0:
        raise ConfigError(f"optim.warmup_epochs ({warmup}) must be < trainer.max_epochs ({cfg.trainer.max_epochs})")
    if OmegaConf.select(cfg, "data.neighbourhood", default=0) and cfg.augment.name == "stain":
        raise ConfigError("augment=stain jitters the colours of one 3-channel patch: with a neighbourhood view "
                          "(data.neighbourhood) use augment=basic or none (or data.neighbourhood=0)")
    folds = OmegaConf.select(cfg, "cv.folds")
    if folds is not None and folds < 3 and OmegaConf.select(cfg, "cv.val") == NEXT_FOLD:
        raise ConfigError(f"cv.val=next_fold needs cv.folds >= 3 (a fold to test, the next to validate, the rest to "
                          f"train), got cv.folds={folds}")
    for key in ("cv.train_patients", "cv.train_patches"):
        share = OmegaConf.select(cfg, key, default=1.0)
        if share < 1 and not folds:
            raise ConfigError(f"{key}={share:g} thins each fold's training data: set cv.folds (a learning curve "
                              "is measured by cross-validation)")
    averaging = OmegaConf.select(cfg, "averaging.name", default="none")
    if averaging == "swa" and OmegaConf.select(cfg, "early_stopping.patience") is not None:
        raise ConfigError("averaging=swa averages the last epochs: set early_stopping.patience=null")
    fine_tuning = fine_tuning_settings(cfg)
    if averaging == "swa" and fine_tuning:
        raise ConfigError("averaging=swa anneals every parameter to one learning rate and re-estimates every batch "
                          f"norm's statistics: with {' and '.join(fine_tuning)} use averaging=none or ema")
    members = OmegaConf.select(cfg, "ensemble.members", default=1)
    for asked, what in ((members > 1, f"ensemble.members={members} trains its members"),
                        (bool(folds), f"cv.folds={folds} runs its folds")):
        if asked and not one_device(cfg.trainer):
            raise ConfigError(f"{what} one after another on one device: set trainer.devices=1 and "
                              "trainer.num_nodes=1")


def one_device(trainer: DictConfig) -> bool:
    """Whether the Lightning trainer settings train on a single device (devices=auto counts all GPUs, so it is one
    device only on the CPU)."""
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    single = (devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
              or (devices == "auto" and trainer.get("accelerator") == "cpu"))
    return single and nodes == 1


def validate_evaluate_config(cfg: DictConfig, trainer: bool = True) -> None:
    """Raise ConfigError for the first evaluate.py value that cannot work (`trainer=False`: a task that builds no
    Lightning trainer, whose settings are then left unchecked)."""
    _check(cfg, EVALUATE_RULES)
    check_direction(cfg, "select.metric", "select.mode")
    if cfg.ckpt_path and cfg.model_uri:
        raise ConfigError("ckpt_path and model_uri both name a model: keep one")
    if cfg.register.name and cfg.tta:
        raise ConfigError("register.name registers the training run's model, without TTA (its threshold was tuned "
                          "without it): register without tta=true, then evaluate the registered model with tta=true")
    if OmegaConf.select(cfg, "export.weights"):
        for key, idle in (("register.name", None), ("predict", []), ("tta", False)):
            if OmegaConf.select(cfg, key) not in (idle, None):
                raise ConfigError(f"export.weights writes the backbone and does nothing else: drop {key} (run "
                                  "evaluate.py again for it)")
        if Path(cfg.export.weights).expanduser().exists():
            raise ConfigError(f"export.weights: {cfg.export.weights} already exists; remove it or choose another path")
    if not one_device(cfg.trainer):
        raise ConfigError("evaluate.py runs on one device: set trainer.devices=1 (and trainer.num_nodes=1); under "
                          "DDP every process would evaluate, each on part of the validation patients")
    if cfg.data.root:
        require_root(cfg.data.root)
    if trainer:
        check_trainer(cfg.trainer)


def require_both_classes(split_counts: dict[str, dict[str, int]], splits: tuple[str, ...] = ("train", "val")) -> None:
    """DataLayoutError (one line: the split, the missing class, the counts) if a split lacks a class:
    a model cannot learn, be selected or get a threshold without both."""
    for split in splits:
        counts = split_counts[split]
        for name, count in counts.items():
            if count == 0:
                found = ", ".join(f"{n} {c}" for c, n in sorted(counts.items(), key=lambda item: item[0] != name))
                raise DataLayoutError(f"the {split} split holds no {name} patches ({found}): training needs both "
                                      "classes in train and val; check data.root and the split settings")


BALANCING_SAMPLERS = {"weighted", "oversample", "undersample"}


def reweights_classes(loss_cfg: DictConfig) -> bool:
    """True for a loss that weights the classes differently (weighted, class_balanced, focal with alpha)."""
    if loss_cfg.name == "focal":
        return 0 <= loss_cfg.alpha != 0.5
    return loss_cfg.name in ("weighted", "class_balanced")


def config_warnings(cfg: DictConfig) -> list[str]:
    """What a valid config may not mean to do: each a one-line warning."""
    return [w for w in (double_correction(cfg), leaky_neighbourhood(cfg), random_encoder(cfg)) if w]


def random_encoder(cfg: DictConfig) -> str | None:
    """A warning when fine-tuning settings (a frozen or slowed encoder) meet an encoder of random weights."""
    tuned = fine_tuning_settings(cfg)
    if not tuned or cfg.model.get("weights") or cfg.model.get("pretrained"):
        return None
    return (f"{' and '.join(tuned)} without model.weights or model.pretrained=true: the encoder starts from random "
            "weights, so it is a random-feature probe, not fine-tuning")


def leaky_neighbourhood(cfg: DictConfig) -> str | None:
    """A warning when the leaky patch-level split meets a neighbourhood view: a training patch's view then also
    holds the pixels of test patches beside it, so the test metrics are inflated twice."""
    rings = cfg.data.get("neighbourhood", 0)
    if cfg.split.name != "patches" or not rings:
        return None
    return (f"split=patches with data.neighbourhood={rings}: training patches see test patches' pixels in their "
            "neighbourhood view as well as their slides; the test metrics are leaky twice over")


def double_correction(cfg: DictConfig) -> str | None:
    """A warning when a class-balancing sampler meets a class re-weighting loss (unless allowed)."""
    sampler = cfg.sampler.name
    if cfg.get("allow_double_correction") or sampler not in BALANCING_SAMPLERS or not reweights_classes(cfg.loss):
        return None
    loss = cfg.loss.name
    return (f"sampler {sampler} already balances the classes and loss {loss} re-weights them too: the minority "
            "class is corrected twice. Set allow_double_correction=true if that is what you want.")
