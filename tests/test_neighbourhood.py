"""Neighbourhood input: which rows surround a patch, and the 6-channel (or, with several views, wider) patches built
from them."""

from pathlib import Path

import numpy as np
import pytest
import torch

from idclab.data.neighbourhood import (
    alone,
    assemble,
    check_rings,
    coarse_views,
    in_chunks,
    input_channels,
    mosaic_blocks,
    neighbour_rows,
    views_of,
)


def test_neighbour_rows_finds_the_patches_around_each_one_on_its_own_slide():
    # patient a: a 2 x 2 block at (1,1) (51,1) (1,51) (51,51); patient b: one patch at (51,1), not a's neighbour
    patients = np.array(["a", "a", "a", "a", "b"])
    xs = np.array([1, 51, 1, 51, 51])
    ys = np.array([1, 1, 51, 51, 1])
    cells = neighbour_rows(patients, xs, ys, rings=1)
    assert cells.shape == (5, 9)
    # row-major over dy, dx in -1..1: the centre (index 4) is the patch itself
    assert cells[0].tolist() == [-1, -1, -1, -1, 0, 1, -1, 2, 3]
    assert cells[3].tolist() == [0, 1, -1, 2, 3, -1, -1, -1, -1]
    assert cells[4].tolist() == [-1, -1, -1, -1, 4, -1, -1, -1, -1]


def test_unusable_rows_are_missing_neighbours_and_a_duplicate_position_resolves_to_its_first_row():
    patients = np.array(["a", "a", "a", "a"])
    xs, ys = np.array([1, 51, 51, 101]), np.array([1, 1, 1, 1])
    cells = neighbour_rows(patients, xs, ys, rings=1, usable=np.array([True, True, True, False]))
    assert cells[0, 5] == 1  # (51, 1) is listed twice: rows 1 and 2
    assert cells[2, 5] == -1  # (101, 1) did not decode
    assert cells[2, 4] == 2  # a patch's centre is always itself


def test_no_usable_row_leaves_every_patch_alone():
    cells = neighbour_rows(np.array(["a", "a"]), np.array([1, 51]), np.array([1, 1]), rings=1,
                           usable=np.array([False, False]))
    assert cells.tolist() == [[-1, -1, -1, -1, 0, -1, -1, -1, -1], [-1, -1, -1, -1, 1, -1, -1, -1, -1]]


def test_rings_2_look_two_patches_away_across_and_down():
    cells = neighbour_rows(np.array(["a", "a", "a"]), np.array([1, 101, 1]), np.array([1, 1, 101]), rings=2)
    assert cells.shape == (3, 25)  # row-major over dy, dx in -2..2: index 5 * (dy + 2) + (dx + 2)
    assert cells[0, 12] == 0 and cells[0, 14] == 1 and cells[1, 10] == 0  # (dy 0, dx +2) and (dy 0, dx -2)
    assert cells[0, 22] == 2 and cells[2, 2] == 0  # (dy +2, dx 0): y grows down the slide, and back


def test_rings_3_give_the_7x7_patches_around_each_one_averaged_over_7x7_pixel_blocks():
    images = np.stack([np.full((50, 50, 3), value, dtype=np.uint8) for value in (70, 7)])
    cells = neighbour_rows(np.array(["a", "a"]), np.array([1, 151]), np.array([1, 151]), rings=3)
    assert cells.shape == (2, 49) and cells[0, 48] == 1 and cells[1, 0] == 0  # (dy +3, dx +3) and back
    coarse = assemble(images, cells)[0, :, :, 3]
    # the 350 px mosaic in 7 x 7 blocks: each tile 50/7 px wide; the last tile (rows and columns 43-49) is row 1's,
    # the rest patch 0's own fill, and the blocks that straddle a border blend the two
    assert coarse[:42, :42].tolist() == np.full((42, 42), 70).tolist()
    assert coarse[43:, 43:].tolist() == np.full((7, 7), 7).tolist()
    assert 7 < coarse[42, 42] < 70


@pytest.mark.parametrize("bad", [-1, 4, 1.0, True, "1", [0, 1], [1, 1], [2, 4], [1, "2"], (True,), {"a": 1}])
def test_rings_out_of_range_are_refused_naming_the_setting(bad):
    with pytest.raises(ValueError, match="data.neighbourhood"):
        check_rings(bad)


def test_rings_read_as_the_views_a_patch_is_shown_with_smallest_first():
    assert check_rings(0) == check_rings([]) == () and check_rings(2) == (2,)
    assert check_rings([2, 1]) == (1, 2) and check_rings((1, 3)) == (1, 3)


