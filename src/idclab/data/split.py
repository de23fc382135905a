"""Patient-level splits: no patient ever contributes patches to two splits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from idclab.data import janowczyk
from idclab.data.layout import DataLayoutError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
EXTERNAL_PREFIX = "external:"


@dataclass
class PatientSplit:
    """Which patients, and so which index rows, belong to each split (plus notes worth logging)."""

    patients: dict[str, list[str]]
    rows: dict[str, np.ndarray]
    notes: dict[str, object] = field(default_factory=dict)

    def check_disjoint(self) -> None:
        """Raise if any patient is in two splits."""
        seen: dict[str, str] = {}
        for split, names in self.patients.items():
            for name in names:
                if name in seen:
                    raise AssertionError(f"patient {name} is in both {seen[name]} and {split}")
                seen[name] = split


def _allocate(n: int, fractions: list[float]) -> list[int]:
    """Split n items by fractions (largest remainder); every split with a positive fraction gets one."""
    raw = np.array(fractions) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n - counts.sum()]:
        counts[i] += 1
    for i, fraction in enumerate(fractions):
        if fraction > 0 and counts[i] == 0:
            donor = int(np.argmax(counts))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts.tolist()


def _from_assignment(patients: np.ndarray, assigned: dict[str, list[str]], notes: dict | None = None
                     ) -> PatientSplit:
    rows = {s: np.flatnonzero(np.isin(patients, assigned[s])) for s in SPLITS}
    split = PatientSplit({s: sorted(assigned[s]) for s in SPLITS}, rows, notes or {})
    split.check_disjoint()
    return split


def stratified(patients: np.ndarray, labels: np.ndarray, train: float = 0.7, val: float = 0.15,
               test: float = 0.15, seed: int = 0) -> PatientSplit:
    """Seeded patient-level split by fractions, stratified by each patient's positive share."""
    return stratified_patient_split(patients, labels, {"train": train, "val": val, "test": test}, seed)


def published(patients: np.ndarray, labels: np.ndarray, unlisted: str = "train") -> PatientSplit:
    """The published Janowczyk & Madabhushi patient lists; unlisted patients go to `unlisted`
    (train, val, test, or drop), listed patients missing from the data are reported."""
    if unlisted not in (*SPLITS, "drop"):
        raise ValueError(f"split.unlisted must be one of train, val, test, drop; got {unlisted!r}")
    present = set(np.unique(patients).tolist())
    assigned = {s: [p for p in janowczyk.PATIENTS[s] if p in present] for s in SPLITS}
    listed = {p for names in janowczyk.PATIENTS.values() for p in names}
    extra = sorted(present - listed)
    if unlisted != "drop":
        assigned[unlisted] += extra
    missing = {s: [p for p in janowczyk.PATIENTS[s] if p not in present] for s in SPLITS}
    if any(missing.values()):
        log.warning("janowczyk split: listed patients absent from the data: %s",
                    {s: len(m) for s, m in missing.items()})
    return _from_assignment(patients, assigned, {"absent_listed_patients": missing,
                                                 "unlisted_patients": extra, "unlisted_to": unlisted})


def external(patients: np.ndarray, labels: np.ndarray, val: float = 0.15, seed: int = 0) -> PatientSplit:
    """External validation: the second root's patients (prefixed `external:`) are the test split;
    the main root's patients are split into train and val, stratified and seeded."""
    is_external = np.char.startswith(patients.astype(str), EXTERNAL_PREFIX)
    if not is_external.any():
        raise ValueError("split=external needs split.root: the second data root to test on")
    inner = stratified_patient_split(patients[~is_external], labels[~is_external],
                                     {"train": 1 - val, "val": val, "test": 0.0}, seed)
    assigned = {"train": inner.patients["train"], "val": inner.patients["val"],
                "test": sorted(np.unique(patients[is_external]).tolist())}
    return _from_assignment(patients, assigned)


