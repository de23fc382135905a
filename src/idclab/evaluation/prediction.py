"""Predict IDC probabilities for individual patch files or folders of them, and say what came out: every file in
`predictions.csv`, on the console a per-patient summary (or each file, for a few files or with verbose=true) and the
heatmaps written.

Light on purpose (torch, numpy and Pillow; matplotlib for heatmaps): it works with the plain-torch `Predictor` as
with the LightningModule, and imports neither.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from idclab.config.validation import ConfigError
from idclab.data.decode import decode_patch
from idclab.data.layout import PatchName, parse_patch_name
from idclab.data.neighbourhood import Views, in_chunks
from idclab.fileutil import whole_file
from idclab.verbosity import is_verbose

if TYPE_CHECKING:  # the models prediction works with: plain torch, or the LightningModule (test-time augmentation)
    from idclab.classifier.module import IDCClassifier
    from idclab.classifier.predictor import OperatingPoint

    Scorer = OperatingPoint | IDCClassifier

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
LISTED = 10  # up to this many files, each is printed; more: the per-patient summary (each file in the CSV)
CONFIDENT = 3  # the most confident IDC calls named per patient
HEATMAP_PATCHES = 2  # a patient's heatmap needs at least this many of its patches predicted


@dataclass
class Prediction:
    """One file's result: a probability and label, or the reason it could not be predicted."""

    file: str
    probability: float | None = None
    label: int | None = None
    error: str | None = None
    patch_probability: float | None = None  # P(IDC) of the patch alone, before spatial context


def collect_files(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files named, plus every image file found (recursively, sorted) in the folders named, hidden ones (a
    leftover `.x.partial.png`, macOS `._x.png`) aside.

    A single path (e.g. `predict=/path/file.png` without brackets) is one input, not a sequence of characters.
    """
    files: list[Path] = []
    for item in map(Path, [inputs] if isinstance(inputs, (str, Path)) else inputs):
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                                and not any(part.startswith(".") for part in p.relative_to(item).parts)))
        else:
            files.append(item)
    return files


def read(prediction: Prediction) -> np.ndarray | None:
    """The pixels of the prediction's file, or None with its error set (missing, unreadable, or larger than 50x50:
    rejected from its header, never decoded)."""
    path = Path(prediction.file)
    if not path.is_file():
        prediction.error = "no such file"
        return None
    array, status = decode_patch(path)
    if array is None:
        prediction.error = f"{status.value}: not a readable image of at most 50x50 pixels"
    return array


def alone_batches(predictions: list[Prediction], batch_size: int) -> Iterator[tuple[list[Prediction], np.ndarray]]:
    """Batches of the readable files' patches (N x 50 x 50 x 3), decoded as they are needed."""
    pending: list[tuple[Prediction, np.ndarray]] = []
    for prediction in predictions:
        if (array := read(prediction)) is not None:
            pending.append((prediction, array))
        if len(pending) == batch_size:
            yield [p for p, _ in pending], np.stack([a for _, a in pending])
            pending = []
    if pending:
        yield [p for p, _ in pending], np.stack([a for _, a in pending])


def slides(predictions: list[Prediction]) -> list[list[tuple[Prediction, PatchName | None]]]:
    """The predictions with their parsed names, grouped by the patient in their Kaggle file names in order of first
    appearance; the files without such a name form a last group."""
    groups: dict[str | None, list[tuple[Prediction, PatchName | None]]] = {}
    for prediction in predictions:
        parsed = parse_patch_name(Path(prediction.file).name)
        groups.setdefault(parsed.patient if parsed else None, []).append((prediction, parsed))
    return [group for patient, group in groups.items() if patient is not None] + [groups.get(None, [])]


def neighbourhood_batches(predictions: list[Prediction], views: Views, batch_size: int
                          ) -> Iterator[tuple[list[Prediction], np.ndarray]]:
    """Batches of the readable files' patches with their neighbourhood `views` (N x 50 x 50 x 3(1 + V)), one slide
    decoded at a time: neighbours are found among the files of the same patient by their names' coordinates; a file
    without Kaggle coordinates is shown alone (with a warning: the model rarely saw that in training)."""
    for group in slides(predictions):
        placed = [(p, name, array) for p, name in group if (array := read(p)) is not None]
        if not placed:
            continue
        names = [name for _, name, _ in placed]
        positions = None
        if names[0] is None:
            log.warning("%d file(s) without Kaggle coordinates in their names: this model (neighbourhood views of %s "
                        "rings) sees each of them without its neighbours", len(placed), list(views))
        else:
            positions = tuple(np.array([getattr(n, axis) for n in names]) for axis in ("patient", "x", "y"))
        chunks = in_chunks(np.stack([a for *_, a in placed]), views, positions, batch_size)
        for start, chunk in zip(range(0, len(placed), batch_size), chunks, strict=True):
            yield [p for p, *_ in placed[start:start + batch_size]], chunk


