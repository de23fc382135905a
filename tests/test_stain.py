"""Stain normalisation: colour math, Reinhard and Macenko on hand-built patches, torchstain agreement,
fitting on training patches only, storage in the checkpoint, and a run that trains with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from idclab.config import registry
from idclab.config.build import build_classifier, load_classifier
from idclab.models.stain import LIGHT, Macenko, NoStain, Reinhard, fit_stain, lab_to_rgb, rgb_to_lab

H_AND_E = torch.tensor([[0.60, 0.25], [0.75, 0.85], [0.28, 0.46]])  # H and E optical density vectors (columns)
OTHER = torch.tensor([[0.50, 0.30], [0.70, 0.90], [0.50, 0.30]])


def unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=0, keepdim=True)


def beer_lambert(vectors: torch.Tensor, concentrations: torch.Tensor) -> torch.Tensor:
    """1 x 3 x 50 x 50 float image whose Macenko optical densities are exactly `vectors @ concentrations`."""
    return ((LIGHT * torch.exp(-unit(vectors) @ concentrations) - 1) / 255).view(1, 3, 50, 50)


def concentrations(seed: int = 0) -> torch.Tensor:
    """2 x 2500: a fifth pure haematoxylin, a fifth pure eosin, the rest mixtures, all clearly stained
    (optical density >= 0.15 in every channel, else Macenko counts a pixel as background)."""
    generator = torch.Generator().manual_seed(seed)
    c = 0.8 + torch.rand(2, 2500, generator=generator)
    c[1, :500] = 0.0
    c[0, 500:1000] = 0.0
    return c


def test_lab_of_known_colours_and_round_trip():
    colours = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).view(3, 3, 1, 1)
    expected = torch.tensor([[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [0.0, 0.0, 0.0]])
    assert torch.allclose(rgb_to_lab(colours).flatten(1), expected, atol=0.02)
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_rgb(rgb_to_lab(images)), images, atol=1e-4)


def test_reinhard_gives_each_patch_the_target_lab_statistics():
    generator = torch.Generator().manual_seed(1)
    spread = torch.tensor([0.3, 0.18, 0.27]).view(1, 3, 1, 1)
    patches = 0.35 + spread * torch.rand(6, 3, 50, 50, generator=generator)
    normaliser = Reinhard()
    normaliser.fit(patches)
    lab = rgb_to_lab(patches).flatten(2)
    assert torch.allclose(normaliser.target_mean, lab.mean(-1).median(0).values)
    assert torch.allclose(normaliser.target_std, lab.std(-1).median(0).values)
    shifted = (patches * torch.tensor([0.8, 0.95, 1.1]).view(1, 3, 1, 1)).clamp(0, 1)  # another stain
    out = rgb_to_lab(normaliser(shifted)).flatten(2)
    assert torch.allclose(out.mean(-1), normaliser.target_mean.expand(6, 3), atol=0.05)
    assert torch.allclose(out.std(-1), normaliser.target_std.expand(6, 3), atol=0.05)


def test_macenko_recovers_the_stain_vectors_and_renders_with_the_fitted_ones():
    fitted = Macenko()
    fitted.fit(torch.cat([beer_lambert(H_AND_E, concentrations(seed)) for seed in range(3)]))
    assert torch.allclose(fitted.stain_vectors, unit(H_AND_E), atol=1e-4)
    c = concentrations(7)
    patch = beer_lambert(OTHER, c)  # same tissue, other stains: re-rendered with the fitted H and E vectors
    scale = fitted.max_concentrations / c.sort(-1).values[:, round(0.99 * 2499)]
    expected = (LIGHT * torch.exp(-unit(H_AND_E) @ (c * scale.unsqueeze(1))) / 255).view(1, 3, 50, 50)
    assert torch.allclose(fitted(patch), expected.clamp(max=1), atol=1e-3)
    blank = torch.ones(2, 3, 50, 50)  # background only: left unchanged
    assert torch.equal(fitted(blank), blank)


def real_like_patches(count: int = 40) -> torch.Tensor:
    """Uint8 H&E-like patches with varied stain amounts, a few with background."""
    generator = torch.Generator().manual_seed(3)
    images = []
    for i in range(count):
        c = torch.rand(2, 2500, generator=generator) * torch.tensor([[1.5], [0.8]]) * (0.5 + i / count)
        c[:, : 25 * i] *= 0.05  # a growing share of near-background pixels
        images.append((LIGHT * torch.exp(-unit(H_AND_E) @ c)).clamp(0, 255).view(3, 50, 50))
    return torch.stack(images).round().to(torch.uint8)


def test_batched_normalisers_agree_with_torchstain_per_image():
    torchstain = pytest.importorskip("torchstain")
    patches = real_like_patches()
    images = patches.float() / 255
    reference = torchstain.normalizers.ReinhardNormalizer(backend="torch")
    reference.fit(patches[0])
    reinhard = Reinhard()
    reinhard.target_mean.copy_(reference.target_means)
    reinhard.target_std.copy_(reference.target_stds)
    ours = reinhard(images[1:]) * 255
    theirs = torch.stack([reference.normalize(p).permute(2, 0, 1).float() for p in patches[1:]])
    assert (ours - theirs).abs().max() < 1.01  # torchstain truncates to integers
    macenko = Macenko()
    _, _, _, usable = macenko.stains(images)
    ours = macenko(images) * 255
    reference = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    assert usable.sum() > 30
    for i in torch.nonzero(usable).flatten().tolist():
        theirs = reference.normalize(patches[i], stains=False)[0].permute(2, 0, 1).float()
        assert (ours[i] - theirs).abs().max() < 1.01, i


def test_fit_uses_only_the_given_training_rows():
    images = np.zeros((10, 50, 50, 3), dtype=np.uint8)
    images[:5] = real_like_patches(5).permute(0, 2, 3, 1).numpy()
    images[5:] = 200  # other rows: grey, never sampled
    normaliser = Reinhard(sample=3)
    fit_stain(normaliser, images, np.arange(5), seed=0)
    assert normaliser.target_std.min() > 1  # fitted on stained patches, not the flat grey ones
    fit_stain(NoStain(), images, np.arange(5), seed=0)  # nothing to fit


CONFIG = {
    "model": {"name": "idcnet", "widths": [8, 16], "depth": 1, "dropout": 0.0},
    "loss": {"name": "bce"},
    "sampler": {"name": "none"},
    "augment": {"name": "none"},
    "stain": {"name": "macenko", "sample": 10, "alpha": 1.0, "beta": 0.15},
    "optim": {"lr": 1e-3, "weight_decay": 0.0},
}


def test_the_fitted_target_travels_in_the_checkpoint_and_changes_predictions(tmp_path: Path):
    classifier = build_classifier(CONFIG, [30, 10], [0.5] * 3, [0.2] * 3).eval()
    patches = real_like_patches()
    classifier.stain.fit(patches[:20].float() / 255)
    saved = {"config": CONFIG, "class_counts": [30, 10], "mean": [0.5] * 3, "std": [0.2] * 3, "threshold": 0.5}
    torch.save({"state_dict": classifier.state_dict(), "hyper_parameters": saved}, tmp_path / "m.ckpt")
    loaded = load_classifier(tmp_path / "m.ckpt")
    assert torch.equal(loaded.stain.stain_vectors, classifier.stain.stain_vectors)
    assert not torch.allclose(loaded.stain.stain_vectors, Macenko().stain_vectors)
    with torch.no_grad():
        assert torch.equal(loaded(patches), classifier(patches))
        plain = build_classifier(CONFIG | {"stain": {"name": "none"}}, [30, 10], [0.5] * 3, [0.2] * 3).eval()
        plain.model.load_state_dict(classifier.model.state_dict())
        assert not torch.allclose(plain(patches), classifier(patches))
    assert not any(key.startswith("stain.") for key in plain.state_dict())  # none stores nothing
    assert isinstance(registry.build("stain", {"name": "reinhard", "sample": 5}), Reinhard)


@pytest.mark.slow
def test_a_run_fits_on_training_patches_and_evaluates_with_the_stored_target(make_cfg):
    from test_train import runs_of

    from idclab.data.datamodule import prepare_data
    from idclab.training.pipeline import train

    cfg = make_cfg("stain=macenko", "stain.sample=200", "trainer.max_epochs=1", "report.bootstrap_resamples=10")
    train(cfg)
    (run,) = runs_of(cfg)
    assert run.info.status == "FINISHED" and run.data.params["stain"] == "macenko"
    loaded = load_classifier(run.data.tags["best_checkpoint"])  # what evaluate.py and prediction load
    data = prepare_data(cfg.data, cfg.split)
    expected = Macenko(200)
    fit_stain(expected, data.cache.images, data.split.rows["train"], cfg.seed)
    for name, buffer in expected.named_buffers():
        assert torch.equal(loaded.stain.get_buffer(name), buffer), name


def test_macenkos_alpha_and_beta_change_the_fit():
    """stain.alpha picks the extreme angles taken as H and E; stain.beta the density below which a pixel is
    background (a high one leaves no patch stained enough to normalise)."""
    images = real_like_patches().float() / 255
    vectors, _, _, enough = Macenko().stains(images)
    wider, _, _, _ = Macenko(alpha=20.0).stains(images)
    assert enough.any() and not torch.allclose(vectors[enough], wider[enough], atol=1e-3)
    assert not Macenko(beta=3.0).stains(images)[3].any()
