"""The closed registry of options: every model, loss, sampler and augmentation a config may name.

A config group holds `name: <option>` plus keyword arguments. Building looks the name up here (never
an import path read from a config, a checkpoint or a run's state) and checks every keyword against
the factory's signature and type hints, so a file can only choose among the project's own classes
with plain values. The same option names are the params and tags a run is logged with.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any


class OptionError(ValueError):
    """A config (or a file's saved config) names an option or a keyword the registry does not have."""


def _load(reference: str) -> Any:
    """The object a `module:name` reference of this registry names, imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Option:
    """A factory and the keyword arguments the code (not the config) supplies to it. The factory is this package's
    `module:name`, imported when first needed: naming and checking options imports nothing, and building a backbone
    (prediction) imports neither the losses, samplers and augmentations nor Lightning's weight averaging."""

    source: str
    runtime: tuple[str, ...] = ()
    family_source: str | None = None  # a function listing a family's names (timm's architectures): a config's
    # `name` is one of them, passed on to the factory as `name`; the option's own key is not a name

    @property
    def factory(self) -> Callable[..., Any]:
        return _load(self.source)

    @property
    def family(self) -> Callable[[], Collection[str]] | None:
        return None if self.family_source is None else _load(self.family_source)


MODELS, LOSSES, SAMPLING = "idclab.models", "idclab.models.losses", "idclab.data.sampling"
AUGMENT, STAIN, AVERAGING = "idclab.data.augment", "idclab.models.stain", "idclab.classifier.averaging"
REGISTRY: dict[str, dict[str, Option]] = {
    "model": {"idcnet": Option(f"{MODELS}.idcnet:IDCNet", ("in_channels",)),
              "cnn": Option(f"{MODELS}.cnn:CNN", ("in_channels",)),
              "ann": Option(f"{MODELS}.ann:ANN", ("in_channels",)),
              "janowczyk": Option(f"{MODELS}.janowczyk:Janowczyk", ("in_channels",)),
              "timm": Option(f"{MODELS}.timm_backbone:TimmBackbone", ("in_channels",),
                             family_source=f"{MODELS}.timm_backbone:architectures")},
    "loss": {
        "bce": Option(f"{LOSSES}:bce", ("class_counts",)),
        "weighted": Option(f"{LOSSES}:weighted_bce", ("class_counts",)),
        "focal": Option(f"{LOSSES}:focal", ("class_counts",)),
        "class_balanced": Option(f"{LOSSES}:class_balanced", ("class_counts",)),
        "logit_adjusted": Option(f"{LOSSES}:logit_adjusted", ("class_counts",)),
        "ranking": Option(f"{LOSSES}:ranking", ("class_counts",)),
        "truncated": Option(f"{LOSSES}:truncated", ("class_counts",)),
    },
    "sampler": {
        "none": Option(f"{SAMPLING}:no_sampler", ("labels", "seed")),
        "weighted": Option(f"{SAMPLING}:weighted", ("labels", "seed")),
        "oversample": Option(f"{SAMPLING}:oversample", ("labels", "seed")),
        "undersample": Option(f"{SAMPLING}:undersample", ("labels", "seed")),
    },
    "augment": {"none": Option(f"{AUGMENT}:no_augmentation"), "basic": Option(f"{AUGMENT}:basic"),
                "stain": Option(f"{AUGMENT}:stain")},
    "stain": {"none": Option(f"{STAIN}:none"), "reinhard": Option(f"{STAIN}:reinhard"),
              "macenko": Option(f"{STAIN}:macenko")},
    "averaging": {"none": Option(f"{AVERAGING}:none", ("lr",)), "ema": Option(f"{AVERAGING}:ema", ("lr",)),
                  "swa": Option(f"{AVERAGING}:swa", ("lr",))},
}
GROUPS = tuple(REGISTRY)
LATER_GROUPS = {"stain": {"name": "none"}, "averaging": {"name": "none"}}  # absent from older saved configs
NAMED_GROUPS = (*GROUPS, "threshold", "split", "context")  # every group whose `name` is a run's param and tag


def _matches(value: Any, hint: Any) -> bool:
    """True if a plain config value fits a (simple) type hint: numbers, str, bool, None, lists, unions."""
    if hint is Any or hint is inspect.Parameter.empty:
        return isinstance(value, (str, int, float, bool, type(None)))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin in (list, tuple):
        items = args[:1] if origin is list or (len(args) == 2 and args[1] is Ellipsis) else args
        return isinstance(value, (list, tuple)) and all(_matches(v, items[0]) for v in value) if items else False
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None) or hint is None:
        return value is None
    return type(value) is hint


