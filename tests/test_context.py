"""Spatial context: neighbours on the slide, smoothing and the weight tuned on validation (hand-computed)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.sparse import csr_matrix

from idclab.classifier.module import IDCClassifier
from idclab.config.build import context_of
from idclab.evaluation.prediction import predict_files, write_csv
from idclab.scoring.context import neighbour_matrix, row_normalised, smooth, tune_weight


def test_neighbours_are_the_same_patients_adjacent_patches():
    patients = np.array(["a", "a", "a", "a", "b"])
    xs = np.array([0, 50, 100, 50, 50])
    ys = np.array([0, 0, 0, 50, 0])  # b's patch sits where a's second one does: another slide
    matrix = neighbour_matrix(patients, xs, ys, radius=1).toarray()
    # (0,0) touches (50,0) and (50,50); (100,0) touches (50,0) and (50,50); (50,0) touches the other three
    expected = np.array([[0, 1, 0, 1, 0], [1, 0, 1, 1, 0], [0, 1, 0, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    assert (matrix > 0).astype(int).tolist() == expected.tolist()
    assert matrix[1].tolist() == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3, 0])  # rows average the neighbours


def test_row_normalised_weights_each_neighbour_by_one_over_the_rows_count_and_keeps_empty_rows():
    adjacency = csr_matrix(np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]], dtype=float))
    assert row_normalised(adjacency).toarray().tolist() == [[0, 0.5, 0.5], [0, 0, 0], [1, 0, 0]]


def test_radius_two_reaches_two_patches_away():
    patients = np.array(["a", "a", "a"])
    xs, ys = np.array([0, 100, 150]), np.array([0, 0, 0])
    assert (neighbour_matrix(patients, xs, ys, radius=1).toarray() > 0).sum() == 2  # only 100 and 150 touch
    assert (neighbour_matrix(patients, xs, ys, radius=2).toarray() > 0).sum() == 4  # 0 and 100 now too


def test_smooth_blends_with_the_neighbour_mean_and_keeps_isolated_patches():
    patients = np.array(["a", "a", "a", "b"])
    xs, ys = np.array([0, 50, 100, 0]), np.array([0, 0, 0, 0])
    probs = np.array([0.2, 0.8, 0.4, 0.9])
    matrix = neighbour_matrix(patients, xs, ys, radius=1)
    smoothed = smooth(probs, matrix, weight=0.5)
    # 0: 0.5*0.2 + 0.5*0.8; 1: 0.5*0.8 + 0.5*mean(0.2, 0.4); 2: 0.5*0.4 + 0.5*0.8; 3: no neighbour, unchanged
    assert smoothed.tolist() == pytest.approx([0.5, 0.55, 0.6, 0.9])
    assert smooth(probs, matrix, weight=0.0).tolist() == pytest.approx(probs.tolist())


def test_tune_weight_picks_the_weight_with_the_best_validation_auprc():
    # a row of IDC with one patch the model misses, and a row of tissue with one false alarm
    patients = np.array(["a"] * 6)
    xs, ys = np.array([0, 50, 100, 0, 50, 100]), np.array([0, 0, 0, 500, 500, 500])
    targets = np.array([1, 1, 1, 0, 0, 0])
    probs = np.array([0.9, 0.1, 0.9, 0.1, 0.8, 0.1])
    matrix = neighbour_matrix(patients, xs, ys, radius=1)
    # at weight 0 the missed patch ranks below the false alarm; at 0.5 every IDC patch is 0.5, all others 0.45
    assert tune_weight(targets, probs, matrix, weights=(0.0, 0.5)) == 0.5
    assert tune_weight(targets, probs, matrix, weights=(0.0,)) == 0.0


def test_tune_weight_keeps_zero_without_both_classes_and_refuses_bad_weights():
    matrix = neighbour_matrix(np.array(["a", "a"]), np.array([0, 50]), np.array([0, 0]), radius=1)
    assert tune_weight(np.array([1, 1]), np.array([0.2, 0.9]), matrix) == 0.0
    with pytest.raises(ValueError, match="context weights"):
        tune_weight(np.array([0, 1]), np.array([0.2, 0.9]), matrix, weights=(0.0, 1.0))
    with pytest.raises(ValueError, match="radius"):
        neighbour_matrix(np.array(["a"]), np.array([0]), np.array([0]), radius=0)


def test_a_duplicate_patch_is_not_its_own_neighbour_so_a_slide_listed_twice_blends_the_same():
    patients, xs, ys, probs = np.array(["a", "a"]), np.array([0, 50]), np.array([0, 0]), np.array([0.9, 0.1])
    once = smooth(probs, neighbour_matrix(patients, xs, ys, radius=1), weight=0.5)
    twice = smooth(np.tile(probs, 2), neighbour_matrix(np.tile(patients, 2), np.tile(xs, 2), np.tile(ys, 2), 1), 0.5)
    assert once.tolist() == pytest.approx([0.5, 0.5]) and twice.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])


class ContextClassifier:
    """What predict_files uses of an IDCClassifier tuned with spatial context: the files score 0.8, 0.2, 0.6, 0.9."""

    device = torch.device("cpu")
    threshold, alone_threshold = 0.5, 0.7
    uses_context, context_weight, context_radius = True, 0.5, 1
    input_views = ()
    blend = IDCClassifier.blend

    def eval(self) -> "ContextClassifier":
        return self

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.8, 0.2, 0.6, 0.9][: len(batch)])


def test_predict_blends_named_files_with_their_neighbours_and_thresholds_the_rest_alone(tmp_path):
    names = ["p1_idx5_x1_y1_class0.png", "p1_idx5_x51_y1_class0.png", "p1_idx5_x101_y1_class0.png", "scan.png"]
    for name in names:  # collected sorted by name: x101, x1, x51, scan
        Image.new("RGB", (50, 50), "pink").save(tmp_path / name)
    by_name = {Path(p.file).name: p for p in predict_files(ContextClassifier(), tmp_path)}
    # the row x = 1, 51, 101 scores 0.2, 0.6, 0.8: 0.5 * own + 0.5 * mean of the touching ones
    assert [by_name[n].patch_probability for n in names[:3]] == pytest.approx([0.2, 0.6, 0.8])
    assert [by_name[n].probability for n in names[:3]] == pytest.approx([0.4, 0.55, 0.7])
    assert [by_name[n].label for n in names[:3]] == [0, 1, 1]  # at the context threshold 0.5
    assert by_name["scan.png"].probability == pytest.approx(0.9) and by_name["scan.png"].label == 1  # 0.9 >= 0.7
    write_csv(list(by_name.values()), tmp_path / "out.csv")
    header = (tmp_path / "out.csv").read_text().splitlines()[0]
    assert header == "file,patient,x,y,probability,label,error,patch_probability"


@pytest.mark.parametrize(("saved", "message"), [
    ({"context_weight": 1.0}, "context_weight must be a number in [0, 1)"),
    ({"context_weight": "0.5"}, "context_weight must be a number in [0, 1)"),
    ({"context_radius": 1.5}, "context_radius must be an integer from 1 to 5"),
    ({"context_radius": 10**6}, "context_radius must be an integer from 1 to 5"),
    ({"patch_threshold": -0.1}, "patch_threshold must be a number in [0, 1]"),
])
def test_saved_context_settings_must_be_the_plain_numbers_idclab_writes(saved, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        context_of(saved)
    assert context_of({"context_weight": 0.3, "context_radius": 2, "patch_threshold": 0.4}) == {
        "context_weight": 0.3, "context_radius": 2, "patch_threshold": 0.4}
    assert context_of({}) == {}


def test_a_context_model_scores_lone_patches_at_its_threshold_tuned_without_context():
    def classifier(**context):
        return IDCClassifier(torch.nn.Flatten(), torch.nn.BCEWithLogitsLoss(), config={}, mean=[0.0] * 3,
                             std=[1.0] * 3, class_counts=[1, 1], threshold=0.4, **context)

    with_context = classifier(context_weight=0.5, context_radius=1, patch_threshold=0.6)
    assert with_context.uses_context and with_context.alone_threshold == 0.6
    assert classifier().alone_threshold == 0.4 and not classifier().uses_context
    with pytest.raises(RuntimeError, match="set `positions`"):
        with_context.in_context(np.array([0.5]), np.array([0]))
    with_context.positions = (np.array(["a", "a", "b"]), np.array([0, 50, 0]), np.array([0, 0, 0]))
    assert with_context.in_context(np.array([0.2, 0.8]), np.array([0, 1])).tolist() == pytest.approx([0.5, 0.5])


class MeanLogit(torch.nn.Module):
    """A stand-in network whose logit is the mean normalised pixel: P(IDC) is set by a patch's grey level."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)) * 8 - 4


