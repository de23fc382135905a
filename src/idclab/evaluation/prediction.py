"""Predict IDC probabilities for individual patch files or folders of them."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from idclab.classifier.module import IDCClassifier
from idclab.data.decode import decode_patch
from idclab.data.layout import PatchName, parse_patch_name
from idclab.data.neighbourhood import Views, in_chunks
from idclab.fileutil import whole_file

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


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
def predict_files(classifier: IDCClassifier, inputs: str | Path | Sequence[str | Path],
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


def apply_context(predictions: list[Prediction], classifier: IDCClassifier) -> None:
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
    """One P(IDC) slide heatmap per patient whose predicted files carry Kaggle coordinates.

    The patches are decoded again here, one patient at a time, rather than kept from prediction, so a
    folder of many whole slides never has to fit in memory.
    """
    from idclab.evaluation.plots import slide_heatmap_figure
    from idclab.fileutil import save_figure

    by_patient: dict[str, list[tuple[int, int, float, str]]] = {}
    for p in predictions:
        parsed = parse_patch_name(Path(p.file).name)
        if parsed is not None and p.probability is not None:
            by_patient.setdefault(parsed.patient, []).append((parsed.x, parsed.y, p.probability, p.file))
    written = []
    for patient, items in sorted(by_patient.items()):
        xs, ys, probs = (np.array(v) for v in list(zip(*items, strict=True))[:3])
        images = np.stack([decode_patch(file)[0] for *_, file in items])
        figure = slide_heatmap_figure(images, xs, ys, probs, None, threshold,
                                      f"Patient {patient}: P(IDC) of {len(items)} patches")
        written.append(save_figure(figure, folder / f"{patient}.png"))
    return written
