"""Hostile or broken inputs: decompression bombs, a full disk, unreadable folders, truncated caches, odd paths."""

import errno
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFile

from idclab.data.cache import BadPatchError, CacheError, check_bad_patches, load_or_build
from idclab.data.decode import PatchStatus, decode_patch
from idclab.data.layout import DataLayoutError, patch_file_name, scan
from idclab.evaluation.prediction import collect_files, predict_files
from idclab.fileutil import whole_file


def patch_path(root: Path, patient: str, x: int, label: int = 0) -> Path:
    path = root / patient / str(label) / patch_file_name(patient, x, 1, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def good_patch(root: Path, patient: str, x: int) -> Path:
    path = patch_path(root, patient, x)
    Image.new("RGB", (50, 50), (200, 100, 150)).save(path)
    return path


def bomb_png(path: Path, side: int) -> Path:
    """A valid 1-bit PNG of side x side zeros: a few KB on disk, side**2 pixels once decoded."""
    packer = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed pixels
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_big_decode(monkeypatch):
    """Fail the test if any image larger than a patch gets decoded."""
    original = ImageFile.ImageFile.load

    def guarded(image):
        assert max(image.size) <= 50, f"decoded a {image.size} image"
        return original(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded)


class FakeClassifier:
    """Just what predict_files uses of an IDCClassifier."""

    device = torch.device("cpu")
    threshold = alone_threshold = 0.5
    uses_context = False
    input_views = ()

    def eval(self) -> "FakeClassifier":
        return self

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.full((len(batch),), 0.75)


@pytest.mark.parametrize("side", [20000, 12000])  # past Pillow's bomb error / only past its bomb warning
def test_bomb_is_rejected_from_its_header_without_decoding(tmp_path, no_big_decode, side):
    bomb = bomb_png(tmp_path / "bomb.png", side)
    assert bomb.stat().st_size < 400_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_patch(bomb) == (None, PatchStatus.OVERSIZED)


def test_cache_build_skips_and_counts_a_bomb(tmp_path, no_big_decode, caplog):
    data = tmp_path / "data"
    good_patch(data, "7", 1)
    bomb_png(patch_path(data, "7", 51), 20000)
    index = scan(data)
    cache = load_or_build(index, tmp_path / "cache", workers=1)
    assert cache.counts() == {"ok": 1, "oversized": 1}
    check_bad_patches(index, cache, strict=False)
    assert "7_idx5_x51_y1_class0.png (oversized)" in caplog.text
    with pytest.raises(BadPatchError, match="7_idx5_x51_y1_class0.png"):
        check_bad_patches(index, cache, strict=True)


def test_predict_gives_a_bomb_an_error_row_and_predicts_the_rest(tmp_path, no_big_decode):
    good = good_patch(tmp_path, "7", 1)
    bomb = bomb_png(tmp_path / "bomb.png", 20000)
    results = predict_files(FakeClassifier(), [good, bomb])
    assert [(r.file, r.probability, r.label) for r in results] == [(str(good), 0.75, 1), (str(bomb), None, None)]
    assert results[1].error.startswith("oversized")


def test_a_single_path_string_is_one_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # today's character-by-character walk then stays inside tmp_path
    good_patch(tmp_path, "7", 1).rename(tmp_path / "patch.png")
    assert collect_files("patch.png") == [Path("patch.png")]
    assert collect_files(tmp_path / "patch.png") == [tmp_path / "patch.png"]
    assert [r.probability for r in predict_files(FakeClassifier(), "patch.png")] == [0.75]


@pytest.fixture
def small_data(tmp_path) -> Path:
    for x in range(1, 200, 50):
        good_patch(tmp_path / "data", "7", x)
    return tmp_path / "data"


def test_full_disk_fails_at_once_naming_folder_and_size(tmp_path, small_data, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    cache_dir = tmp_path / "cache"
    with pytest.raises(CacheError, match=f"(?s){cache_dir}.*needs {4 * 50 * 50 * 3} bytes"):
        load_or_build(scan(small_data), cache_dir, workers=1)
    assert issubclass(CacheError, DataLayoutError)  # printed in one line by the entry points (exit code 2)
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".lock"]


@pytest.mark.parametrize("errno_code", [errno.EOPNOTSUPP, errno.EINVAL, None])
def test_build_works_where_space_cannot_be_reserved(tmp_path, small_data, monkeypatch, errno_code):
    def unsupported(fd, offset, length):
        raise OSError(errno_code, os.strerror(errno_code))

    if errno_code is None:
        monkeypatch.delattr(os, "posix_fallocate", raising=False)
    else:
        monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    assert load_or_build(scan(small_data), tmp_path / "cache", workers=1).counts() == {"ok": 4}


def test_a_failed_build_leaves_no_partial_files(tmp_path, small_data, monkeypatch):
    def crash(path):
        raise RuntimeError("decoder crashed")

    monkeypatch.setattr("idclab.data.cache.decode_patch", crash)
    with pytest.raises(RuntimeError, match="decoder crashed"):
        load_or_build(scan(small_data), tmp_path / "cache", workers=1)
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".lock"]


