from pathlib import Path

import pytest

from idclab.data.layout import DataLayoutError, parse_patch_name, patch_file_name, scan


def touch_png(root: Path, patient: str, folder: str, name: str) -> None:
    path = root / patient / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded by scan")


def test_parse_round_trip():
    name = patch_file_name("10253", 1001, 51, 1)
    assert name == "10253_idx5_x1001_y51_class1.png"
    parsed = parse_patch_name(name)
    assert (parsed.patient, parsed.x, parsed.y, parsed.label) == ("10253", 1001, 51, 1)


@pytest.mark.parametrize("name", ["10253_idx5_x1_y1_class2.png", "10253_x1_y1_class1.png",
                                  "10253_idx5_x1_y1_class1.jpg", "readme.png", "10253_idx5_xA_y1_class0.png"])
def test_parse_rejects_other_names(name):
    assert parse_patch_name(name) is None


def test_scan_counts_skips_and_deduplicates_nested_copy(tmp_path):
    touch_png(tmp_path, "10", "0", "10_idx5_x1_y1_class0.png")
    touch_png(tmp_path, "10", "1", "10_idx5_x51_y1_class1.png")
    touch_png(tmp_path, "11", "1", "11_idx5_x1_y1_class1.png")
    # the Kaggle archive nests a full copy of every patient folder
    touch_png(tmp_path / "IDC_regular_ps50_idx5", "10", "0", "10_idx5_x1_y1_class0.png")
    touch_png(tmp_path / "IDC_regular_ps50_idx5", "10", "1", "10_idx5_x51_y1_class1.png")
    touch_png(tmp_path, "11", "0", "11_idx5_x51_y1_class1.png")  # folder says 0, name says 1
    touch_png(tmp_path, "11", "0", "notes.png")
    (tmp_path / "11" / "0" / "thumbs.db").write_bytes(b"")
    index = scan(tmp_path)
    assert len(index) == 3
    assert index.class_counts() == [1, 2]
    assert index.skipped == {"duplicate": 2, "folder_label_mismatch": 1, "unparsed_name": 1}
    assert all(not p.startswith("IDC_regular") for p in index.paths)  # the shallow copy is kept
    assert sorted(set(index.patients)) == ["10", "11"]


def test_scan_missing_root_explains_layout(tmp_path):
    with pytest.raises(DataLayoutError, match="(?s)does not exist.*<patient>/<0\\|1>.*kaggle datasets download"):
        scan(tmp_path / "nowhere")


def test_scan_empty_root_explains_layout(tmp_path):
    (tmp_path / "10" / "0").mkdir(parents=True)  # an empty patient folder
    with pytest.raises(DataLayoutError, match="no patch files found"):
        scan(tmp_path)


def test_empty_patient_folder_and_single_class_patients(tmp_path):
    (tmp_path / "12" / "0").mkdir(parents=True)  # a patient folder with no patches
    (tmp_path / "12" / "1").mkdir(parents=True)
    touch_png(tmp_path, "10", "0", "10_idx5_x1_y1_class0.png")  # negatives only
    touch_png(tmp_path, "11", "1", "11_idx5_x1_y1_class1.png")  # positives only
    index = scan(tmp_path)
    assert sorted(set(index.patients)) == ["10", "11"]
    assert index.class_counts() == [1, 1]
