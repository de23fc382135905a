"""Model weights as data: safetensors files read, fitted to a model's state and written, and their digest.

A weights file is data: only safetensors is read (a pickled `.pth`/`.ckpt`/`.bin` can run code when loaded, so it is
refused, never opened). Fitting a file to a model reports every key that does not match in one message naming the
first offender; the classifier head is replaced unless the file's head has the model's shapes; a stem convolution
pretrained on 3 (RGB) channels is widened to the model's 3k channels by timm's rule (`adapt_input_conv`): the RGB
filters repeated for each 3-channel view and all scaled by 1/k, so the stem's first activation keeps its scale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from idclab.fileutil import whole_file

SUFFIX = ".safetensors"
OPTIONAL = ("num_batches_tracked",)  # batch-norm step counters: often left out of published weights
CHANNELS = 3  # per view: the RGB channels a pretrained stem was trained on


class WeightsError(ValueError):
    """A weights file that cannot be read, or does not fit the model."""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; WeightsError (one line) for a missing, pickled or unreadable file."""
    path = Path(path).expanduser()
    if path.suffix.lower() != SUFFIX:
        raise WeightsError(f"{path} is not a {SUFFIX} file: weights are read from safetensors only (a pickled "
                           ".pth/.ckpt/.bin file can run code when it is loaded, and a weights file is data); convert "
                           "it where you trust it with safetensors.torch.save_file(state_dict, 'weights.safetensors')")
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file ({error})") from error


def exported_from(path: str | Path) -> str:
    """What an idclab export says it was made from (its header's metadata, no tensor read), or "" for another file."""
    try:
        with safe_open(str(Path(path).expanduser()), "pt") as weights:
            metadata = weights.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return ""
    if "timm_name" not in metadata:
        return ""
    settings = " ".join(f"{key}={value}" for key, value in metadata.items() if key.startswith("model."))
    return (f"an idclab export of timm {metadata['timm_name']}{f' ({settings})' if settings else ''} with "
            f"{metadata.get('in_channels', '?')} input channels"
            f"{', from ' + metadata['source'] if metadata.get('source') else ''}")


def write_weights(state: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str],
                  exclusive: bool = False) -> Path:
    """Write `state` (plain tensors, copied to the CPU) as a safetensors file with string `metadata`, whole or not
    at all (`exclusive`: never over an existing file); the path written."""
    path = Path(path).expanduser()
    if path.suffix.lower() != SUFFIX:
        raise WeightsError(f"{path} must end in {SUFFIX}")
    tensors = {key: value.detach().to("cpu").clone().contiguous() for key, value in state.items()}
    try:
        with whole_file(path, exclusive) as partial:
            save_file(tensors, str(partial), metadata=dict(metadata))
    except FileExistsError as error:
        raise WeightsError(f"{path} exists: not overwritten (choose another path)") from error
    return path


def sha256_of(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).expanduser().open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _shape(tensor: torch.Tensor) -> list[int]:
    return list(tensor.shape)


def widens(stem: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether a pretrained stem convolution's weight (out, 3, k, k) fits a model's (out, 3k, k, k) by widening."""
    return (stem.ndim == 4 and stem.shape[1] == CHANNELS and target.shape[1] % CHANNELS == 0
            and stem.shape[:1] + stem.shape[2:] == target.shape[:1] + target.shape[2:])


def fitted_state(target: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor], head: Collection[str],
                 stems: Collection[str]) -> dict[str, torch.Tensor]:
    """The tensors of `loaded` to load into a model whose state is `target`: the head keys (`head`) kept only when
    all of them are in the file with the model's shapes (else the head stays freshly initialised), a 3-channel stem
    weight (`stems`) widened to the model's channels. WeightsError naming the first key the model lacks, the first it
    has that the file lacks, and the first shape that differs."""
    state: dict[str, torch.Tensor] = {}
    unexpected, shapes = [], []
    for key, tensor in loaded.items():
        if key in head:
            continue
        if key not in target:
            unexpected.append(key)
        elif tensor.shape == target[key].shape:
            state[key] = tensor
        elif key in stems and widens(tensor, target[key]):
            from timm.models import adapt_input_conv  # here: importing this module leaves timm out

            state[key] = adapt_input_conv(target[key].shape[1], tensor)
        else:
            shapes.append(f"{key} ({_shape(tensor)} in the file, {_shape(target[key])} in the model)")
    missing = [key for key in target if key not in loaded and key not in head and not key.endswith(OPTIONAL)]
    problems = [f"{len(found)} {what} (first: {found[0]})" for found, what in (
        (missing, "of the model's keys missing from the file"), (unexpected, "keys of the file not in the model"),
        (shapes, "shapes that differ")) if found]
    if problems:
        raise WeightsError("; ".join(problems))
    if all(key in loaded and loaded[key].shape == target[key].shape for key in head):
        state.update({key: loaded[key] for key in head})
    return state
