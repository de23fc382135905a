"""Prediction starts fast and answers briefly: the model as plain torch (the same P(IDC) as the LightningModule, the
same refusals), a per-patient summary for a folder with every patch in the CSV, and nothing imported that prediction
does not use."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROJECT
from omegaconf import OmegaConf
from PIL import Image

from idclab.classifier.ensemble import save_ensemble
from idclab.config.build import CheckpointError, build_classifier, load_classifier
from idclab.config.checkpoint import load_predictor
from idclab.data.layout import patch_file_name
from idclab.evaluation.prediction import Prediction, patient_summary, predict_and_write, predict_files

UNWANTED = ("pytorch_lightning", "lightning", "mlflow", "sklearn", "pandas", "scipy", "matplotlib", "torchvision",
            "timm", "albumentations", "imblearn", "torchmetrics")


def save_checkpoint(make_cfg, path: Path, *overrides: str, seed: int = 0, **context: float) -> Path:
    """A classifier of the composed config with random weights (and a fitted-looking stain target), saved as
    training saves its checkpoints."""
    torch.manual_seed(seed)
    config = OmegaConf.to_container(make_cfg(*overrides), resolve=True)
    classifier = build_classifier(config, [700, 300], [0.8, 0.6, 0.75], [0.1, 0.15, 0.1], threshold=0.4, **context)
    with torch.no_grad():
        for buffer in classifier.stain.buffers():
            buffer.add_(torch.rand_like(buffer) * 0.1)
    torch.save({"state_dict": classifier.state_dict(), "hyper_parameters": dict(classifier.hparams)}, path)
    return path


def random_patches(count: int, channels: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).integers(0, 256, (count, channels, 50, 50), dtype=np.uint8))


@pytest.mark.parametrize("overrides, context", [
    ((), {}),
    (("stain=reinhard", "model=cnn"), {}),
    (("data.neighbourhood=1", "loss=focal"), {"context_weight": 0.3, "context_radius": 1, "patch_threshold": 0.6}),
])
def test_the_plain_model_scores_as_the_lightning_module(make_cfg, tmp_path, overrides, context):
    path = save_checkpoint(make_cfg, tmp_path / "best.ckpt", *overrides, **context)
    classifier, predictor = load_classifier(path), load_predictor(path)
    patches = random_patches(6, 3 * (1 + len(classifier.input_views)))
    with torch.no_grad():
        assert torch.allclose(predictor.probabilities(patches), classifier.probabilities(patches), atol=1e-6)
    for attribute in ("threshold", "alone_threshold", "uses_context", "input_views"):
        assert getattr(predictor, attribute) == getattr(classifier, attribute)
    assert "pytorch_lightning" not in {type(m).__module__.split(".")[0] for m in predictor.modules()}


def test_an_ensemble_scores_as_the_lightning_ensemble(make_cfg, tmp_path):
    members = [save_checkpoint(make_cfg, tmp_path / f"m{k}.ckpt", seed=k) for k in range(2)]
    path = save_ensemble(members, 0.45, tmp_path / "ensemble.ckpt", {"split_patients": None,
                                                                      "data_fingerprint": None})
    classifier, predictor = load_classifier(path), load_predictor(path)
    patches = random_patches(5, 3)
    with torch.no_grad():
        assert torch.allclose(predictor.probabilities(patches), classifier.probabilities(patches), atol=1e-6)
    assert predictor.threshold == classifier.threshold == 0.45


def corrupted(path: Path, change: str) -> Path:
    checkpoint = torch.load(path, weights_only=True)
    config = checkpoint["hyper_parameters"]["config"]
    if change == "interpolation":
        config["optim"]["lr"] = "${oc.env:HOME}"
    elif change == "unknown model":
        config["model"]["name"] = "resnet9000x"
    elif change == "unknown loss":
        config["loss"]["name"] = "magic"
    elif change == "missing weight":
        checkpoint["state_dict"].pop(next(k for k in checkpoint["state_dict"] if k.startswith("model.")))
    elif change == "extra weight":
        checkpoint["state_dict"]["model.extra"] = torch.zeros(1)
    elif change == "threshold":
        checkpoint["hyper_parameters"]["threshold"] = 3.0
    elif change == "patient interpolation":  # evaluate.py rebuilds the split from these through OmegaConf
        checkpoint["hyper_parameters"]["split_patients"] = {"train": ["1"], "val": ["2"], "test": ["${oc.env:HOME}"]}
    elif change == "fingerprint interpolation":
        checkpoint["hyper_parameters"]["data_fingerprint"] = {"cache_key": "???", "patches": {"train": 1}}
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("change", ["interpolation", "unknown model", "unknown loss", "missing weight",
                                    "extra weight", "threshold", "patient interpolation",
                                    "fingerprint interpolation"])
def test_the_plain_model_refuses_what_the_lightning_module_refuses(make_cfg, tmp_path, change):
    path = corrupted(save_checkpoint(make_cfg, tmp_path / "best.ckpt"), change)
    with pytest.raises(CheckpointError) as plain:
        load_predictor(path)
    with pytest.raises(CheckpointError) as lightning:
        load_classifier(path)
    same = [re.sub(r"state_dict for \w+", "state_dict for MODEL", str(e.value)) for e in (plain, lightning)]
    assert same[0] == same[1]


class Thing:
    """An object a checkpoint could hold only pickled."""


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    torch.save({"hyper_parameters": Thing()}, tmp_path / "pickled.ckpt")  # needs unpickling: refused
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    for name in ("pickled.ckpt", "text.ckpt", "missing.ckpt"):
        with pytest.raises(CheckpointError):
            load_predictor(tmp_path / name)


class Fixed:
    """What prediction uses of a model: P(IDC) from the patch's mean red value."""

    device = torch.device("cpu")
    threshold = alone_threshold = 0.5
    uses_context = False
    input_views = ()

    def eval(self) -> Fixed:
        return self

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[:, 0].float().mean(dim=(1, 2)) / 255