def test_input_channels_add_one_view_per_ring_count():
    assert input_channels(()) == 3 and input_channels((1,)) == 6 and input_channels((3,)) == 6
    assert input_channels((1, 2)) == 9 and input_channels((1, 2, 3)) == 12


def test_mosaic_blocks_are_rounded_means():
    mosaic = np.array([[1, 2, 10, 10], [3, 4, 10, 11], [0, 0, 255, 255], [0, 1, 255, 255]], dtype=np.uint8)
    coarse = mosaic_blocks(mosaic.reshape(1, 4, 4, 1), 2)
    assert coarse[0, :, :, 0].tolist() == [[3, 10], [0, 255]]  # 2.5 -> 3, 10.25 -> 10, 0.25 -> 0


def test_assemble_keeps_the_patch_and_adds_its_tiled_neighbourhood_averaged_down():
    images = np.stack([np.full((50, 50, 3), value, dtype=np.uint8) for value in (30, 90, 150)])
    images[0, :, :, 1] = 0  # the centre patch's green channel differs, to tell it from the fill
    # patch 0 has row 1 on its right (dx +1) and row 2 above-left (dy -1, dx -1); the rest are missing
    cells = np.array([[2, -1, -1, -1, 0, 1, -1, -1, -1]])
    out = assemble(images, cells)
    assert out.shape == (1, 50, 50, 6) and out.dtype == np.uint8
    assert np.array_equal(out[0, :, :, :3], images[0])
    coarse = out[0, :, :, 3]
    # the 150 px mosaic is averaged over 3 x 3 blocks: the top-left third of the view is tile (dy -1, dx -1)
    assert coarse[:16, :16].tolist() == np.full((16, 16), 150).tolist()
    assert coarse[17:33, 34:].tolist() == np.full((16, 16), 90).tolist()  # tile (0, +1): row 1
    assert coarse[34:, 34:].tolist() == np.full((16, 16), 30).tolist()  # missing: filled with the centre patch
    assert (out[0, 17:33, 17:33, 4] == 0).all()  # the centre tile keeps the patch's own colours


def test_several_views_stack_each_ring_count_s_view_smallest_first_from_the_widest_cells():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (9, 50, 50, 3), dtype=np.uint8)
    patients, xs, ys = np.array(["a"] * 9), np.tile([1, 51, 101], 3), np.repeat([1, 51, 101], 3)
    wide, narrow = neighbour_rows(patients, xs, ys, rings=2), neighbour_rows(patients, xs, ys, rings=1)
    both = assemble(images, wide, views=(1, 2))
    assert both.shape == (9, 50, 50, 9)
    assert np.array_equal(both[..., :6], assemble(images, narrow))  # the patch, then its 3x3 view
    assert np.array_equal(both[..., 6:], assemble(images, wide)[..., 3:])  # then its 5x5 view
    with pytest.raises(ValueError, match="cells"):
        assemble(images, narrow, views=(1, 2))  # a 5x5 view needs 5x5 cells


def test_coarse_views_are_the_assembled_views_of_every_row_in_any_chunks():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 50, 50, 3), dtype=np.uint8)
    cells = neighbour_rows(np.array(["a"] * 4), np.array([1, 51, 1, 51]), np.array([1, 1, 51, 51]), rings=1)
    views = coarse_views(images, cells, size=3)
    assert views.shape == (4, 50, 50, 3) and views.dtype == np.uint8
    assert np.array_equal(views, assemble(images, cells)[..., 3:])


def test_in_chunks_finds_neighbours_among_the_patches_given_or_shows_each_patch_alone():
    images = np.stack([np.full((50, 50, 3), value, dtype=np.uint8) for value in (0, 240, 120)])
    positions = (np.array(["a", "a", "b"]), np.array([1, 51, 1]), np.array([1, 1, 1]))
    placed = np.concatenate(list(in_chunks(images, (1,), positions)))
    lonely = np.concatenate(list(in_chunks(images, (1,))))
    assert placed.shape == lonely.shape == (3, 50, 50, 6)
    assert placed[0, 20, 45, 3] == 240 and lonely[0, 20, 45, 3] == 0  # patch 0's right-hand neighbour is patch 1
    assert np.array_equal(lonely[..., 3:], images)  # alone, the coarse view of a uniform patch is the patch
    one_by_one = np.concatenate(list(in_chunks(images, (1,), positions, size=1)))
    assert np.array_equal(one_by_one, placed)  # chunks change the memory, not the views
    assert [len(c) for c in in_chunks(images, (), size=2)] == [2, 1] and alone(2, 1)[:, 4].tolist() == [0, 1]
    both = np.concatenate(list(in_chunks(images, (1, 2), positions)))
    assert both.shape == (3, 50, 50, 9) and np.array_equal(both[..., :6], placed)


