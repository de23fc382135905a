"""What a training run records about itself: its tags, its params, its datasets and config, and its sweep parent."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from idclab.config import registry
from idclab.data.datamodule import PreparedData
from idclab.models.timm_backbone import pretrained_source
from idclab.models.weights import sha256_of
from idclab.tracking.runs import KIND_TAG, TrackedRun, environment, flatten, git_state
from idclab.tracking.sweep import read_parent

STUDY_TAG, STRATEGY_TAG = "idclab.study", "idclab.strategy"  # a study's job: its study and strategy
VAL_PREDICTIONS = "val/predictions.csv"  # the chosen model's validation predictions (a study's verdict reads them)
# the commit of the code this process runs, read once when it is imported: a commit made while a long multirun
# goes on is not what its later jobs run
CODE_STATE = git_state(Path(__file__).parent)


def hydra_context() -> dict[str, Any]:
    """The command-line overrides and, in a multirun, the sweep folder (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {"overrides": [], "sweep": None}
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [o for o in hydra_cfg.overrides.task if o.partition("=")[0] not in CONSOLE_KEYS]
    strategy = [o for o in overrides if o.startswith("study.strategy=")]
    if strategy:  # a study's job: its strategy and seed name it (the study declares what they mean)
        overrides = [*strategy, *(o for o in overrides if o.startswith("seed="))]
    return {"overrides": overrides, "sweep": hydra_cfg.sweep.dir if multirun else None}


def run_tags(config: dict[str, Any], context: dict[str, Any], weights: Mapping[str, str]) -> dict[str, str]:
    """Tags that let the MLflow UI filter and group runs: kind, overrides, sweep, git state, the starting
    `weights` (`start_weights`, or what a resumed run recorded)."""
    tags = {KIND_TAG: "train", "overrides": " ".join(context["overrides"]) or "(defaults)",
            "data_source": config["data"]["source"], **registry.option_names(config), **weights}
    for override in context["overrides"]:
        key, _, value = override.partition("=")
        tags[f"override.{key.lstrip('+~')}"] = value
    if context["sweep"]:
        tags["sweep"] = context["sweep"]
    study = config.get("study") or {}
    if study.get("strategy"):
        tags |= {STUDY_TAG: str(study["name"]), STRATEGY_TAG: str(study["strategy"])}
    tags.update(CODE_STATE)
    return tags


def sweep_parent(context: dict[str, Any]) -> str | None:
    """The MLflow parent run of the multirun this job belongs to (None outside a sweep)."""
    return read_parent(context["sweep"])


def log_inputs(run: TrackedRun, config: dict[str, Any], data: PreparedData, weights: Mapping[str, str]) -> None:
    """Parameters (the flattened config, the starting `weights` and data counts), the datasets, the data summary,
    versions and config."""
    summary = data.summary()
    run.log_params(option_params(config) | dict(weights))
    run.log_datasets({split: data.index.frame(rows) for split, rows in data.split.rows.items()},
                     source=summary["root"])
    run.log_params({f"data.count.{split}.{cls}": n for split, counts in summary["split_counts"].items()
                    for cls, n in counts.items()}
                   | {"data.cache_key": summary["cache_key"], "data.content": summary["content"]})
    run.log_json(summary, "data/summary.json")
    run.log_json(environment(), "environment.json")
    run.log_text(OmegaConf.to_yaml(config), "config/config.yaml")


# settings that act only when another is on: (key or key prefix, the switch, the switch's off value); the others
# are left out of the params, as an option group's keys are those of the chosen option alone
DEPENDENT_SETTINGS = (("cv.", "cv.folds", "None"),)
CONSOLE_KEYS = ("verbose",)  # how much the console shows: not a setting of the run (no param, tag or run name)


def settings_that_apply(params: dict[str, str]) -> dict[str, str]:
    """Flattened settings without those whose switch is off (`cv.val` without `cv.folds`)."""
    return {key: value for key, value in params.items()
            if not any(key.startswith(prefix) and key != switch and params.get(switch) == off
                       for prefix, switch, off in DEPENDENT_SETTINGS)}


def option_params(config: dict[str, Any]) -> dict[str, str]:
    """The flattened config as params, each option group under its own name (`loss` = "focal"; a family's member
    under the family's, its own in `.name`: `model` = "timm", `model.name` = "resnet18")."""
    params = settings_that_apply(flatten(config))
    for group in registry.NAMED_GROUPS:
        params.pop(f"{group}.name", None)
    return params | registry.option_names(config)


def start_weights(config: dict[str, Any]) -> dict[str, str]:
    """The weights a run's model starts from, as params and tags: a local file's resolved path and SHA-256
    (`model.weights`, `model.weights.sha256`), or timm's download (`model.pretrained_weights`)."""
    model = config["model"]
    if model.get("weights"):
        path = Path(model["weights"]).expanduser().resolve()
        return {"model.weights": str(path), "model.weights.sha256": sha256_of(path)}
    if model.get("pretrained"):
        return {"model.pretrained_weights": pretrained_source(model["name"])}
    return {}


START_WEIGHTS_KEYS = ("model.weights", "model.weights.sha256", "model.pretrained_weights")


def recorded_start_weights(tags: Mapping[str, str]) -> dict[str, str]:
    """The starting weights a run recorded in its tags when it started: a resumed run keeps them (its file may be
    gone or changed since; its checkpoint holds the weights)."""
    return {key: tags[key] for key in START_WEIGHTS_KEYS if key in tags}