def served_model():
    """The served model around a stand-in network: context weight 0.5, thresholds 0.3 (context), 0.6 (alone)."""
    from idclab.tracking.pyfunc_model import IDCPyfuncModel

    served = IDCPyfuncModel()
    served.classifier = IDCClassifier(MeanLogit(), torch.nn.BCEWithLogitsLoss(), config={}, mean=[0.0] * 3,
                                      std=[1.0] * 3, class_counts=[1, 1], threshold=0.3, context_weight=0.5,
                                      context_radius=1, patch_threshold=0.6)
    return served


PATCHES = np.stack([np.full((50, 50, 3), level, np.uint8) for level in (30, 140, 250)])
ALONE = 1 / (1 + np.exp(-(np.array([30, 140, 250]) / 255 * 8 - 4)))  # 0.045, 0.597, 0.979


def test_the_served_model_blends_patches_sent_with_positions_and_scores_the_others_alone():
    served = served_model()
    unplaced = served.predict(None, PATCHES)
    assert list(unplaced.columns) == ["probability", "label", "patch_probability", "in_context"]
    assert unplaced["probability"].tolist() == pytest.approx(ALONE.tolist(), abs=1e-6)
    assert unplaced["label"].tolist() == [0, 0, 1]  # at 0.6, the threshold tuned alone (at 0.3: 0, 1, 1)
    assert not unplaced["in_context"].any()
    positions = {"patient": ["a", "a", "b"], "x": [0, 50, 0], "y": [0, 0, 0]}  # b's patch has no neighbour
    placed = served.predict(None, PATCHES, params=positions)
    blended = [0.5 * ALONE[0] + 0.5 * ALONE[1], 0.5 * ALONE[1] + 0.5 * ALONE[0], ALONE[2]]  # 0.321, 0.321, 0.979
    assert placed["probability"].tolist() == pytest.approx(blended, abs=1e-6)
    assert placed["label"].tolist() == [1, 1, 1]  # at 0.3, the context threshold (at 0.6: 0, 0, 1)
    assert placed["patch_probability"].tolist() == pytest.approx(ALONE.tolist(), abs=1e-6)
    assert placed["in_context"].all()
    as_arrays = {name: np.asarray(values) for name, values in positions.items()}  # a direct call with arrays
    assert served.predict(None, PATCHES, params=as_arrays)["probability"].tolist() == pytest.approx(blended)