@torch.no_grad()
def predict_files(classifier: Scorer, inputs: str | Path | Sequence[str | Path],
                  batch_size: int = 256) -> list[Prediction]:
    """Predict every file of `collect_files(inputs)`, in that order; one that is missing, unreadable or larger
    than 50x50 gets an error row. A model with a neighbourhood view (`data.neighbourhood`) is shown each patch with
    its neighbours among the files of the same patient (one slide in memory at a time)."""
    classifier.eval()
    results = [Prediction(str(path)) for path in collect_files(inputs)]
    views = classifier.input_views
    batches = neighbourhood_batches(results, views, batch_size) if views else alone_batches(results, batch_size)
    for predictions, pixels in batches:
        batch = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
        probs = classifier.probabilities(batch.to(classifier.device)).cpu().numpy()
        for prediction, prob in zip(predictions, probs, strict=True):
            prediction.probability = prediction.patch_probability = float(prob)
            prediction.label = int(prob >= classifier.alone_threshold)
    if classifier.uses_context:
        apply_context(results, classifier)
    return results


def apply_context(predictions: list[Prediction], classifier: Scorer) -> None:
    """Blend the probability of every predicted file whose name carries Kaggle coordinates with its neighbours
    among them, labelled at the model's threshold; other files keep the threshold tuned without context."""
    placed = [(p, parsed) for p in predictions if p.probability is not None
              and (parsed := parse_patch_name(Path(p.file).name)) is not None]
    if not placed:
        return
    patients = np.array([parsed.patient for _, parsed in placed])
    xs, ys = (np.array([getattr(parsed, axis) for _, parsed in placed]) for axis in ("x", "y"))
    probs = np.array([p.patch_probability for p, _ in placed])
    smoothed = classifier.blend(probs, patients, xs, ys)
    for (prediction, _), prob in zip(placed, smoothed, strict=True):
        prediction.probability = float(prob)
        prediction.label = int(prob >= classifier.threshold)


def write_csv(predictions: list[Prediction], path: Path) -> None:
    """file, patient, x, y, probability, label, error, patch_probability (patient/x/y when the name carries
    them; patch_probability is P(IDC) before spatial context, equal to probability without it)."""
    with whole_file(path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "patient", "x", "y", "probability", "label", "error", "patch_probability"])
        for p in predictions:
            parsed = parse_patch_name(Path(p.file).name)
            coords = [parsed.patient, parsed.x, parsed.y] if parsed else ["", "", ""]
            prob, alone = ("" if v is None else f"{v:.6f}" for v in (p.probability, p.patch_probability))
            writer.writerow([p.file, *coords, prob, "" if p.label is None else p.label, p.error or "", alone])


def format_table(predictions: list[Prediction]) -> str:
    """A human-readable table: probability, label and file (or the error)."""
    lines = [f"{'P(IDC)':>8}  {'label':<8} file"]
    for p in predictions:
        if p.error:
            lines.append(f"{'-':>8}  {'ERROR':<8} {p.file}: {p.error}")
        else:
            lines.append(f"{p.probability:8.4f}  {'IDC' if p.label else 'non-IDC':<8} {p.file}")
    return "\n".join(lines)


