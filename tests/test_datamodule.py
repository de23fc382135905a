from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import SHARED_SAMPLE
from omegaconf import OmegaConf

from idclab.config import registry
from idclab.data.augment import basic
from idclab.data.datamodule import PatchDataModule, prepare_data
from idclab.data.layout import DataLayoutError
from idclab.data.neighbourhood import assemble, neighbour_rows
from idclab.data.sampling import oversample


def test_batches_match_the_cache_and_cover_each_split_once(make_cfg):
    cfg = make_cfg("data.batch_size=7")
    data = prepare_data(cfg.data, cfg.split)
    module = PatchDataModule(data, batch_size=7)
    for split, loader in (("val", module.val_dataloader()), ("test", module.test_dataloader())):
        images, labels, indices = (torch.cat(parts) for parts in zip(*loader, strict=True))
        rows = data.split.rows[split]
        assert images.dtype == torch.uint8 and images.shape == (len(rows), 3, 50, 50)
        assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(np.asarray(data.cache.images[rows])))
        assert labels.tolist() == data.index.labels[rows].astype(float).tolist()
        assert indices.dtype == torch.long and indices.tolist() == rows.tolist()  # each patch's row travels with it


def test_train_loader_shuffles_augments_and_works_with_workers(make_cfg):
    cfg = make_cfg()
    data = prepare_data(cfg.data, cfg.split)
    rows = data.split.rows["train"]
    for workers in (0, 2):
        module = PatchDataModule(data, batch_size=16, num_workers=workers, augmentation=basic())
        labels = torch.cat([y for _, y, _ in module.train_dataloader()])
        assert sorted(labels.tolist()) == sorted(data.index.labels[rows].astype(float).tolist())


def test_the_shuffle_order_depends_on_the_seed_not_on_the_global_random_state(make_cfg):
    """Under DDP each process builds its own batch list: drawn from the global torch RNG, which augmentation
    consumes unevenly across processes, the lists drift apart and some patches are seen twice per epoch."""
    cfg = make_cfg()
    data = prepare_data(cfg.data, cfg.split)

    def first_epoch_rows(seed: int, draws: int) -> list[int]:
        torch.manual_seed(0)
        torch.rand(draws)  # what one process's augmentation consumed and another's did not
        loader = PatchDataModule(data, batch_size=16, seed=seed).train_dataloader()
        return torch.cat([rows for _, _, rows in loader]).tolist()

    assert first_epoch_rows(1, 0) == first_epoch_rows(1, 7)
    assert first_epoch_rows(1, 0) != first_epoch_rows(2, 0)


def test_plain_shuffling_draws_a_new_order_each_epoch_and_the_same_one_on_resume():
    from idclab.data.sampling import Shuffle

    shuffle = Shuffle(50, seed=3)
    first = list(shuffle)
    shuffle.set_epoch(1)
    second = list(shuffle)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    resumed = Shuffle(50, seed=3)
    resumed.set_epoch(1)  # a run resumed at epoch 1
    assert list(resumed) == second


def test_resampler_is_told_the_epoch_through_the_batch_sampler(make_cfg):
    cfg = make_cfg()
    data = prepare_data(cfg.data, cfg.split)
    module = PatchDataModule(data, batch_size=16, sampler_factory=oversample)
    loader = module.train_dataloader()
    loader.sampler.set_epoch(3)
    assert loader.sampler.sampler.epoch == 3
    labels = torch.cat([y for _, y, _ in loader])
    assert labels.mean().item() == 0.5  # oversampled to balance


def test_under_ddp_the_resampler_is_told_the_epoch_too(make_cfg):
    """Lightning wraps the batch sampler in a DistributedSamplerWrapper under DDP. Until Lightning PR #21456 (merged
    after 2.6.0) the wrapper kept `set_epoch` to itself, so re-samplers repeated their first draw: hence the floor
    in pyproject.toml, and this test should an older Lightning be installed."""
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    cfg = make_cfg()
    data = prepare_data(cfg.data, cfg.split)
    batches = PatchDataModule(data, batch_size=16, sampler_factory=oversample).train_dataloader().sampler
    DistributedSamplerWrapper(batches, num_replicas=2, rank=0, shuffle=False).set_epoch(3)
    assert batches.sampler.epoch == 3


def test_every_sampler_option_builds(make_cfg):
    for option in ("none", "weighted", "oversample", "undersample"):
        cfg = make_cfg(f"sampler={option}")
        data = prepare_data(cfg.data, cfg.split)
        sampler = registry.factory("sampler", OmegaConf.to_container(cfg.sampler))
        module = PatchDataModule(data, batch_size=16, sampler_factory=sampler)
        assert sum(len(y) for _, y, _ in module.train_dataloader()) > 0