def by_idc_share(patients: np.ndarray, labels: np.ndarray, unique: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
    """`unique` (patient ids) ordered by each one's share of positive patches, ties broken at random by `rng`."""
    ratio = np.array([labels[patients == p].mean() for p in unique])
    return unique[np.lexsort((rng.random(len(unique)), ratio))]


def stratified_patient_split(patients: np.ndarray, labels: np.ndarray, fractions: dict[str, float],
                             seed: int) -> PatientSplit:
    """Assign whole patients to splits, stratified by each patient's share of positive patches.

    Patients are ordered by positive ratio and dealt, strata of a few at a time, to the splits in
    proportion to `fractions` (seeded shuffle within each stratum), so every split spans the range
    from tumour-free to tumour-rich patients.
    """
    names = [s for s in SPLITS if s in fractions]
    weights = [float(fractions[s]) for s in names]
    if any(w < 0 for w in weights) or not np.isclose(sum(weights), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    unique = np.unique(patients)
    needed = sum(w > 0 for w in weights)
    if len(unique) < needed:
        raise ValueError(f"need at least {needed} patients for splits {fractions}, found {len(unique)}")
    rng = np.random.default_rng(seed)
    order = by_idc_share(patients, labels, unique, rng)
    stratum = max(2, int(round(1 / min(w for w in weights if w > 0))))
    assigned: dict[str, list[str]] = {s: [] for s in names}
    totals = np.array(_allocate(len(unique), weights))
    dealt = 0
    # deal strata in turn; the split furthest behind its pro-rata share takes the next patient
    for start in range(0, len(order), stratum):
        block = list(order[start:start + stratum])
        rng.shuffle(block)
        for patient in block:
            dealt += 1
            behind = totals * dealt / len(unique) - [len(assigned[s]) for s in names]
            assigned[names[int(np.argmax(behind + 1e-6 * rng.random(len(names))))]].append(str(patient))
    return _from_assignment(patients, {s: assigned.get(s, []) for s in SPLITS})


SHARE_STRATUM = 4  # patient_share: patients per stratum of IDC share


def _kept(n: int | np.ndarray, share: float) -> np.ndarray:
    """How many of n items a share keeps (elementwise): rounded half up, at least one."""
    return np.maximum(1, np.floor(share * np.asarray(n) + 0.5)).astype(int)


def patient_share(patients: np.ndarray, labels: np.ndarray, share: float, seed: int) -> list[str]:
    """A seeded share of the patients, stratified by IDC share and nested: patients sorted by their share of
    positive patches are cut into strata of `SHARE_STRATUM`, each stratum's patients ranked at random, and every
    stratum's first-ranked patient is taken before any second one (exactly stratified at multiples of 1/4; between,
    the next rank is drawn at random). For one seed a smaller share's patients are among a larger one's."""
    rng = np.random.default_rng(seed)
    order = by_idc_share(patients, labels, np.unique(patients), rng)
    rank = np.concatenate([rng.permutation(len(order[start:start + SHARE_STRATUM]))
                           for start in range(0, len(order), SHARE_STRATUM)])
    taken = order[np.lexsort((rng.random(len(order)), rank))][:int(_kept(len(order), share))]
    return sorted(str(p) for p in taken)


def patch_share(patients: np.ndarray, labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """The sorted positions of a seeded share of each patient's patches of each class (at least one of each),
    nested: for one seed a smaller share's patches are among a larger one's."""
    import pandas as pd  # here: reading SPLIT_METHODS stays light

    groups = pd.DataFrame({"patient": patients, "label": labels,
                           "priority": np.random.default_rng(seed).random(len(patients))}).groupby(["patient", "label"])
    rank = groups["priority"].rank(method="first").to_numpy() - 1
    return np.flatnonzero(rank < _kept(groups["priority"].transform("size").to_numpy(), share))


def patches(patients: np.ndarray, labels: np.ndarray, train: float = 0.7, val: float = 0.15, test: float = 0.15,
            seed: int = 0) -> PatientSplit:
    """LEAKY on purpose: patches dealt to splits at random, ignoring patients, so one patient's neighbouring
    patches land in train and test. Only for measuring how much such a split inflates the metrics."""
    counts = _allocate(len(patients), [train, val, test])
    order = np.random.default_rng(seed).permutation(len(patients))
    bounds = np.cumsum([0, *counts])
    rows = {s: np.sort(order[bounds[i]:bounds[i + 1]]) for i, s in enumerate(SPLITS)}
    names = {s: sorted(np.unique(patients[r]).tolist()) for s, r in rows.items()}
    shared = len(set(names["train"]) & set(names["test"]))
    log.warning("split=patches is a leaky patch-level split: %d patients have patches in both train and test", shared)
    return PatientSplit(names, rows, {"leaky": True, "patients_in_train_and_test": shared})


def recorded(patients: np.ndarray, labels: np.ndarray, train: list[str], val: list[str], test: list[str],
             required: Sequence[str] = ("test",)) -> PatientSplit:
    """The patient lists a training run recorded, exactly: a patient of a `required` split that the data no
    longer hold is an error naming it; patients the lists do not name (new since) are left out and noted."""
    present = set(np.unique(patients).tolist())
    assigned = {"train": list(train), "val": list(val), "test": list(test)}
    missing = {s: sorted(set(assigned[s]) - present) for s in SPLITS}
    new = sorted(present - {p for names in assigned.values() for p in names})
    absent = [f"{s} patients {', '.join(missing[s])}" for s in SPLITS if missing[s] and s in required]
    if absent:
        extra = f" (and there are new patients: {', '.join(new)})" if new else ""
        raise DataLayoutError(f"the data no longer hold the recorded {'; '.join(absent)}{extra}: restore them, "
                              "or test a fresh split of the data as it is with split_from=fresh")
    return _from_assignment(patients, {s: [p for p in assigned[s] if p in present] for s in SPLITS},
                            {"missing_recorded_patients": missing, "new_patients": new})


SPLIT_METHODS = {"stratified": stratified, "janowczyk": published, "external": external, "patches": patches,
                 "recorded": recorded}


def make_split(patients: np.ndarray, labels: np.ndarray, method: str, **options: object) -> PatientSplit:
    """Split by the method a `split` config names (stratified, janowczyk, external, patches, recorded)."""
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; choose one of {sorted(SPLIT_METHODS)}")
    return SPLIT_METHODS[method](patients, labels, **options)
