"""Any timm (PyTorch Image Models) architecture as a backbone: the patch's channels in, one IDC logit out.

`TimmBackbone("resnet18", in_channels=6)` builds timm's network with that many input channels and a one-logit
classifier for 50x50 patches (an architecture with a fixed input size, such as a ViT, is built for 50x50; give it a
`patch_size` that divides it). It starts from random weights, from a local safetensors file (`weights`, fitted by
`idclab.models.weights.fitted_state`: keys checked, the head replaced unless it has this model's shapes, a 3-channel
stem widened to 3k channels by repeating the RGB filters for each view and scaling them all by 1/k), or from timm's
own download (`pretrained`, same stem rule; refused at once when huggingface.co cannot be reached).

Fine-tuning: the encoder is everything but timm's classifier (`get_classifier()`, both heads of a distilled one);
`freeze="encoder"` trains the head only (the encoder's batch norms keep their running statistics), and
`encoder_lr_scale` is the encoder's learning rate relative to the head's, read by the LightningModule through
`encoder_parameters()`.
"""

from __future__ import annotations

import difflib
import functools
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from idclab.models.precision import in_float32
from idclab.models.weights import WeightsError, exported_from, fitted_state, read_weights, write_weights

PATCH_SIDE = 50  # idclab.data.decode.PATCH_SIZE: the side of the patches every backbone sees
FREEZE = ("none", "encoder")
HUB = "https://huggingface.co"  # timm's download asks HF_ENDPOINT instead, when set
HUB_TIMEOUT = 5.0  # seconds to wait for the hub before model.pretrained=true gives up


@functools.cache
def architectures() -> tuple[str, ...]:
    """Every architecture timm can build (`timm.list_models()`)."""
    import timm  # timm is imported where a timm model is named or built: the module's constants stay light

    return tuple(timm.list_models())


def close_names(name: str, count: int = 5) -> list[str]:
    """The timm architectures whose names are closest to `name`."""
    return difflib.get_close_matches(name, architectures(), n=count, cutoff=0.5)


def fixed_input_size(name: str) -> bool:
    """Whether the architecture is built for one input size (a ViT's position embeddings), per timm's config."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return bool(cfg and cfg.fixed_input_size)


def pretrained_source(name: str) -> str:
    """Where timm's default pretrained weights of `name` come from (its hub id or URL)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return str(cfg and (cfg.hf_hub_id or cfg.url) or "none")