def test_views_of_reads_the_saved_config_and_refuses_a_data_that_is_not_a_mapping():
    assert views_of({"data": {"neighbourhood": 2}}) == (2,) and views_of({"data": {"neighbourhood": [2, 1]}}) == (1, 2)
    assert views_of({"data": {"root": "x"}}) == () and views_of({}) == ()  # saved before the option existed
    with pytest.raises(ValueError, match="data must be a mapping"):
        views_of({"data": "os.system"})


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "views"), [("1", (1,)), ("[1,2]", (1, 2))])
def test_a_neighbourhood_model_scores_alike_at_test_evaluate_predict_and_serve(make_cfg, tmp_path, setting,
                                                                              views):
    """The view is built from the cache's index at test and evaluate, from the files' names at predict and from the
    request's positions when served: the same patches get the same P(IDC) every way."""
    import csv
    import shutil

    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from idclab.config.build import load_classifier
    from idclab.data.datamodule import PatchDataModule, prepare_data, resolve_root
    from idclab.data.decode import decode_patch
    from idclab.evaluation.evaluate import evaluate
    from idclab.evaluation.prediction import predict_files
    from idclab.training.pipeline import train

    cfg = make_cfg(f"data.neighbourhood={setting}", "logger.log_model=true", "trainer.limit_test_batches=1.0")
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.data.params["data.neighbourhood"] == setting.replace(",", ", ")
    checkpoint = run.data.tags["best_checkpoint"]
    classifier = load_classifier(checkpoint)
    assert classifier.input_views == views
    evaluated = evaluate(make_cfg(f"ckpt_path={checkpoint}", config_name="evaluate"))
    assert evaluated["test_auroc"] == pytest.approx(run.data.metrics["test_auroc"], abs=1e-6)

    folder = tmp_path / "slides"  # every test patient's whole slide, so each patch has its neighbours at hand
    root = resolve_root(cfg.data)  # this run's data set (other tests' synthetic sets share patient names)
    for patient in classifier.hparams["split_patients"]["test"]:
        shutil.copytree(root / patient, folder / patient)
    evaluate(make_cfg(f"ckpt_path={checkpoint}", f"predict={folder}", config_name="evaluate"))
    with open(tmp_path / "out" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    data = prepare_data(cfg.data, cfg.split)  # the patches as test and evaluate serve them, from the cache
    test_rows = data.split.rows["test"]
    views = PatchDataModule(data, 16, neighbourhood=views).dataset("test")[list(range(len(test_rows)))][0]
    with torch.no_grad():
        from_cache = dict(zip((data.index.paths[r] for r in test_rows), classifier.probabilities(views).numpy(),
                              strict=True))
    predicted = {str(Path(r["file"]).relative_to(folder)): float(r["probability"]) for r in rows}
    assert predicted.keys() == from_cache.keys()
    assert [predicted[k] for k in from_cache] == pytest.approx(list(from_cache.values()), abs=1e-5)

    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    served = mlflow.pyfunc.load_model(run.data.tags["model_uri"])
    first = [r for r in rows if r["patient"] == rows[0]["patient"]]  # one slide, sent whole with its positions
    patches = np.stack([decode_patch(r["file"])[0] for r in first])  # padded to 50x50 as in the cache
    positions = {"patient": [r["patient"] for r in first], "x": [int(r["x"]) for r in first],
                 "y": [int(r["y"]) for r in first]}
    placed = served.predict(patches, params=positions)
    assert placed["probability"].to_numpy() == pytest.approx([float(r["probability"]) for r in first], abs=1e-5)
    assert placed["in_context"].all()
    lonely = served.predict(patches)
    assert not lonely["in_context"].any()
    # without positions each patch is shown alone: the view matters
    assert not np.allclose(placed["probability"], lonely["probability"], atol=1e-3)
    small_batches = predict_files(classifier, folder, batch_size=3)  # batches cut across slides change nothing
    assert [p.probability for p in small_batches] == pytest.approx([float(r["probability"]) for r in rows], abs=1e-5)
