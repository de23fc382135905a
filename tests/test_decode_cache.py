import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idclab.data.cache import BadPatchError, check_bad_patches, load_or_build
from idclab.data.decode import PAD_VALUE, PatchStatus, decode_patch
from idclab.data.layout import patch_file_name, scan


def write(root: Path, patient: str, x: int, label: int, image: Image.Image | bytes) -> Path:
    path = root / patient / str(label) / patch_file_name(patient, x, 1, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, bytes):
        path.write_bytes(image)
    else:
        image.save(path)
    return path


def rgb(w=50, h=50, value=(200, 100, 150)) -> Image.Image:
    return Image.new("RGB", (w, h), value)


def test_full_patch_is_ok(tmp_path):
    array, status = decode_patch(write(tmp_path, "1", 1, 0, rgb()))
    assert status is PatchStatus.OK
    assert array.shape == (50, 50, 3) and array.dtype == np.uint8
    assert (array == (200, 100, 150)).all()


@pytest.mark.parametrize("size", [(50, 42), (50, 1), (1, 50), (12, 43)])
def test_border_patch_is_padded_white_bottom_right(tmp_path, size):
    w, h = size
    array, status = decode_patch(write(tmp_path, "1", 1, 0, rgb(w, h)))
    assert status is PatchStatus.PADDED and array.shape == (50, 50, 3)
    assert (array[:h, :w] == (200, 100, 150)).all()
    assert (array[h:, :] == PAD_VALUE).all() and (array[:, w:] == PAD_VALUE).all()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_non_rgb_modes_become_rgb(tmp_path, mode):
    image = rgb().convert(mode) if mode != "I;16" else Image.new("I;16", (50, 50), 1000)
    array, status = decode_patch(write(tmp_path, "1", 1, 0, image))
    assert status is PatchStatus.OK and array.shape == (50, 50, 3)


def test_transparent_pixels_become_white(tmp_path):
    image = Image.new("RGBA", (50, 50), (10, 20, 30, 0))
    array, _ = decode_patch(write(tmp_path, "1", 1, 0, image))
    assert (array == 255).all()


def test_corrupt_truncated_and_oversized(tmp_path):
    good = write(tmp_path, "1", 1, 0, rgb())
    truncated = write(tmp_path, "1", 51, 0, good.read_bytes()[:60])
    assert decode_patch(write(tmp_path, "1", 101, 0, b"garbage"))[1] is PatchStatus.CORRUPT
    assert decode_patch(truncated)[1] is PatchStatus.CORRUPT
    assert decode_patch(write(tmp_path, "1", 151, 0, rgb(64, 64)))[1] is PatchStatus.OVERSIZED


def test_cache_is_built_once_and_rebuilt_when_data_changes(tmp_path):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    for x in range(1, 300, 50):
        write(data, "7", x, x % 2, rgb(value=(x % 256, 0, 0)))
    index = scan(data)
    cache = load_or_build(index, cache_dir, workers=2)
    assert cache.images.shape == (6, 50, 50, 3)
    for image, path in zip(cache.images, index.paths, strict=True):
        assert (image == np.asarray(Image.open(index.root / path))).all()
    npy = cache_dir / f"{cache.key}.npy"
    stamp = npy.stat().st_mtime_ns
    again = load_or_build(scan(data), cache_dir)
    assert again.key == cache.key and npy.stat().st_mtime_ns == stamp  # reused, not rebuilt
    changed = write(data, "7", 1, 1, rgb(value=(9, 9, 9)))
    os.utime(changed, ns=(stamp + 10**9, stamp + 10**9))
    rebuilt = load_or_build(scan(data), cache_dir)
    assert rebuilt.key != cache.key
    assert not list(cache_dir.glob("*.partial"))