def require_hub(timeout: float = HUB_TIMEOUT) -> None:
    """WeightsError (one line) unless the hub answers within `timeout` seconds, as timm's download would ask it:
    HF_ENDPOINT (a mirror), else huggingface.co, through the proxy settings; with HF_HUB_OFFLINE set timm reads its
    own cache, and nothing is asked."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    hub = os.environ.get("HF_ENDPOINT") or HUB
    try:
        urllib.request.urlopen(urllib.request.Request(hub, method="HEAD"), timeout=timeout).close()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        host = urllib.parse.urlparse(hub).netloc or hub
        raise WeightsError(f"model.pretrained=true downloads timm's weights from {host}, which this machine "
                           f"cannot reach ({reason}): download them where you can and pass "
                           "model.weights=PATH.safetensors") from error


class TimmBackbone(nn.Module):
    """timm's `name` with `in_channels` inputs and one logit; see the module docstring for the settings."""

    def __init__(self, name: str, in_channels: int = 3, img_size: int | None = None, patch_size: int | None = None,
                 dropout: float = 0.0, freeze: str = "none", encoder_lr_scale: float = 1.0,
                 weights: str | None = None, pretrained: bool = False):
        super().__init__()
        if name not in architectures():
            raise ValueError(f"{name!r} is not a timm architecture; close names: {', '.join(close_names(name))}")
        if freeze not in FREEZE:
            raise ValueError(f"model.freeze must be one of {', '.join(FREEZE)}, got {freeze!r}")
        if weights and pretrained:
            raise ValueError("model.weights and model.pretrained=true both name the starting weights: choose one")
        extra = {key: value for key, value in (("img_size", img_size), ("patch_size", patch_size)) if value}
        self.settings = {f"model.{key}": value for key, value in extra.items()}  # what the config set, as given
        if fixed_input_size(name):
            extra.setdefault("img_size", PATCH_SIDE)
        if pretrained:
            require_hub()
        self.name, self.in_channels = name, in_channels
        self.frozen, self.encoder_lr_scale = freeze == "encoder", encoder_lr_scale
        import timm

        try:
            self.net = timm.create_model(name, pretrained=pretrained, num_classes=1, in_chans=in_channels,
                                         drop_rate=dropout, **extra)
        except TypeError as error:
            raise ValueError(f"timm {name} does not take {' or '.join(f'model.{k}' for k in extra)}: {error}"
                             ) from error
        except OSError as error:  # the hub refused or the cache lacks them (HF_HUB_OFFLINE)
            if not pretrained:
                raise
            detail = " ".join(str(error).split())[:200]
            raise WeightsError(f"model.pretrained=true: timm could not load the weights of {name} ({detail}); "
                               "pass model.weights=PATH.safetensors") from error
        if weights:
            self.load_weights(weights)
        for parameter in self.encoder_parameters() if self.frozen else ():
            parameter.requires_grad_(False)

    def check_tiling(self) -> None:
        """ValueError when a ViT-like patchify layer (a convolution whose stride is its kernel) does not tile the
        50x50 patch, leaving its last rows and columns out (overlapping or padded embeddings pass)."""
        embed = getattr(self.net, "patch_embed", None)
        proj = getattr(embed, "proj", None)
        patchify = isinstance(proj, nn.Conv2d) and proj.stride == proj.kernel_size
        if patchify and not getattr(embed, "dynamic_img_pad", False) and any(PATCH_SIDE % s for s in proj.stride):
            raise ValueError(f"timm {self.name} cuts 50x50 patches into {proj.stride[0]}x{proj.stride[1]} tokens, "
                             "leaving pixels out: set model.patch_size to a divisor of 50 (e.g. 10)")

    def heads(self) -> tuple[nn.Module, ...]:
        """timm's classifier: one module, or two for a distilled architecture (DeiT's head and head_dist)."""
        head = self.net.get_classifier()
        return tuple(head) if isinstance(head, tuple) else (head,)

    def head_keys(self) -> set[str]:
        """The state keys of timm's classifier (the head a pretrained file's is replaced by)."""
        heads = self.heads()
        prefixes = tuple(f"{name}." for name, module in self.net.named_modules() if any(module is h for h in heads))
        return {key for key in self.net.state_dict() if key.startswith(prefixes)}

    def stem_keys(self) -> set[str]:
        """The weight keys of the first convolution(s), per timm's config (widened for 6 or more channels)."""
        first = self.net.pretrained_cfg.get("first_conv") or ()
        return {f"{name}.weight" for name in ([first] if isinstance(first, str) else first)}

    def load_weights(self, path: str) -> None:
        """Start from a safetensors file of timm's keys (`fitted_state`); WeightsError naming the first mismatch."""
        loaded = read_weights(path)
        try:
            state = fitted_state(self.net.state_dict(), loaded, self.head_keys(), self.stem_keys())
        except WeightsError as error:
            origin = exported_from(path)
            raise WeightsError(f"model.weights={path} does not fit timm {self.name} with {self.in_channels} input "
                               f"channels: {error}{f' (the file is {origin})' if origin else ''}") from error
        self.net.load_state_dict(state, strict=False)

    def export(self, path: str | Path, source: str) -> Path:
        """Write timm's weights (timm's keys, this one-logit head included) as safetensors that `weights` starts
        from, naming the architecture, its build settings, channels and `source` in the file's metadata, never over
        an existing file; the path written."""
        metadata = {"timm_name": self.name, "in_channels": str(self.in_channels), "source": source}
        return write_weights(self.net.state_dict(), path, metadata | {k: str(v) for k, v in self.settings.items()},
                             exclusive=True)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The classifier's parameters."""
        return (parameter for head in self.heads() for parameter in head.parameters())

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter but the classifier's."""
        head = {id(p) for p in self.head_parameters()}
        return (p for p in self.net.parameters() if id(p) not in head)

    def train(self, mode: bool = True) -> TimmBackbone:
        """Train mode, except a frozen encoder's batch norms, which keep their running statistics."""
        super().train(mode)
        if self.frozen:
            head = {module for head in self.heads() for module in head.modules()}
            for module in self.net.modules():
                if isinstance(module, _BatchNorm) and module not in head:
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(self.net.forward_head, self.net.forward_features(x)).squeeze(1)
