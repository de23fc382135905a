"""Decode one patch file into a 50x50 RGB uint8 array.

Border patches smaller than 50x50 (the slide ended there) are padded on the right and bottom with
white (255), the colour of the empty glass beyond the slide edge. Images larger than 50x50 are not
patches of this dataset and are rejected, as are unreadable files.
"""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

PATCH_SIZE = 50
PAD_VALUE = 255


class PatchStatus(str, Enum):
    """What decoding a file gave."""

    OK = "ok"
    PADDED = "padded"
    CORRUPT = "corrupt"
    OVERSIZED = "oversized"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (grey, RGBA, palette, 16-bit) to RGB; transparency becomes white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (PAD_VALUE,) * 3)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode == "I;16" or image.mode == "I":
        array = np.asarray(image, dtype=np.float64)
        array = 255 * array / max(array.max(), 1)
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def pad_to_patch(array: np.ndarray) -> np.ndarray:
    """Pad an HxWx3 array (H, W <= 50) with white on the bottom and right to 50x50x3."""
    h, w = array.shape[:2]
    if (h, w) == (PATCH_SIZE, PATCH_SIZE):
        return array
    out = np.full((PATCH_SIZE, PATCH_SIZE, 3), PAD_VALUE, dtype=np.uint8)
    out[:h, :w] = array
    return out


def open_patch(path: str | Path) -> Image.Image | None:
    """Open `path` lazily (header only); None, without decoding it, when its declared size exceeds 50x50.

    Pillow's decompression-bomb error and warning are subsumed: such images are far larger than a patch.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            return None
    if max(image.size) > PATCH_SIZE:
        image.close()
        return None
    return image


def decode_patch(path: str | Path) -> tuple[np.ndarray | None, PatchStatus]:
    """Read a patch file; returns (50x50x3 uint8 array or None, status). Oversized files are rejected unread."""
    try:
        image = open_patch(path)
        if image is None:
            return None, PatchStatus.OVERSIZED
        with image:
            image.load()
            rgb = to_rgb(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None, PatchStatus.CORRUPT
    array = np.asarray(rgb, dtype=np.uint8)
    h, w = array.shape[:2]
    if max(h, w) > PATCH_SIZE:  # a format whose size can change on load
        return None, PatchStatus.OVERSIZED
    if (h, w) == (PATCH_SIZE, PATCH_SIZE):
        return array, PatchStatus.OK
    return pad_to_patch(array), PatchStatus.PADDED