@pytest.mark.parametrize("suffix", [".npy", ".json"])
def test_a_truncated_cache_is_rebuilt_with_a_warning_naming_it(tmp_path, small_data, caplog, suffix):
    index = scan(small_data)
    cache = load_or_build(index, tmp_path / "cache", workers=1)
    broken = tmp_path / "cache" / f"{cache.key}{suffix}"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    rebuilt = load_or_build(index, tmp_path / "cache", workers=1)
    assert str(broken) in caplog.text and "Rebuilding" in caplog.text
    assert rebuilt.counts() == {"ok": 4} and (np.asarray(rebuilt.images) == (200, 100, 150)).all()


def test_unreadable_folder_is_counted_and_named_or_fails_in_strict_mode(tmp_path, monkeypatch, caplog):
    good_patch(tmp_path, "10", 1)
    good_patch(tmp_path, "11", 1)
    locked = tmp_path / "11" / "0"
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:  # what chmod 000 does for a non-root user
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    index = scan(tmp_path)
    assert len(index) == 1 and index.skipped == {"unreadable_folder": 1}
    assert str(locked) in caplog.text
    with pytest.raises(DataLayoutError, match=f"{locked}.*data.strict=true"):
        scan(tmp_path, strict=True)


def test_file_lock_needs_no_fcntl(tmp_path):
    code = ("import sys; sys.modules['fcntl'] = None  # as on Windows\n"
            "from idclab.fileutil import file_lock\n"
            f"with file_lock(__import__('pathlib').Path({str(tmp_path / 'x.lock')!r})): print('locked')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "locked", result.stderr


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    """A write that fails half-way (a kill, a full disk) leaves the previous file as it was and no partial file;
    the temporary name keeps the extension, so pandas, matplotlib and numpy still infer the format from it."""
    table = tmp_path / "ledger.csv.gz"
    pd.DataFrame({"run": ["a"]}).to_csv(table, index=False)
    with pytest.raises(OSError, match="disk full"), whole_file(table) as partial:
        partial.write_bytes(b"half a ro")
        raise OSError("disk full")
    assert pd.read_csv(table)["run"].tolist() == ["a"] and [p.name for p in tmp_path.iterdir()] == [table.name]
    with whole_file(table) as partial:
        assert partial.name.startswith(".ledger.") and partial.name.endswith(".partial.csv.gz")  # hidden, own pid
        pd.DataFrame({"run": ["a", "b"]}).to_csv(partial, index=False)
    assert pd.read_csv(table)["run"].tolist() == ["a", "b"]  # still gzip: read back by its name
    with whole_file(tmp_path / "new" / "arrays.npz") as partial:
        np.savez_compressed(partial, x=np.arange(3))
    assert np.load(tmp_path / "new" / "arrays.npz")["x"].tolist() == [0, 1, 2]


def test_a_file_that_must_be_new_is_not_written_over_one_that_appeared_meanwhile(tmp_path):
    """An export checks that its path is free before anything runs; a file made there meanwhile (another export to
    the same path) is kept, and the export fails with the reason instead of replacing it."""
    from idclab.models.weights import WeightsError, write_weights

    target = tmp_path / "backbone.safetensors"
    with pytest.raises(FileExistsError), whole_file(target, exclusive=True) as partial:
        partial.write_text("mine")
        target.write_text("theirs")
    assert target.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == [target.name]
    with pytest.raises(WeightsError, match="backbone.safetensors exists: not overwritten"):
        write_weights({"w": torch.zeros(1)}, target, {}, exclusive=True)
    with whole_file(tmp_path / "fresh.txt", exclusive=True) as partial:
        partial.write_text("new")
    assert (tmp_path / "fresh.txt").read_text() == "new" and not list(tmp_path.glob(".*"))


def test_a_folder_to_predict_gives_its_images_but_not_hidden_leftovers(tmp_path):
    for name in ("b.png", "a.PNG", ".a.1234.partial.png", "._b.png", "notes.txt", ".cache/c.png", "sub/d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in collect_files(tmp_path)] == ["a.PNG", "b.png", "sub/d.png"]
