"""model=timm: any timm architecture as a backbone, started from local safetensors, frozen or fine-tuned, exported."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import timm
import torch
from conftest import cut_at_second_epoch_end
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from safetensors.torch import save_file

from idclab.config import registry
from idclab.config.build import build_classifier, load_classifier
from idclab.config.validation import ConfigError, config_warnings, validate_train_config
from idclab.evaluation.evaluate import evaluate, export_weights
from idclab.models.timm_backbone import TimmBackbone, require_hub
from idclab.models.weights import WeightsError, read_weights, sha256_of
from idclab.tracking.inputs import option_params, recorded_start_weights, run_tags, start_weights
from idclab.training import fit
from idclab.training.pipeline import resumed_config, train
from idclab.training.plan import fit_plan
from idclab.training.resume import ResumeError, ResumePoint, starting_weights

PATCHES = torch.rand(4, 3, 50, 50)


class Contacted(BaseException):
    """Raised by a stand-in for the hub or timm's download: no `except Exception` in the code under test hides it."""


def timm_file(path: Path, name: str = "resnet18", **kwargs) -> Path:
    """timm's own network (ImageNet's 1000 classes, 3 channels, random weights) saved as safetensors."""
    save_file(timm.create_model(name, pretrained=False, **kwargs).state_dict(), str(path))
    return path


def test_a_cnn_and_a_vit_take_50x50_patches_with_three_or_six_channels():
    for channels in (3, 6):
        assert TimmBackbone("resnet18", in_channels=channels)(torch.rand(2, channels, 50, 50)).shape == (2,)
    vit = TimmBackbone("vit_tiny_patch16_224", in_channels=6, patch_size=10)  # img_size 50: a fixed-size model
    assert vit(torch.rand(2, 6, 50, 50)).shape == (2,) and vit.net.patch_embed.grid_size == (5, 5)


def test_the_janowczyk_network_has_its_layout_on_50x50_patches():
    model = registry.build("model", {"name": "janowczyk"}, in_channels=3)
    # 5x5 convs 3->32->32->64 (weights + biases), pools 50 -> 25 -> 12 -> 6, dense 64*6*6 -> 64 -> 1
    assert sum(p.numel() for p in model.parameters()) == (75 * 32 + 32) + (800 * 32 + 32) + (800 * 64 + 64) + (
        2304 * 64 + 64) + (64 + 1)
    assert model(torch.rand(2, 3, 50, 50)).shape == (2,)


def test_every_peer_of_the_peer_study_builds_with_the_recipes_inputs(make_cfg):
    """conf/study/peers.yaml: each strategy's job config is valid (timm models built with their 6 input channels)."""
    study = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "study" / "peers.yaml").study
    names = set()
    for overrides in study.strategies.values():
        cfg = make_cfg(*study.common, *overrides)
        validate_train_config(cfg)
        assert (cfg.data.neighbourhood, cfg.ensemble.members, cfg.threshold.name) == (2, 1, "youden")
        names.add(cfg.model.name)
    assert names == {"idcnet", "ann", "cnn", "janowczyk", "resnet18", "mobilenetv3_small_100", "vit_tiny_patch16_224"}