def slide(folder: Path, patient: str, reds: list[int]) -> None:
    for k, red in enumerate(reds):
        path = folder / patient / "0" / patch_file_name(patient, 1 + 50 * k, 1, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (50, 50), (red, 100, 150)).save(path)


def test_a_folder_gets_a_summary_per_patient_and_every_patch_in_the_csv(tmp_path, capsys):
    folder = tmp_path / "slides"
    slide(folder, "1001", [255, 230, 20, 20, 20, 20, 20, 20])  # 2 of 8 called IDC
    slide(folder, "1002", [200, 20, 20, 20])  # 1 of 4
    (folder / "broken.png").write_bytes(b"not an image")
    out = predict_and_write(Fixed(), sorted(folder.rglob("*.png")), 256, tmp_path / "out")
    printed = capsys.readouterr().out.splitlines()
    assert out == {"predicted": 12, "failed": 1, "threshold": 0.5}
    assert printed[0] == "P(IDC) of 12 patches, IDC called at >= 0.5000:"
    rows = {line.split()[0]: line.split() for line in printed[2:4]}
    assert rows["1001"][1:3] == ["8", "25.0%"] and rows["1002"][1:3] == ["4", "25.0%"]
    assert "1.000 at (1, 1), 0.902 at (51, 1)" in printed[2]  # the most confident calls first, where they are
    assert not any(line.endswith(".png") for line in printed)  # no line per patch
    assert printed[4].startswith("1 of 13 files could not be predicted") and printed[-2].startswith("CSV: ")
    assert printed[-1].startswith("Heatmaps: ") and "1001.png, 1002.png" in printed[-1]
    with open(tmp_path / "out" / "predictions.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 13


def test_a_few_files_are_each_printed_and_one_patch_draws_no_slide(tmp_path, capsys):
    slide(tmp_path, "1003", [240])
    predict_and_write(Fixed(), sorted(tmp_path.rglob("*.png")), 256, tmp_path / "out")
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split()[:2] == ["0.9412", "IDC"] and printed[-1].startswith("CSV: ")
    assert not (tmp_path / "out" / "heatmaps").exists()


def test_files_without_kaggle_names_are_summarised_together():
    predictions = [Prediction(f"/x/{k}.png", 0.9 - k / 10, int(k < 2)) for k in range(3)]
    text = patient_summary(predictions, 0.7)
    assert text.splitlines()[2].split()[:4] == ["(other", "files)", "3", "66.7%"]
    assert "0.900 0.png, 0.800 1.png" in text


@pytest.mark.slow
def test_predicting_one_patch_imports_only_what_prediction_uses(make_cfg, tmp_path):
    checkpoint = save_checkpoint(make_cfg, tmp_path / "best.ckpt")
    slide(tmp_path, "1004", [250])
    patch = next(tmp_path.rglob("*.png"))
    env = {**os.environ, "IDCLAB_ROOT": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-X", "importtime", str(PROJECT / "evaluate.py"), f"ckpt_path={checkpoint}",
                           f"predict=[{patch}]"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    modules = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+(\S+)$", done.stderr, re.M)}
    assert "torch" in modules and not modules & set(UNWANTED)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Model: {checkpoint}") and lines[2].endswith(str(patch))
    assert lines[-1].startswith("CSV: ") and len(lines) == 4
    assert not (tmp_path / "mlflow.db").exists()  # a checkpoint file: no store needed, none made


class RecordingScorer:
    """What predict_files uses of a classifier, recording the size of every batch it scores."""

    device = torch.device("cpu")
    threshold = alone_threshold = 0.5
    uses_context = False

    def __init__(self, input_views: tuple[int, ...]) -> None:
        self.input_views, self.batches = input_views, []

    def eval(self) -> RecordingScorer:
        return self

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        self.batches.append(tuple(batch.shape))
        return torch.full((len(batch),), 0.5)


@pytest.mark.parametrize("views", [(), (1,)])
def test_prediction_scores_files_in_batches_of_batch_size(tmp_path, views):
    for x in range(5):
        Image.new("RGB", (50, 50), "pink").save(tmp_path / patch_file_name("p1", x * 50, 0, 0))
    scorer = RecordingScorer(views)
    assert len(predict_files(scorer, tmp_path, batch_size=2)) == 5
    channels = 3 * (1 + len(views))
    assert scorer.batches == [(2, channels, 50, 50), (2, channels, 50, 50), (1, channels, 50, 50)]