def test_external_split_reads_a_second_root(make_cfg, data_dir):
    from idclab.data.synthetic import SyntheticSpec, generate

    other = generate(data_dir / "site2", SyntheticSpec(n_patients=3, min_grid=4, max_grid=4, seed=9))
    cfg = make_cfg("split=external", f"split.root={other}")
    data = prepare_data(cfg.data, cfg.split)
    test_paths = {data.index.paths[i] for i in data.split.rows["test"]}
    assert all("site2" in p for p in test_paths) and len(data.split.patients["test"]) == 3
    assert not any("site2" in data.index.paths[i] for i in data.split.rows["train"])
    assert all((data.index.root / p).is_file() for p in test_paths)


def test_a_neighbourhood_adds_the_coarse_view_of_each_patch_slide_around_it(make_cfg):
    cfg = make_cfg("data.batch_size=16")
    data = prepare_data(cfg.data, cfg.split)
    module = PatchDataModule(data, batch_size=16, neighbourhood=1)
    images, _, rows = next(iter(module.val_dataloader()))
    assert images.shape == (len(rows), 6, 50, 50)
    cached = np.asarray(data.cache.images)
    assert torch.equal(images[:, :3].permute(0, 2, 3, 1), torch.from_numpy(cached[rows.numpy()]))
    index = data.index
    cells = neighbour_rows(index.patients, index.xs, index.ys, 1, data.cache.usable)
    expected = assemble(cached, cells[rows.numpy()])[..., 3:]
    assert torch.equal(images[:, 3:].permute(0, 2, 3, 1), torch.from_numpy(expected))
    assert (cells[rows.numpy()] >= 0).sum(1).max() > 1  # synthetic slides are whole: some patches have neighbours
    assert not torch.equal(images[:, 3:], images[:, :3])
    train_images, _, _ = next(iter(PatchDataModule(data, 16, augmentation=basic(), neighbourhood=1)
                                   .train_dataloader()))
    assert train_images.shape[1] == 6  # augmentation moves both views together (RandomDihedral: any channels)


def test_several_views_are_served_smallest_first_after_the_patch(make_cfg):
    cfg = make_cfg("data.batch_size=16")
    data = prepare_data(cfg.data, cfg.split)
    images, _, rows = next(iter(PatchDataModule(data, 16, neighbourhood=[2, 1]).val_dataloader()))
    assert images.shape == (len(rows), 9, 50, 50)
    index, cached = data.index, np.asarray(data.cache.images)
    cells = neighbour_rows(index.patients, index.xs, index.ys, 2, data.cache.usable)
    expected = assemble(cached, cells[rows.numpy()], views=(1, 2))
    assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(expected))


def test_the_neighbourhood_views_are_built_once_per_cache_and_shared_by_every_fold(make_cfg):
    """Assembling (2r+1)^2 patches per item every epoch cost 8-21x the patch alone (bench/loader_throughput.py):
    the views are built once, per rings, and every data module over the same cache (folds, members) reuses them."""
    cfg = make_cfg()
    data = prepare_data(cfg.data, cfg.split)
    first = PatchDataModule(data, 16, neighbourhood=2)
    fold = PatchDataModule(replace(data, split=data.split), 16, neighbourhood=2)
    assert first.views[0] is fold.views[0] and len(first.views) == 1
    assert first.views[0].shape == (len(data.index), 50, 50, 3)
    assert PatchDataModule(data, 16, neighbourhood=1).views[0] is not first.views[0]
    assert PatchDataModule(data, 16, neighbourhood=[1, 2]).views[1] is first.views[0]  # each ring count's view once
    assert PatchDataModule(data, 16).views == ()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="real IDC sample (../shared/data/idc-sample) not present")
def test_janowczyk_split_on_the_real_sample_reports_the_missing_test_patients(make_cfg):
    cfg = make_cfg("data=idc", f"data.root={SHARED_SAMPLE}", "split=janowczyk", tiny=False)
    # the sample holds only patients of the published train and val lists
    with pytest.raises(DataLayoutError, match="the test split is empty"):
        prepare_data(cfg.data, cfg.split)
    cfg = make_cfg("data=idc", f"data.root={SHARED_SAMPLE}", tiny=False)
    data = prepare_data(cfg.data, cfg.split)
    assert len(data.index) == 12900 and data.cache.counts()["padded"] > 0


def test_a_config_saved_before_the_neighbourhood_option_trains_without_it(make_cfg):
    """A run resumed from an older saved config has no data.neighbourhood: it means none, not a crash."""
    from omegaconf import open_dict

    from idclab.training.fit import make_model_and_data
    from idclab.training.plan import fit_plan

    cfg = make_cfg()
    with open_dict(cfg):
        del cfg.data["neighbourhood"]
    data = prepare_data(cfg.data, cfg.split)
    datamodule, classifier = make_model_and_data(fit_plan(OmegaConf.to_container(cfg, resolve=True)), data)
    assert datamodule.neighbourhood == () and classifier.input_views == ()