def test_local_weights_start_the_encoder_replace_the_head_and_widen_the_stem(tmp_path: Path):
    path = timm_file(tmp_path / "resnet18.safetensors")
    saved = read_weights(path)
    model = TimmBackbone("resnet18", in_channels=6, weights=str(path))
    state = model.net.state_dict()
    assert torch.equal(state["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])
    assert torch.equal(state["conv1.weight"], torch.cat([saved["conv1.weight"]] * 2, dim=1) / 2)
    assert state["fc.weight"].shape == (1, 512)  # a fresh one-logit head, not ImageNet's
    rgb = TimmBackbone("resnet18", weights=str(path)).eval()
    model.eval()  # a view equal to its patch: the widened stem gives the RGB model's logit
    assert torch.allclose(model.net.forward_features(torch.cat([PATCHES, PATCHES], dim=1)),
                          rgb.net.forward_features(PATCHES), atol=1e-5)


def test_weights_of_another_architecture_name_the_first_mismatched_key(tmp_path: Path):
    path = timm_file(tmp_path / "resnet34.safetensors", "resnet34")
    with pytest.raises(WeightsError, match=r"resnet34.safetensors does not fit timm resnet18 with 3 input channels: "
                                           r"\d+ keys of the file not in the model \(first: layer1\.2\."):
        TimmBackbone("resnet18", weights=str(path))


def test_an_exported_backbone_starts_a_model_with_the_same_first_forward_pass(tmp_path: Path):
    trained = TimmBackbone("resnet18", in_channels=6).eval()
    with torch.no_grad():
        trained.net.fc.bias.fill_(0.25)  # a head unlike a fresh one: it travels with the export
    path = trained.export(tmp_path / "exported.safetensors", "run 1")
    started = TimmBackbone("resnet18", in_channels=6, weights=str(path)).eval()
    images = torch.rand(3, 6, 50, 50)
    assert torch.equal(started(images), trained(images))


def test_a_frozen_encoder_trains_its_head_only_and_keeps_its_batch_norm_statistics():
    model = TimmBackbone("resnet18", freeze="encoder").train()
    assert all(p.requires_grad for p in model.head_parameters())
    assert not any(p.requires_grad for p in model.encoder_parameters())
    assert not model.net.bn1.training and model.net.training
    before = model.net.bn1.running_mean.clone()
    model(torch.rand(4, 3, 50, 50))
    assert torch.equal(model.net.bn1.running_mean, before)
    assert TimmBackbone("resnet18").train().net.bn1.training


def classifier_of(cfg, **kwargs):
    config = OmegaConf.to_container(cfg, resolve=True)
    return build_classifier(config, [10, 5], [0.5] * 3, [0.2] * 3, **kwargs)


def test_the_encoder_learns_at_its_scale_of_the_learning_rate_and_a_frozen_one_not_at_all(make_cfg):
    classifier = classifier_of(make_cfg("model=timm", "model.encoder_lr_scale=0.1", "optim.lr=0.01"))
    rest, encoder = classifier.configure_optimizers().param_groups
    assert (rest["lr"], encoder["lr"]) == (0.01, pytest.approx(0.001))
    assert {id(p) for p in rest["params"]} == {id(p) for p in classifier.model.head_parameters()}
    frozen = classifier_of(make_cfg("model=timm", "model.freeze=encoder"))
    (only,) = frozen.configure_optimizers().param_groups
    assert {id(p) for p in only["params"]} == {id(p) for p in frozen.model.head_parameters()}
    (plain,) = classifier_of(make_cfg()).configure_optimizers().param_groups  # idcnet: one group, as before
    assert len(plain["params"]) == len(list(classifier_of(make_cfg()).parameters()))


def test_a_distilled_architecture_has_both_heads_as_its_head(tmp_path: Path):
    """DeiT-distilled's classifier is two linear heads (`get_classifier()` is a tuple): both are the head."""
    path = TimmBackbone("deit_tiny_distilled_patch16_224", in_channels=6, patch_size=10).export(
        tmp_path / "deit.safetensors", "test")
    model = TimmBackbone("deit_tiny_distilled_patch16_224", in_channels=6, patch_size=10, freeze="encoder",
                         weights=str(path))
    assert {key.split(".")[0] for key in model.head_keys()} == {"head", "head_dist"}
    head = {id(p) for p in model.head_parameters()}
    assert head == {id(p) for p in (*model.net.head.parameters(), *model.net.head_dist.parameters())}
    assert all(p.requires_grad for p in model.head_parameters())
    assert not any(p.requires_grad for p in model.encoder_parameters())
    assert model(torch.rand(2, 6, 50, 50)).shape == (2,)


def test_an_export_names_the_build_settings_a_run_needs_to_start_from_it(tmp_path: Path):
    """A ViT built with model.patch_size=10 cannot take its export at timm's default patch size: the file's metadata,
    the mismatch error and the command evaluate.py prints all name the setting."""
    from idclab.evaluation.evaluate import start_command

    vit = TimmBackbone("vit_tiny_patch16_224", in_channels=3, patch_size=10)
    path = vit.export(tmp_path / "vit.safetensors", "run 1")
    assert start_command(vit, path) == (f"model=timm model.name=vit_tiny_patch16_224 model.patch_size=10 "
                                        f"model.weights={path}")
    with pytest.raises(WeightsError, match=r"the file is an idclab export of timm vit_tiny_patch16_224 "
                                           r"\(model.patch_size=10\) with 3 input channels, from run 1"):
        TimmBackbone("vit_tiny_patch16_224", in_channels=3, weights=str(path), patch_size=5)
    assert start_command(TimmBackbone("resnet18", in_channels=3), path).startswith("model=timm model.name=resnet18 "
                                                                                   "model.weights=")


def test_an_unknown_name_suggests_close_ones():
    with pytest.raises(registry.OptionError,
                       match=r"model.name='resnt18' is not an option; choose one of idcnet, "
                             r"cnn, ann, janowczyk or one of \d+ timm names .*close names: resnet18"):
        registry.build("model", {"name": "resnt18"})


def test_runs_are_tagged_with_the_option_and_the_timm_name(make_cfg):
    config = OmegaConf.to_container(make_cfg("model=timm", "model.name=mobilenetv3_small_100"), resolve=True)
    tags = run_tags(config, {"overrides": [], "sweep": None}, {})
    params = option_params(config)
    for record in (tags, params):
        assert (record["model"], record["model.name"]) == ("timm", "mobilenetv3_small_100")
    idcnet = option_params(OmegaConf.to_container(make_cfg(), resolve=True))
    assert idcnet["model"] == "idcnet" and "model.name" not in idcnet


def test_the_starting_weights_are_recorded_by_path_and_digest(make_cfg, tmp_path: Path):
    path = timm_file(tmp_path / "start.safetensors")
    config = OmegaConf.to_container(make_cfg("model=timm", f"model.weights={path}"), resolve=True)
    assert start_weights(config) == {"model.weights": str(path.resolve()), "model.weights.sha256": sha256_of(path)}
    recorded = start_weights(config)
    tags = run_tags(config, {"overrides": [], "sweep": None}, recorded)
    assert tags["model.weights.sha256"] == sha256_of(path)
    path.unlink()  # a resumed run keeps what it recorded, unread
    assert recorded_start_weights(tags) == recorded
    pretrained = OmegaConf.to_container(make_cfg("model=timm", "model.pretrained=true"), resolve=True)
    assert start_weights(pretrained) == {"model.pretrained_weights": "timm/resnet18.a1_in1k"}
    assert recorded_start_weights(run_tags(pretrained, {"overrides": [], "sweep": None}, start_weights(pretrained))
                                  ) == {"model.pretrained_weights": "timm/resnet18.a1_in1k"}


@pytest.mark.parametrize("overrides, message", [
    (["model=timm", "model.name=resnt18"], "close names: resnet18"),
    (["model=timm", "model.weights=/x/resnet18.pth"], "model.weights must be null or the path of a .safetensors file "
                                                      r"\(pickled .pth/.ckpt/.bin files are refused"),
    (["+model.freeze=encoder"], "model.freeze=encoder needs a model with an encoder/head split "
                                r"\(model=timm\): model=idcnet has none"),
    (["model=cnn", "+model.encoder_lr_scale=0.1"], "model=cnn has none"),
    (["model=timm", "model.img_size=50"], "model.name=resnet18: timm resnet18 does not take model.img_size"),
    (["model=timm", "model.freeze=head"], "model.freeze must be one of none, encoder"),
    (["model=timm", "model.weights=/nonexistent/start.safetensors"], r"/nonexistent/start.safetensors does not exist"),
    (["model=timm", "model.weights=/x/start.safetensors", "model.pretrained=true"],
     "model.weights and model.pretrained=true both name the starting weights: choose one"),
    (["model=timm", "model.name=vit_tiny_patch16_224", "model.patch_size=7"],
     "model.patch_size must be null or a divisor of 50"),
    (["model=timm", "model.name=vit_tiny_patch16_224", "model.img_size=64"], "model.img_size must be null or 50"),
    (["model=timm", "model.name=vit_tiny_patch16_224"], "cuts 50x50 patches into 16x16 tokens, leaving pixels out"),
    (["model=timm", "model.freeze=encoder", "averaging=swa"],
     "averaging=swa anneals every parameter to one learning rate and re-estimates every batch norm"),
    (["model=timm", "model.encoder_lr_scale=0.1", "averaging=swa"], "with model.encoder_lr_scale=0.1"),
])
def test_bad_timm_settings_are_refused_before_any_run(make_cfg, tmp_path: Path, overrides, message):
    cfg = make_cfg(*overrides)
    with pytest.raises((ConfigError, registry.OptionError), match=message):
        train(cfg)
    assert not (tmp_path / "mlflow.db").exists()


def test_weights_of_another_architecture_are_refused_before_any_run(make_cfg, tmp_path: Path):
    path = timm_file(tmp_path / "vit.safetensors", "vit_tiny_patch16_224")
    with pytest.raises(ConfigError, match=r"^model.name=resnet18: model.weights=.*vit.safetensors does not fit timm "
                                          r"resnet18 with 6 input channels: \d+ of the model's keys missing from the "
                                          r"file \(first: conv1.weight\)"):
        train(make_cfg("model=timm", f"model.weights={path}", "data.neighbourhood=1"))
    assert not (tmp_path / "mlflow.db").exists()


def test_pretrained_without_the_hub_fails_at_once_in_one_line_before_any_run(make_cfg, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    def no_download(*args, **kwargs):
        raise Contacted("timm was asked to download")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(timm, "create_model", no_download)
    with pytest.raises(ConfigError, match=r"model.pretrained=true downloads timm's weights from huggingface.co, which "
                                          r"this machine cannot reach \(no route to host\)") as error:
        validate_train_config(make_cfg("model=timm", "model.pretrained=true"))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError):
        train(make_cfg("model=timm", "model.pretrained=true"))
    assert not (tmp_path / "mlflow.db").exists()


def test_a_checkpoint_is_rebuilt_without_reading_its_starting_weights(make_cfg, tmp_path: Path):
    """The weights a run started from are replaced by its checkpoint's: the file may be gone, the hub unreachable."""
    cfg = make_cfg("model=timm", f"model.weights={tmp_path / 'gone.safetensors'}", "model.pretrained=true")
    classifier = classifier_of(cfg, start=False)
    assert classifier.hparams["config"]["model"]["weights"].endswith("gone.safetensors")


def test_a_resumed_run_neither_reads_nor_fetches_the_weights_it_started_from(make_cfg, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """A run state is data: resuming a run that started from timm's download (or a file since gone) contacts no hub
    and reads no file; the run's last checkpoint holds its weights."""
    def unreachable(*args, **kwargs):
        raise Contacted("the hub was contacted")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    saved = OmegaConf.to_container(make_cfg("model=timm", "model.pretrained=true"), resolve=True)
    resumed = ResumePoint("r1", tmp_path, tmp_path / "last.ckpt", saved)
    cfg, _ = resumed_config(make_cfg(), resumed)
    starts = []

    def make(plan, data, seed=None, start=True):
        starts.append(start)
        raise StopIteration

    monkeypatch.setattr(fit, "make_model_and_data", make)
    plan = fit_plan(saved)
    for checkpoint in (None, tmp_path / "last.ckpt"):
        with pytest.raises(StopIteration):
            fit.fit_member(plan, None, None, tmp_path, checkpoint)
    assert starts == [True, False]


@pytest.mark.parametrize("override", ["register.name=idc", "predict=[a.png]", "tta=true"])
def test_export_does_not_silently_drop_another_task(make_cfg, override):
    with pytest.raises(ConfigError, match=f"export.weights writes the backbone and does nothing else: drop "
                                          f"{override.split('=')[0]}"):
        evaluate(make_cfg("export.weights=x.safetensors", override, config_name="evaluate"))


def test_export_refuses_a_model_without_a_timm_backbone(make_cfg, tmp_path: Path):
    with pytest.raises(ConfigError, match="export.weights writes a timm backbone .*the selected model is model=idcnet"):
        export_weights(classifier_of(make_cfg()), str(tmp_path / "x.safetensors"), "a.ckpt")
    with pytest.raises(ConfigError, match="export.weights must be null or the path of a .safetensors file"):
        evaluate(make_cfg("export.weights=x.pth", config_name="evaluate"))


def test_export_never_overwrites_a_file(make_cfg, tmp_path: Path):
    existing = tmp_path / "backbone.safetensors"
    existing.write_bytes(b"someone's weights")
    with pytest.raises(ConfigError, match=f"export.weights: {existing} already exists; remove it or choose another "
                                          "path"):
        evaluate(make_cfg(f"export.weights={existing}", config_name="evaluate"))
    assert existing.read_bytes() == b"someone's weights"


@pytest.mark.slow
def test_a_timm_run_trains_evaluates_exports_and_starts_another_with_the_same_first_forward_pass(make_cfg, tmp_path):
    first = make_cfg("model=timm", "model.name=resnet18", "trainer.max_epochs=1")
    train(first)
    client = MlflowClient(first.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.info.status == "FINISHED"
    assert (run.data.params["model"], run.data.params["model.name"]) == ("timm", "resnet18")
    assert (run.data.tags["model"], run.data.tags["model.name"]) == ("timm", "resnet18")
    evaluated = evaluate(make_cfg(config_name="evaluate"))  # like any other run
    assert 0 <= evaluated["test_auroc"] <= 1

    path = tmp_path / "export" / "resnet18.safetensors"
    exported = evaluate(make_cfg(f"export.weights={path}", config_name="evaluate"))
    assert exported == {"exported": str(path), "sha256": sha256_of(path)}
    trained = load_classifier(run.data.tags["best_checkpoint"])
    second = make_cfg("model=timm", f"model.weights={path}", "trainer.max_epochs=1",
                      f"paths.output_dir={tmp_path / 'second'}")
    started = classifier_of(second).eval()  # as the second run builds it
    images = torch.randint(0, 256, (4, 3, 50, 50), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(started.model(trained.standardised(images)), trained.model(trained.standardised(images)))
    train(second)
    latest = client.search_runs([client.get_experiment_by_name("idc").experiment_id], order_by=["start_time DESC"])[0]
    assert latest.info.run_id != run.info.run_id and latest.info.status == "FINISHED"
    assert latest.data.tags["model.weights.sha256"] == sha256_of(path)
    assert latest.data.params["model.weights"] == str(path)


@pytest.mark.slow
def test_a_cut_run_resumes_after_its_starting_weights_file_is_gone(make_cfg, tmp_path: Path, monkeypatch):
    """The same command resumes a run whose starting file was since deleted: its checkpoint holds the weights, and
    the run keeps the file's digest it recorded at the start."""
    path = timm_file(tmp_path / "start.safetensors", "test_resnet")
    args = ("model=timm", "model.name=test_resnet", f"model.weights={path}", "trainer.max_epochs=3")
    cut_at_second_epoch_end(monkeypatch)
    with pytest.raises(RuntimeError, match="power cut"):
        train(make_cfg(*args))
    monkeypatch.undo()
    digest = sha256_of(path)
    path.unlink()
    train(make_cfg(*args))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert (run.info.status, run.data.tags["resumed"]) == ("FINISHED", "true")
    assert (run.data.tags["model.weights.sha256"], run.data.params["model.weights.sha256"]) == (digest, digest)


def test_fine_tuning_settings_without_starting_weights_warn(make_cfg, tmp_path: Path):
    """A frozen or slowed encoder of random weights is legal (a random-feature probe) but rarely meant."""
    (warning,) = config_warnings(make_cfg("model=timm", "model.freeze=encoder"))
    assert warning.startswith("model.freeze=encoder without model.weights or model.pretrained=true: the encoder")
    (warning,) = config_warnings(make_cfg("model=timm", "model.encoder_lr_scale=0.1"))
    assert warning.startswith("model.encoder_lr_scale=0.1 without model.weights")
    path = timm_file(tmp_path / "start.safetensors")
    assert config_warnings(make_cfg("model=timm", "model.freeze=encoder", f"model.weights={path}")) == []
    assert config_warnings(make_cfg("model=timm")) == []


def test_the_hub_check_honours_huggingface_settings(monkeypatch: pytest.MonkeyPatch):
    """HF_ENDPOINT (a mirror) is the address asked; with HF_HUB_OFFLINE=1 timm reads its cache, no address is asked."""
    asked = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: asked.append(request.full_url) or
                        type("Answer", (), {"close": lambda self: None})())
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example.org")
    require_hub()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    require_hub()
    assert asked == ["https://hf-mirror.example.org"]


def test_weights_timm_cannot_load_are_one_line_before_any_run(make_cfg, tmp_path: Path, monkeypatch):
    """Offline (HF_HUB_OFFLINE) without the weights in timm's cache, or a hub that refuses the download."""
    def missing(*args, **kwargs):
        raise FileNotFoundError("Cannot find the requested files in the local cache")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(timm, "create_model", missing)
    with pytest.raises(ConfigError, match=r"^model.name=resnet18: model.pretrained=true: timm could not load the "
                                          r"weights of resnet18 \(Cannot find the requested files in the local "
                                          r"cache\)"):
        train(make_cfg("model=timm", "model.pretrained=true"))
    assert not (tmp_path / "mlflow.db").exists()


def test_a_finished_runs_folder_starts_afresh_and_checks_its_starting_weights(make_cfg, tmp_path: Path):
    """A folder whose run finished may look resumable until the store says otherwise: the weights are checked then."""
    cfg = make_cfg("model=timm", f"model.weights={tmp_path / 'gone.safetensors'}")
    with pytest.raises(ConfigError, match="gone.safetensors does not exist"):
        resumed_config(cfg, None, start_checked=False)
    assert resumed_config(cfg, None)[0] is cfg  # checked before (a fresh folder): not read again


def test_a_resumed_cross_validation_checks_the_weights_its_unstarted_folds_will_read(make_cfg, tmp_path: Path):
    """Its folds still to start read the starting file: it must be there and be the file the run recorded."""
    path = timm_file(tmp_path / "start.safetensors", "test_resnet")
    saved = OmegaConf.to_container(make_cfg("model=timm", "model.name=test_resnet", f"model.weights={path}",
                                            "cv.folds=3"), resolve=True)
    recorded = start_weights(saved)
    assert starting_weights(saved, {"other": "tag", **recorded}) == recorded
    timm_file(path, "test_resnet")  # other random weights under the same name
    with pytest.raises(ResumeError, match=r"model.weights=.*start.safetensors changed since the run started "
                                          r"\(sha256 [0-9a-f]{12}\.\.\., now [0-9a-f]{12}\.\.\.\)"):
        starting_weights(saved, recorded)
    single = {**saved, "cv": {**saved["cv"], "folds": None}}  # nothing left to start: its checkpoint holds it all
    assert starting_weights(single, recorded) == recorded
    path.unlink()
    resumed = ResumePoint("r1", tmp_path, tmp_path / "last.ckpt", saved)
    with pytest.raises(ConfigError, match="start.safetensors does not exist"):
        resumed_config(make_cfg(), resumed)


def test_only_a_new_run_must_tile_the_patch_with_its_tokens(make_cfg):
    validate_train_config(make_cfg("model=timm", "model.name=pvt_v2_b0"))  # overlapping, padded embedding: no loss
    validate_train_config(make_cfg("model=timm", "model.name=vit_tiny_patch16_224"), start=False)  # rebuilt as run
    with pytest.raises(ConfigError, match="cuts 50x50 patches into 16x16 tokens"):
        validate_train_config(make_cfg("model=timm", "model.name=vit_tiny_patch16_224"))