def test_the_content_digest_names_the_pixels_and_labels_not_the_files_times_or_place(tmp_path):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    for x in range(1, 200, 50):
        write(data, "7", x, x % 2, rgb(value=(x % 256, 0, 0)))
    cache = load_or_build(scan(data), cache_dir, workers=1)
    moved = tmp_path / "moved"
    shutil.copytree(data, moved, copy_function=shutil.copy)  # a fresh copy: new place, new modification times
    copy = load_or_build(scan(moved), cache_dir, workers=1)
    assert copy.key != cache.key and copy.content == cache.content
    (relabelled,) = (moved / "7" / "1").glob("*_x1_*")
    (moved / "7" / "0").mkdir(exist_ok=True)
    relabelled.rename(moved / "7" / "0" / relabelled.name.replace("class1", "class0"))  # the same pixels, relabelled
    assert load_or_build(scan(moved), cache_dir, workers=1).content != cache.content
    write(data, "7", 51, 1, rgb(value=(9, 9, 9)))
    assert load_or_build(scan(data), cache_dir, workers=1).content != cache.content


def test_a_cache_built_before_content_digests_gains_one_without_being_decoded_again(tmp_path):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    for x in range(1, 200, 50):
        write(data, "7", x, x % 2, rgb(value=(x % 256, 0, 0)))
    cache = load_or_build(scan(data), cache_dir, workers=1)
    npy, meta = cache_dir / f"{cache.key}.npy", cache_dir / f"{cache.key}.json"
    info = json.loads(meta.read_text())
    meta.write_text(json.dumps({k: v for k, v in info.items() if k != "content"}))  # as an older idclab left it
    stamp = npy.stat().st_mtime_ns
    again = load_or_build(scan(data), cache_dir, workers=1)
    assert again.key == cache.key and again.content == cache.content and npy.stat().st_mtime_ns == stamp
    assert json.loads(meta.read_text())["content"] == cache.content  # written once, for the next reader


def test_bad_files_are_skipped_with_warning_or_fail_in_strict_mode(tmp_path, caplog):
    write(tmp_path / "d", "7", 1, 0, rgb())
    write(tmp_path / "d", "7", 51, 0, b"broken")
    index = scan(tmp_path / "d")
    cache = load_or_build(index, tmp_path / "cache", workers=1)
    assert cache.usable.tolist() == [True, False]
    assert cache.counts() == {"ok": 1, "corrupt": 1}
    check_bad_patches(index, cache, strict=False)
    assert "7_idx5_x51_y1_class0.png" in caplog.text
    with pytest.raises(BadPatchError, match="7_idx5_x51_y1_class0.png \\(corrupt\\)"):
        check_bad_patches(index, cache, strict=True)


def test_a_killed_build_leaves_no_cache_and_the_next_run_rebuilds(tmp_path):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    for x in range(1, 200, 50):
        write(data, "7", x, 0, rgb())
    index = scan(data)
    from idclab.data.cache import cache_key

    key = cache_key(index)
    cache_dir.mkdir()
    # what a build killed half-way leaves behind: partial files, no metadata
    (cache_dir / f"{key}.npy.partial").write_bytes(b"\x93NUMPY half written")
    (cache_dir / f"{key}.json.partial").write_text("{")
    cache = load_or_build(index, cache_dir, workers=1)
    assert cache.counts() == {"ok": 4}
    assert (np.asarray(cache.images) == (200, 100, 150)).all()
    assert sorted(p.name for p in cache_dir.iterdir()) == [f"{key}.json", f"{key}.lock", f"{key}.npy"]


def _build_in_subprocess(args):
    data, cache_dir = args
    cache = load_or_build(scan(data), cache_dir, workers=1)
    return cache.key, cache_dir.joinpath(f"{cache.key}.npy").stat().st_mtime_ns


def test_concurrent_jobs_build_the_cache_once(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    for x in range(1, 3000, 50):
        write(data, "7", x, x % 2, rgb(value=(x % 256, 5, 5)))
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_build_in_subprocess, [(data, cache_dir)] * 4))
    assert len(set(results)) == 1  # the same key and the very same file: built once, then reused
    index = scan(data)
    cache = load_or_build(index, cache_dir)
    for image, path in zip(cache.images, index.paths, strict=True):
        assert (image == np.asarray(Image.open(index.root / path))).all()