def write_heatmaps(predictions: list[Prediction], folder: Path, threshold: float) -> list[Path]:
    """One P(IDC) slide heatmap per patient with at least HEATMAP_PATCHES predicted files carrying Kaggle
    coordinates.

    The patches are decoded again here, one patient at a time, rather than kept from prediction, so a
    folder of many whole slides never has to fit in memory.
    """
    by_patient: dict[str, list[tuple[int, int, float, str]]] = {}
    for p in predictions:
        parsed = parse_patch_name(Path(p.file).name)
        if parsed is not None and p.probability is not None:
            by_patient.setdefault(parsed.patient, []).append((parsed.x, parsed.y, p.probability, p.file))
    drawn = {patient: items for patient, items in by_patient.items() if len(items) >= HEATMAP_PATCHES}
    if not drawn:  # one patch shows no slide
        return []
    from idclab.evaluation.heatmaps import slide_heatmap_figure  # matplotlib: only when there is a slide to draw
    from idclab.fileutil import save_figure

    written = []
    for patient, items in sorted(drawn.items()):
        xs, ys, probs = (np.array(v) for v in list(zip(*items, strict=True))[:3])
        images = np.stack([decode_patch(file)[0] for *_, file in items])
        figure = slide_heatmap_figure(images, xs, ys, probs, None, threshold,
                                      f"Patient {patient}: P(IDC) of {len(items)} patches")
        written.append(save_figure(figure, folder / f"{patient}.png"))
    return written


def patient_summary(predictions: list[Prediction], threshold: float) -> str:
    """Per patient (from the Kaggle file names; other files together): patches predicted, the share called IDC and
    the most confident IDC calls."""
    groups: dict[str, list[tuple[Prediction, PatchName | None]]] = {}
    for p in predictions:
        if p.probability is not None:
            parsed = parse_patch_name(Path(p.file).name)
            groups.setdefault(parsed.patient if parsed else "(other files)", []).append((p, parsed))
    lines = [f"  {'patient':<14} {'patches':>7} {'called IDC':>10}  most confident IDC calls: P(IDC) at (x, y)"]
    for patient, items in sorted(groups.items(), key=lambda item: (item[0] == "(other files)", item[0])):
        called = sorted((item for item in items if item[0].label), key=lambda item: -(item[0].probability or 0))
        calls = ", ".join(f"{p.probability:.3f} at ({name.x}, {name.y})" if name else
                          f"{p.probability:.3f} {Path(p.file).name}" for p, name in called[:CONFIDENT])
        lines.append(f"  {patient:<14} {len(items):>7} {len(called) / len(items):>10.1%}  {calls or 'none'}")
    return f"P(IDC) of {sum(map(len, groups.values()))} patches, IDC called at >= {threshold:.4f}:\n" + "\n".join(lines)


def files_to_predict(inputs: str | Sequence[str]) -> list[Path]:
    """The files the `predict` inputs name (`collect_files`); ConfigError (one line) unless one of them exists."""
    files = collect_files(inputs)
    if not any(path.is_file() for path in files):
        named = [inputs] if isinstance(inputs, str) else list(inputs)
        raise ConfigError(f"predict: no file to predict in {', '.join(map(str, named))} (missing, or folders without "
                          f"image files: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def predict_and_write(classifier: Scorer, files: list[Path], batch_size: int, out_dir: Path) -> dict:
    """P(IDC) of `files` into `out_dir/predictions.csv` and slide heatmaps; on the console each file (a few, or with
    verbose=true) or a per-patient summary, then where the CSV and heatmaps are. ConfigError when none could be
    predicted."""
    predictions = predict_files(classifier, files, batch_size)
    if is_verbose() or len(predictions) <= LISTED:
        print(format_table(predictions))
    failed = [p for p in predictions if p.error is not None]
    if len(predictions) > LISTED and len(failed) < len(predictions):
        print(patient_summary(predictions, classifier.threshold))
    csv_path = out_dir / "predictions.csv"
    write_csv(predictions, csv_path)
    heatmaps = write_heatmaps(predictions, out_dir / "heatmaps", classifier.threshold)
    if failed and len(failed) < len(predictions):
        print(f"{len(failed)} of {len(predictions)} files could not be predicted (the CSV's error column), "
              f"e.g. {failed[0].file}: {failed[0].error}")
    print(f"CSV: {csv_path}" + (f"\nHeatmaps: {heatmaps[0].parent}/ ({len(heatmaps)}: "
                                f"{', '.join(h.name for h in heatmaps[:5])}{', ...' if len(heatmaps) > 5 else ''})"
                                if heatmaps else ""))
    if len(failed) == len(predictions):
        first = predictions[0]
        raise ConfigError(f"predict: none of the {len(failed)} files could be predicted ({first.file}: {first.error}; "
                          f"every error in {csv_path})")
    return {"predicted": len(predictions) - len(failed), "failed": len(failed), "threshold": classifier.threshold}
