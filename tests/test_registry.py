"""A file is data: models and losses are rebuilt only from the closed option registry."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from idclab.config import registry
from idclab.config.build import CheckpointError, build_classifier, load_classifier
from idclab.models.idcnet import IDCNet

CONFIG = {
    "model": {"name": "idcnet", "widths": [8, 16], "depth": 1, "dropout": 0.0},
    "loss": {"name": "focal", "alpha": 0.75, "gamma": 2.0},
    "sampler": {"name": "none"},
    "augment": {"name": "basic", "p_flip": 0.5, "batched": True},
    "optim": {"lr": 1e-3, "weight_decay": 0.0},
}


def write_checkpoint(path: Path, config: dict, **hparams: object) -> Path:
    """A checkpoint as training writes it, with `config` saved inside (built from the honest CONFIG)."""
    classifier = build_classifier(CONFIG, [30, 10], [0.5] * 3, [0.2] * 3)
    saved = {"config": config, "class_counts": [30, 10], "mean": [0.5] * 3, "std": [0.2] * 3, "threshold": 0.4}
    torch.save({"state_dict": classifier.state_dict(), "hyper_parameters": saved | hparams}, path)
    return path


def test_build_uses_the_option_name_and_keywords():
    model = registry.build("model", CONFIG["model"])
    assert isinstance(model, IDCNet)
    assert registry.build("loss", CONFIG["loss"], class_counts=[3, 1]).alpha == 0.75


@pytest.mark.parametrize(("group", "config", "message"), [
    ("model", {"name": "resnet9000"}, "model.name='resnet9000' is not an option"),
    ("model", {"name": "idcnet", "_target_": "os.system"}, "model._target_ is not a setting of model=idcnet"),
    ("loss", {"name": "focal", "alpha": {"_target_": "os.system"}}, "loss.alpha="),
    ("loss", {"name": "focal", "alpha": "0.5"}, "wrong type"),
    ("model", {"_target_": "pathlib.Path.touch", "_args_": ["/tmp/x"]}, "`name` key"),
    ("sampler", {"name": "weighted", "labels": [1, 0]}, "sampler.labels is not a setting"),
])
def test_anything_outside_the_registry_is_refused_naming_the_key(group, config, message):
    with pytest.raises(registry.OptionError, match=message.replace("(", r"\(").replace("[", r"\[")):
        registry.build(group, config)


def test_option_names_are_the_conf_file_names():
    conf = Path(__file__).resolve().parents[1] / "conf"
    for group, options in registry.REGISTRY.items():
        files = {p.stem for p in (conf / group).glob("*.yaml")}
        assert files == set(options), group
        for name in files:  # a family's file (model=timm) names one of its members
            assert registry.option_of(group, OmegaConf.load(conf / group / f"{name}.yaml").name) == name


def test_a_checkpoint_naming_a_callable_runs_nothing(tmp_path: Path):
    victim = tmp_path / "pwned"
    attacks = [
        {"_target_": "pathlib.Path.touch", "_args_": [str(victim)]},
        {"name": "idcnet", "widths": {"_target_": "pathlib.Path.touch", "self": str(victim)}},
        {"_target_": "torch.hub.load", "repo_or_dir": "evil/repo", "model": "x"},
    ]
    for number, attack in enumerate(attacks):
        config = copy.deepcopy(CONFIG) | {"model": attack}
        path = write_checkpoint(tmp_path / f"evil{number}.ckpt", config)
        with pytest.raises(CheckpointError, match="cannot rebuild"):
            load_classifier(path)
    assert not victim.exists()


@pytest.mark.parametrize(("section", "message"), [
    ({"data": {"root": "${oc.env:HOME}"}}, r"data.root holds an interpolation"),  # OmegaConf would call a resolver
    ({"split": {"name": "stratified", "train": "${oc.decode:'0.7'}"}}, r"split.train holds an interpolation"),
    ({"data": {"num_workers": 100000}}, r"data.num_workers must be an integer from 0 to"),
    ({"data": {"decode_workers": 100000}}, r"data.decode_workers must be null or an integer from 1 to"),
    ({"split": {"name": "stratified", "train": 7}}, r"split.train must be a fraction in \[0, 1\]"),
    ({"data": {"source": "synthetic", "synthetic": {"n_patients": 5, "rm_rf": "/"}}},
     r"data.synthetic holds unknown keys: rm_rf"),
    ({"data": {"neighbourhood": ("${oc.env:HOME}",)}}, r"data.neighbourhood\[0\] holds an interpolation"),  # a tuple
    ({"data": {"strict": "???"}}, r"data.strict holds an interpolation"),  # OmegaConf's missing value
    ({"data": {"batch_size": torch.tensor(3)}}, r"data.batch_size holds a Tensor"),
    ({"data": {"synthetic": {"n_patients": 10**9}}}, r"data.synthetic.n_patients must be an integer from 3 to"),
    ({"split": {"name": "os.system"}}, r"split.name must be one of"),
])
def test_a_checkpoints_data_and_split_settings_are_plain_checked_values(tmp_path: Path, section, message):
    """A checkpoint's config also drives evaluation's data and split: interpolations (resolvers the file would
    name), process counts and values training would refuse are refused when it is loaded, naming the key."""
    path = write_checkpoint(tmp_path / "odd.ckpt", copy.deepcopy(CONFIG) | section)
    with pytest.raises(CheckpointError, match=message) as error:
        load_classifier(path)
    assert "\n" not in str(error.value)


def test_a_checkpoint_with_odd_hyperparameters_is_refused(tmp_path: Path):
    path = write_checkpoint(tmp_path / "odd.ckpt", CONFIG, mean="os.system")
    with pytest.raises(CheckpointError, match="mean must be 3 numbers"):
        load_classifier(path)
    for fingerprint in ({"cache_key": "abc"}, {"cache_key": 3, "patches": {}}, {"cache_key": "k", "patches": {"x": 1}},
                        {"cache_key": "k", "content": 7, "patches": {}}):
        path = write_checkpoint(tmp_path / "odd.ckpt", CONFIG, data_fingerprint=fingerprint)
        with pytest.raises(CheckpointError, match="data_fingerprint must hold"):
            load_classifier(path)
    write_checkpoint(tmp_path / "ok.ckpt", CONFIG, data_fingerprint={"cache_key": "k", "patches": {"test": 4}})
    load_classifier(tmp_path / "ok.ckpt")


@pytest.mark.parametrize("state", [None, "weights", {"model.fc.weight": "not a tensor"}])
def test_a_checkpoint_without_usable_weights_is_one_line(tmp_path: Path, state):
    path = write_checkpoint(tmp_path / "ok.ckpt", CONFIG)
    checkpoint = torch.load(path, weights_only=True)
    if state is None:
        del checkpoint["state_dict"]
    else:
        checkpoint["state_dict"] = state
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="weights") as error:
        load_classifier(path)
    assert "\n" not in str(error.value)


def test_an_honest_checkpoint_loads_with_its_threshold(tmp_path: Path):
    classifier = load_classifier(write_checkpoint(tmp_path / "ok.ckpt", CONFIG))
    assert classifier.threshold == pytest.approx(0.4)


def test_a_neighbourhood_config_builds_a_six_channel_model_and_a_bad_one_is_refused(tmp_path: Path):
    config = copy.deepcopy(CONFIG) | {"data": {"neighbourhood": 1}}
    classifier = build_classifier(config, [30, 10], [0.5] * 3, [0.2] * 3)
    assert classifier.input_views == (1,) and classifier.model.features[0][0].in_channels == 6
    patch = torch.randint(0, 256, (2, 3, 50, 50), dtype=torch.uint8)
    view = torch.randint(0, 256, (2, 3, 50, 50), dtype=torch.uint8)
    with torch.no_grad():  # the second view is an input: changing it changes the logits
        assert not torch.allclose(classifier(torch.cat([patch, view], 1)), classifier(torch.cat([patch, patch], 1)))
    torch.save({"state_dict": classifier.state_dict(),
                "hyper_parameters": {"config": config, "class_counts": [30, 10], "mean": [0.5] * 3,
                                     "std": [0.2] * 3}}, tmp_path / "six.ckpt")
    assert load_classifier(tmp_path / "six.ckpt").input_views == (1,)
    multi = build_classifier(copy.deepcopy(CONFIG) | {"data": {"neighbourhood": [1, 2]}}, [30, 10], [0.5] * 3,
                             [0.2] * 3)
    assert multi.input_views == (1, 2) and multi.model.features[0][0].in_channels == 9
    bad = write_checkpoint(tmp_path / "bad.ckpt", copy.deepcopy(CONFIG) | {"data": {"neighbourhood": "os.system"}})
    with pytest.raises(CheckpointError, match="data.neighbourhood must be an integer"):
        load_classifier(bad)
    mixed = {"ensemble": [torch.load(tmp_path / "six.ckpt", weights_only=True),
                          torch.load(write_checkpoint(tmp_path / "plain.ckpt", CONFIG), weights_only=True)]}
    torch.save(mixed, tmp_path / "mixed.ckpt")
    with pytest.raises(CheckpointError, match="members see different neighbourhoods"):
        load_classifier(tmp_path / "mixed.ckpt")
    three = write_checkpoint(tmp_path / "three.ckpt", config)  # 3-channel weights saved with a neighbourhood config
    with pytest.raises(CheckpointError, match="does not match the model config"):
        load_classifier(three)


@pytest.mark.parametrize(("config", "widths", "dropout"), [
    ({"name": "ann", "hidden": [64, 16], "dropout": 0.25}, [64, 16], 0.25),
    ({"name": "cnn", "channels": [8, 16, 24], "dense": 40, "dropout": 0.1}, [8, 16, 24, 40], 0.1),
    ({"name": "janowczyk", "dense": 20, "dropout": 0.3}, [20], 0.3),
    ({"name": "idcnet", "widths": [8, 12, 20], "depth": 1, "residual": False, "dropout": 0.4}, [8, 12, 20], 0.4),
])
def test_a_models_shape_and_dropout_follow_its_config(config, widths, dropout):
    """Each model key changes the network: its layers' widths and its dropout are the config's."""
    model = registry.build("model", config, in_channels=3)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    outputs = [m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels for m in layers]
    assert all(width in outputs for width in widths), outputs
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {dropout}
    assert model(torch.zeros(2, 3, 50, 50)).shape[0] == 2


def test_weight_decay_reaches_the_optimizer(make_cfg):
    for decay in (0.0, 0.05):
        config = OmegaConf.to_container(make_cfg(f"optim.weight_decay={decay}"), resolve=True)
        (group,) = build_classifier(config, [30, 10], [0.5] * 3, [0.2] * 3).configure_optimizers().param_groups
        assert group["weight_decay"] == decay
