"""What a training run records about itself: its tags, its params, its datasets and config, and its sweep parent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from idclab.config import registry
from idclab.data.datamodule import PreparedData
from idclab.tracking.runs import KIND_TAG, TrackedRun, environment, flatten, git_state
from idclab.tracking.sweep import read_parent


def hydra_context() -> dict[str, Any]:
    """The command-line overrides and, in a multirun, the sweep folder (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {"overrides": [], "sweep": None}
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return {"overrides": list(hydra_cfg.overrides.task), "sweep": hydra_cfg.sweep.dir if multirun else None}


def run_tags(config: dict[str, Any], context: dict[str, Any]) -> dict[str, str]:
    """Tags that let the MLflow UI filter and group runs: kind, overrides, sweep, git state."""
    tags = {KIND_TAG: "train", "overrides": " ".join(context["overrides"]) or "(defaults)",
            "data_source": config["data"]["source"], **registry.option_names(config)}
    for override in context["overrides"]:
        key, _, value = override.partition("=")
        tags[f"override.{key.lstrip('+~')}"] = value
    if context["sweep"]:
        tags["sweep"] = context["sweep"]
    tags.update(git_state(Path(__file__).parent))  # the commit of the code that ran
    return tags


def sweep_parent(context: dict[str, Any]) -> str | None:
    """The MLflow parent run of the multirun this job belongs to (None outside a sweep)."""
    return read_parent(context["sweep"])


def log_inputs(run: TrackedRun, config: dict[str, Any], data: PreparedData) -> None:
    """Parameters (the flattened config and data counts), the datasets, the data summary, versions and config."""
    summary = data.summary()
    run.log_params(option_params(config))
    run.log_datasets({split: data.index.frame(rows) for split, rows in data.split.rows.items()},
                     source=summary["root"])
    run.log_params({f"data.count.{split}.{cls}": n for split, counts in summary["split_counts"].items()
                    for cls, n in counts.items()} | {"data.cache_key": summary["cache_key"]})
    run.log_json(summary, "data/summary.json")
    run.log_json(environment(), "environment.json")
    run.log_text(OmegaConf.to_yaml(config), "config/config.yaml")


def option_params(config: dict[str, Any]) -> dict[str, str]:
    """The flattened config as params, each option group under its own name (`loss` = "focal")."""
    params = flatten(config)
    for group in registry.NAMED_GROUPS:
        if f"{group}.name" in params:
            params[group] = params.pop(f"{group}.name")
    return params