@pytest.mark.parametrize(("params", "message"), [
    ({"patient": ["a"], "x": [0], "y": [0]}, "one value per patch each: 3 patches, 1, 1 and 1 values"),
    ({"patient": ["a", "a", "b"]}, "one value per patch each: 3 patches, 3, 0 and 0 values"),
    ({"patient": ["a", None, None], "x": [0, 50, 0], "y": [0, 0, 0]}, "patient must be non-empty strings"),
    ({"patient": ["a", "a", ""], "x": [0, 50, 0], "y": [0, 0, 0]}, "patient must be non-empty strings"),
    ({"patient": ["a", "a", "b"], "x": [0, None, 0], "y": [0, 0, 0]}, "x and y must be integers from 0 to"),
    ({"patient": ["a", "a", "b"], "x": [0, -50, 0], "y": [0, 0, 0]}, "x and y must be integers from 0 to"),
    ({"patient": ["a", "a", "b"], "x": [0, 50.5, 0], "y": [0, 0, 0]}, "x and y must be integers from 0 to"),
    ({"patient": ["a", "a", "b"], "x": [0, 50, 0], "y": [0, 2**62, 0]}, "x and y must be integers from 0 to"),
])
def test_the_served_model_refuses_positions_it_cannot_place(params, message):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=re.escape(f"params patient, x and y: {message}")):
        served_model().predict(None, PATCHES, params=params)


def test_the_served_models_signature_takes_optional_positions():
    from idclab.tracking.runs import served_signature, synthetic_example

    example = synthetic_example()
    signature = served_signature(example, pd.DataFrame({"probability": [0.1, 0.9], "label": [0, 1],
                                                        "patch_probability": [0.1, 0.9],
                                                        "in_context": [False, False]}))
    specs = {spec.name: spec for spec in signature.params}
    assert {name: spec.dtype.name for name, spec in specs.items()} == {"patient": "string", "x": "long",
                                                                      "y": "long"}
    assert all(spec.default == [] and spec.shape == (-1,) for spec in specs.values())  # absent: scored alone