def resolve(group: str, config: Mapping[str, Any]) -> tuple[Option, dict[str, Any]]:
    """The registered option a group config names and its checked keyword arguments."""
    if group not in REGISTRY:
        raise OptionError(f"unknown option group {group!r}; choose one of {', '.join(GROUPS)}")
    if not isinstance(config, Mapping) or "name" not in config:
        raise OptionError(f"{group} must be a mapping with a `name` key, got {config!r}")
    name = config["name"]
    chosen = option_of(group, name)
    option = REGISTRY[group][chosen]
    signature = inspect.signature(option.factory)
    hints = typing.get_type_hints(option.factory.__init__ if inspect.isclass(option.factory) else option.factory)
    accepted = [p for p in signature.parameters if p not in option.runtime and p != "name"]
    kwargs = {key: value for key, value in config.items() if key != "name"}
    for key, value in kwargs.items():
        if key not in accepted:
            raise OptionError(f"{group}.{key} is not a setting of {group}={chosen} "
                              f"(settings: {', '.join(accepted) or 'none'})")
        if not _matches(value, hints.get(key, Any)):
            raise OptionError(f"{group}.{key}={value!r} has the wrong type for {group}={chosen} "
                              f"(expected {hints.get(key, 'a plain value')})")
    return option, {"name": name, **kwargs} if option.family_source else kwargs


def option_of(group: str, name: Any) -> str:
    """The registered option a group's `name` chooses: itself, or the family that holds it (`timm` for
    `resnet18`). OptionError listing the options and the closest names for any other."""
    options = REGISTRY[group]
    plain = [key for key, option in options.items() if option.family_source is None]
    if isinstance(name, str) and name in plain:
        return name  # no family listed (timm's is imported only for a name that is not a plain option)
    families = {key: option.family() for key, option in options.items() if option.family_source is not None}
    if isinstance(name, str):
        for key, names in families.items():
            if name in names:
                return key
    close = difflib.get_close_matches(str(name), [*plain, *(n for names in families.values() for n in names)],
                                      n=5, cutoff=0.5)
    kinds = "".join(f" or one of {len(names)} {key} names ({group}={key} {group}.name=NAME)"
                    for key, names in families.items())
    raise OptionError(f"{group}.name={name!r} is not an option; choose one of {', '.join(plain)}{kinds}"
                      + (f"; close names: {', '.join(close)}" if close else ""))


def build(group: str, config: Mapping[str, Any], **runtime: Any) -> Any:
    """Build the option a group config names, with the code's runtime arguments (e.g. class counts)."""
    option, kwargs = resolve(group, config)
    return option.factory(**kwargs, **runtime)


def factory(group: str, config: Mapping[str, Any]) -> Callable[..., Any]:
    """The option's factory with its config arguments bound; the caller supplies the runtime ones."""
    option, kwargs = resolve(group, config)
    return functools.partial(option.factory, **kwargs)


def check(config: Mapping[str, Any], settings_of: Collection[str] = GROUPS) -> None:
    """Resolve every registered group of a whole run config, so a bad option fails before any work; the groups not
    in `settings_of` by their option's name alone (their factories are not imported: prediction builds no loss)."""
    for group in GROUPS:
        chosen = group_config(config, group)
        if group in settings_of:
            resolve(group, chosen)
        elif not isinstance(chosen, Mapping) or "name" not in chosen:
            raise OptionError(f"{group} must be a mapping with a `name` key, got {chosen!r}")
        else:
            option_of(group, chosen["name"])


START_SETTINGS = {"weights": None, "pretrained": False}  # where a model's weights start: a checkpoint's replace them


def idle_start(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """A model config without its starting weights (`model.weights`, `model.pretrained`: nothing read or fetched),
    for a model whose weights are loaded next."""
    return {**model_config, **{key: idle for key, idle in START_SETTINGS.items() if key in model_config}}


def group_config(config: Mapping[str, Any], group: str) -> Mapping[str, Any]:
    """A run config's group, or for a group added later and absent from an older config its `none` option."""
    return config[group] if group in config or group not in LATER_GROUPS else LATER_GROUPS[group]


def option_names(config: Mapping[str, Any]) -> dict[str, str]:
    """The option chosen in each named group: {"model": "idcnet", "loss": "focal", ...}; for a family's member
    also its name: {"model": "timm", "model.name": "resnet18"}."""
    names = {}
    for group in (group for group in NAMED_GROUPS if group in config):
        name = str(config[group]["name"])
        names[group] = option_of(group, name) if group in REGISTRY else name
        if names[group] != name:
            names[f"{group}.name"] = name
    return names
