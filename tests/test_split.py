import numpy as np
import pytest

from idclab.data.layout import DataLayoutError
from idclab.data.split import patch_share, patient_share, recorded, stratified_patient_split

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def make_patients(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for p in range(n):
        size = int(rng.integers(20, 80))
        ratio = rng.beta(1, 2)
        patients += [f"p{p}"] * size
        labels += list((rng.random(size) < ratio).astype(int))
    return np.array(patients), np.array(labels)


def test_no_patient_in_two_splits_and_all_rows_assigned():
    patients, labels = make_patients()
    split = stratified_patient_split(patients, labels, FRACTIONS, seed=1)
    assert sum(len(v) for v in split.patients.values()) == 40
    for a in split.patients:
        for b in split.patients:
            if a != b:
                assert not set(split.patients[a]) & set(split.patients[b])
    rows = np.concatenate(list(split.rows.values()))
    assert sorted(rows.tolist()) == list(range(len(patients)))
    assert [len(split.patients[s]) for s in ("train", "val", "test")] == [28, 6, 6]


def test_seeded_and_stratified():
    patients, labels = make_patients()
    a = stratified_patient_split(patients, labels, FRACTIONS, seed=1)
    assert a.patients == stratified_patient_split(patients, labels, FRACTIONS, seed=1).patients
    assert a.patients != stratified_patient_split(patients, labels, FRACTIONS, seed=2).patients
    ratio = {p: labels[patients == p].mean() for p in np.unique(patients)}
    means = {s: np.mean([ratio[p] for p in names]) for s, names in a.patients.items()}
    overall = np.mean(list(ratio.values()))
    assert all(abs(m - overall) < 0.12 for m in means.values()), means


def test_small_patient_counts_still_fill_every_split():
    patients, labels = make_patients(n=3)
    split = stratified_patient_split(patients, labels, FRACTIONS, seed=0)
    assert all(len(v) == 1 for v in split.patients.values())


@pytest.mark.parametrize("fractions", [{"train": 0.7, "val": 0.2, "test": 0.2},
                                       {"train": 1.1, "val": -0.05, "test": -0.05}])
def test_bad_fractions_are_refused(fractions):
    patients, labels = make_patients(n=10)
    with pytest.raises(ValueError, match="fractions"):
        stratified_patient_split(patients, labels, fractions, seed=0)


def test_too_few_patients_is_refused():
    patients, labels = make_patients(n=2)
    with pytest.raises(ValueError, match="at least 3 patients"):
        stratified_patient_split(patients, labels, FRACTIONS, seed=0)


def test_janowczyk_lists_are_honoured_and_gaps_reported():
    from idclab.data import janowczyk
    from idclab.data.split import make_split

    present = janowczyk.TRAIN[:5] + janowczyk.VAL[:2] + janowczyk.TEST[:3] + ["99999"]
    patients = np.repeat(np.array(present), 4)
    labels = np.tile([0, 1, 0, 0], len(present))
    split = make_split(patients, labels, "janowczyk", unlisted="val")
    assert split.patients["train"] == sorted(janowczyk.TRAIN[:5])
    assert split.patients["val"] == sorted(janowczyk.VAL[:2] + ["99999"])
    assert split.patients["test"] == sorted(janowczyk.TEST[:3])
    assert split.notes["unlisted_patients"] == ["99999"]
    assert len(split.notes["absent_listed_patients"]["test"]) == 49 - 3
    dropped = make_split(patients, labels, "janowczyk", unlisted="drop")
    assert "99999" not in sum(dropped.patients.values(), [])
    with pytest.raises(ValueError, match="unlisted"):
        make_split(patients, labels, "janowczyk", unlisted="somewhere")


def test_external_split_tests_on_the_second_site_only():
    from idclab.data.split import EXTERNAL_PREFIX, make_split

    patients, labels = make_patients(n=10)
    other, other_labels = make_patients(n=4, seed=5)
    both = np.concatenate([patients, np.char.add(EXTERNAL_PREFIX, other)])
    split = make_split(both, np.concatenate([labels, other_labels]), "external", val=0.2, seed=0)
    assert split.patients["test"] == sorted(EXTERNAL_PREFIX + p for p in np.unique(other))
    assert len(split.patients["train"]) == 8 and len(split.patients["val"]) == 2
    with pytest.raises(ValueError, match="split.root"):
        make_split(patients, labels, "external")


def test_unknown_split_method_is_named():
    from idclab.data.split import make_split

    patients, labels = make_patients(n=5)
    with pytest.raises(ValueError, match="unknown split method 'random'"):
        make_split(patients, labels, "random")


def test_the_leaky_patch_split_shares_patients_between_train_and_test():
    from idclab.data.split import make_split, patches

    patients = np.repeat(np.array([f"p{i}" for i in range(10)]), 20)
    labels = np.tile([0, 1], 100)
    split = patches(patients, labels, 0.7, 0.15, 0.15, seed=0)
    assert sorted(np.concatenate(list(split.rows.values())).tolist()) == list(range(200))
    assert [len(r) for r in split.rows.values()] == [140, 30, 30]
    assert split.notes["leaky"] and split.notes["patients_in_train_and_test"] > 0
    honest = make_split(patients, labels, "stratified", train=0.7, val=0.15, test=0.15, seed=0)
    assert not set(honest.patients["train"]) & set(honest.patients["test"])


def test_recorded_split_keeps_the_lists_and_names_missing_patients():
    patients = np.array(["a", "a", "b", "c", "d", "d", "e"])
    labels = np.array([0, 1, 0, 1, 0, 1, 0])
    split = recorded(patients, labels, train=["a", "b"], val=["c"], test=["d"])
    assert split.patients == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert split.rows["test"].tolist() == [4, 5] and split.notes["new_patients"] == ["e"]  # e is left out
    with pytest.raises(DataLayoutError, match=r"recorded test patients x, y \(and there are new patients: e\)"):
        recorded(patients, labels, train=["a", "b"], val=["c"], test=["d", "x", "y"])
    # a training patient gone does not stop an evaluation; a validation one only when it is required
    assert recorded(patients, labels, ["a", "z"], ["c"], ["d"]).patients["train"] == ["a"]
    with pytest.raises(DataLayoutError, match="recorded val patients q"):
        recorded(patients, labels, ["a", "b"], ["q"], ["d"], required=["val", "test"])


def test_a_patient_share_is_stratified_seeded_and_nested():
    """cv.train_patients: a share of the patients spanning the range of IDC shares; for one seed a smaller share's
    patients are among a larger one's, so the points of a learning curve differ only by the patients added."""
    names = np.array([f"p{i:02d}" for i in range(16)])
    patients = np.repeat(names, 4)
    labels = np.concatenate([[1] * (i // 4) + [0] * (4 - i // 4) for i in range(16)])  # 4 patients each of 0-3 IDC
    quarter, half = patient_share(patients, labels, 0.25, seed=3), patient_share(patients, labels, 0.5, seed=3)
    assert len(quarter) == 4 and len(half) == 8 and set(quarter) <= set(half)
    idc = {p: labels[patients == p].sum() for p in names}
    assert sorted(idc[p] for p in quarter) == [0, 1, 2, 3]  # one patient of each stratum
    assert sorted(idc[p] for p in half) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert patient_share(patients, labels, 0.25, seed=3) == quarter
    assert any(patient_share(patients, labels, 0.25, seed=s) != quarter for s in range(4, 8))
    assert sorted(patient_share(patients, labels, 1.0, seed=3)) == sorted(names)
    assert len(patient_share(patients, labels, 0.01, seed=3)) == 1  # never empty


def test_a_patch_share_keeps_each_patients_classes_and_is_nested():
    """cv.train_patches: a share of each patient's patches of each class (at least one), nested across shares."""
    patients = np.array(["a"] * 8 + ["b"] * 4)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1])
    half, quarter = patch_share(patients, labels, 0.5, seed=0), patch_share(patients, labels, 0.25, seed=0)
    assert set(quarter) <= set(half) and np.all(np.diff(half) > 0)
    kept = {(p, c): int(((patients[half] == p) & (labels[half] == c)).sum()) for p in "ab" for c in (0, 1)}
    assert kept == {("a", 0): 3, ("a", 1): 1, ("b", 0): 1, ("b", 1): 1}
    kept = {(p, c): int(((patients[quarter] == p) & (labels[quarter] == c)).sum()) for p in "ab" for c in (0, 1)}
    assert kept == {("a", 0): 2, ("a", 1): 1, ("b", 0): 1, ("b", 1): 1}  # round(1.5) = 2; at least one
    assert np.array_equal(patch_share(patients, labels, 1.0, seed=0), np.arange(12))
    assert not np.array_equal(patch_share(patients, labels, 0.5, seed=1), half) or \
        not np.array_equal(patch_share(patients, labels, 0.5, seed=2), half)
