"""Weights files as data: safetensors only, fitted to a model key by key, the stem widened by one rule."""

from __future__ import annotations

import hashlib
import pathlib
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from idclab.cli import is_user_error
from idclab.models.weights import WeightsError, fitted_state, read_weights, sha256_of, write_weights


class Touch:
    """A pickle that creates a file when it is loaded: loading it must never happen."""

    def __init__(self, victim: Path):
        self.victim = victim

    def __reduce__(self):
        return pathlib.Path.touch, (self.victim,)


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".bin", ".pt"])
def test_a_pickled_checkpoint_is_refused_unopened_with_the_reason(tmp_path: Path, suffix: str):
    victim, path = tmp_path / "pwned", tmp_path / f"weights{suffix}"
    path.write_bytes(pickle.dumps({"conv1.weight": Touch(victim)}))
    with pytest.raises(WeightsError, match=r"not a \.safetensors file: .*a weights file is data") as error:
        read_weights(path)
    assert "\n" not in str(error.value) and not victim.exists()


def test_a_pickle_named_safetensors_is_refused_and_not_unpickled(tmp_path: Path):
    victim, path = tmp_path / "pwned", tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"conv1.weight": Touch(victim)}))
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        read_weights(path)
    assert not victim.exists()


def test_a_missing_file_is_named(tmp_path: Path):
    with pytest.raises(WeightsError, match="nowhere.safetensors does not exist"):
        read_weights(tmp_path / "nowhere.safetensors")


def test_written_weights_read_back_with_their_metadata_and_digest(tmp_path: Path):
    state = {"a.weight": torch.arange(6.0).view(2, 3).t(), "b": torch.ones(2)}  # a non-contiguous view too
    path = write_weights(state, tmp_path / "w.safetensors", {"timm_name": "x"})
    loaded = read_weights(path)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".*partial*"))
    with pytest.raises(WeightsError, match="must end in .safetensors"):
        write_weights(state, tmp_path / "w.pth", {})


TARGET = {"stem.weight": torch.zeros(4, 6, 3, 3), "body.weight": torch.zeros(4, 4), "body.bn.num_batches_tracked":
          torch.zeros((), dtype=torch.long), "head.weight": torch.zeros(1, 4), "head.bias": torch.zeros(1)}
HEAD, STEMS = {"head.weight", "head.bias"}, {"stem.weight"}


def test_the_stem_is_widened_to_six_channels_by_repeating_the_rgb_filters_halved():
    rgb = torch.randn(4, 3, 3, 3)
    state = fitted_state(TARGET, {"stem.weight": rgb, "body.weight": torch.ones(4, 4),
                                  "head.weight": torch.ones(1000, 4), "head.bias": torch.ones(1000)}, HEAD, STEMS)
    assert torch.equal(state["stem.weight"], torch.cat([rgb, rgb], dim=1) / 2)
    patch = torch.rand(1, 3, 8, 8)  # a view equal to its patch: the first activation keeps the RGB stem's scale
    widened = torch.nn.functional.conv2d(torch.cat([patch, patch], dim=1), state["stem.weight"])
    assert torch.allclose(widened, torch.nn.functional.conv2d(patch, rgb), atol=1e-6)
    assert set(state) == {"stem.weight", "body.weight"}  # a 1000-class head is replaced, the step counter optional


def test_a_head_of_the_models_shapes_is_kept():
    loaded = {"stem.weight": torch.ones(4, 6, 3, 3), "body.weight": torch.ones(4, 4), "head.weight": torch.ones(1, 4),
              "head.bias": torch.ones(1)}
    assert set(fitted_state(TARGET, loaded, HEAD, STEMS)) == set(loaded)


def test_every_mismatch_is_counted_in_one_line_naming_the_first_of_each_kind():
    loaded = {"stem.weight": torch.ones(4, 5, 3, 3), "extra.a": torch.ones(1), "extra.b": torch.ones(1)}
    with pytest.raises(WeightsError) as error:
        fitted_state(TARGET, loaded, HEAD, STEMS)
    assert str(error.value) == ("1 of the model's keys missing from the file (first: body.weight); 2 keys of the file "
                                "not in the model (first: extra.a); 1 shapes that differ (first: stem.weight "
                                "([4, 5, 3, 3] in the file, [4, 6, 3, 3] in the model))")


def test_a_shape_outside_the_stem_is_never_widened():
    loaded = {"stem.weight": torch.ones(4, 6, 3, 3), "body.weight": torch.ones(4, 2), "head.weight": torch.ones(1, 4)}
    target = TARGET | {"body.weight": torch.zeros(4, 6)}
    with pytest.raises(WeightsError, match=r"first: body.weight \(\[4, 2\] in the file, \[4, 6\] in the model\)"):
        fitted_state(target, loaded, HEAD, STEMS)


def test_safetensors_written_elsewhere_read_as_they_are(tmp_path: Path):
    save_file({"x": torch.ones(2, dtype=torch.float16)}, str(tmp_path / "f.safetensors"))
    assert read_weights(tmp_path / "f.safetensors")["x"].dtype == torch.float16


def test_a_weights_file_that_does_not_fit_is_the_users_to_fix():
    """Anywhere it surfaces (a file changed between the check and the build), it is one line and exit 2."""
    assert is_user_error(WeightsError("model.weights=x.safetensors does not fit timm resnet18"))


def test_an_export_names_what_it_was_exported_from_when_it_does_not_fit(tmp_path: Path):
    from idclab.models.timm_backbone import TimmBackbone

    path = TimmBackbone("resnet34", in_channels=6).export(tmp_path / "resnet34.safetensors", "run 1")
    with pytest.raises(WeightsError, match=r"does not fit timm resnet18 with 6 input channels: .*\(the file is an "
                                           r"idclab export of timm resnet34 with 6 input channels, from run 1\)$"):
        TimmBackbone("resnet18", in_channels=6, weights=str(path))
