"""Training recipes: logit-adjusted loss, deferred re-weighting/re-sampling, learning-rate schedules, weight
averaging (EMA, SWA), early stopping and IDCNet capacity; hand-computed cases, then tiny real fits."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping
from torch import nn

from idclab.classifier.averaging import EMA, SWA, TRAINING_WEIGHTS
from idclab.classifier.module import NonFiniteLossError
from idclab.classifier.schedules import lr_factor, make_scheduler, scheduled
from idclab.config import registry
from idclab.config.build import build_classifier
from idclab.config.validation import ConfigError, validate_train_config
from idclab.data.sampling import DeferredSampler, deferred, no_sampler, oversample, undersample
from idclab.models.idcnet import IDCNet, Residual
from idclab.models.losses import bce, class_balanced, focal, logit_adjusted, ranking, truncated, weighted_bce
from idclab.training.callbacks import DeferredReweighting, training_callbacks
from idclab.training.plan import FitPlan, fit_plan

LOGITS = torch.tensor([2.0, -1.0])
TARGETS = torch.tensor([1.0, 0.0])


def test_logit_adjusted_loss_matches_the_hand_computed_value():
    # counts 300 negatives / 100 positives: shift = log(100/300) = -1.0986; logits 0.9014 (positive) and
    # -2.0986 (negative): BCE = log(1 + e^-0.9014) = 0.34075 and log(1 + e^-2.0986) = 0.11568, mean 0.22821
    assert logit_adjusted([300, 100])(LOGITS, TARGETS).item() == pytest.approx(0.228212, abs=1e-5)
    assert logit_adjusted([300, 100], tau=0.0)(LOGITS, TARGETS) == pytest.approx(bce([300, 100])(LOGITS, TARGETS))
    with pytest.raises(ValueError, match="a class has no training patch"):
        logit_adjusted([10, 0])
    assert "shift" not in logit_adjusted([3, 1]).state_dict()  # training only: nothing in the checkpoint


def test_ranking_loss_adds_the_pairwise_logistic_loss_of_every_idc_non_idc_pair():
    # BCE of (2, positive) and (-1, negative): (log(1 + e^-2) + log(1 + e^-1)) / 2; the one pair: log(1 + e^-3)
    expected_bce = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2
    assert ranking([1, 1])(LOGITS, TARGETS).item() == pytest.approx(expected_bce + math.log1p(math.exp(-3)))
    assert ranking([1, 1], weight=0.5)(LOGITS, TARGETS).item() == pytest.approx(
        expected_bce + 0.5 * math.log1p(math.exp(-3)))
    logits, targets = torch.tensor([1.0, 2.0, 3.0, 0.0, 4.0]), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    pairs = [math.log1p(math.exp(n - p)) for p in (1.0, 2.0, 3.0) for n in (0.0, 4.0)]  # 6 pairs, mean
    assert ranking([2, 3], weight=1.0)(logits, targets).item() == pytest.approx(
        bce([2, 3])(logits, targets).item() + sum(pairs) / 6, rel=1e-6)
    one_class = (torch.tensor([0.5, -0.5]), torch.tensor([1.0, 1.0]))  # no pair: BCE alone
    assert ranking([0, 2])(*one_class).item() == pytest.approx(bce([0, 2])(*one_class).item())
    with pytest.raises(ValueError, match="loss.weight must be >= 0"):
        ranking([1, 1], weight=-1.0)


def test_ranking_loss_over_many_pairs_is_computed_in_blocks_with_the_same_value():
    torch.manual_seed(0)
    logits, targets = torch.randn(3000), (torch.rand(3000) < 0.3).float()
    positives, negatives = logits[targets == 1], logits[targets == 0]
    direct = nn.functional.softplus(negatives[None, :] - positives[:, None]).mean()
    loss = ranking([1, 1], weight=1.0)
    loss.max_elements = 100 * 3000  # blocks of 100 rows
    assert loss(logits, targets).item() == pytest.approx(bce([1, 1])(logits, targets).item() + direct.item(), rel=1e-5)


def test_truncated_loss_leaves_out_each_class_s_highest_losses():
    # per-patch BCE: positives at logits 3, 1, -2 -> 0.0486, 0.3133, 2.1269; negatives at -3, 2 -> 0.0486, 2.1269
    logits, targets = torch.tensor([3.0, 1.0, -2.0, -3.0, 2.0]), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    per_patch = [math.log1p(math.exp(-3)), math.log1p(math.exp(-1)), math.log1p(math.exp(2)),
                 math.log1p(math.exp(-3)), math.log1p(math.exp(2))]
    # drop 0.5: floor(1.5) = 1 positive (logit -2) and floor(1) = 1 negative (logit 2) left out
    kept = [per_patch[0], per_patch[1], per_patch[3]]
    assert truncated([2, 3], drop=0.5)(logits, targets).item() == pytest.approx(sum(kept) / 3, rel=1e-6)
    assert truncated([2, 3], drop=0.0)(logits, targets).item() == pytest.approx(bce([2, 3])(logits, targets).item())
    # drop 0.4: floor(1.2) = 1 positive, floor(0.8) = 0 negatives
    kept = [per_patch[0], per_patch[1], per_patch[3], per_patch[4]]
    assert truncated([2, 3], drop=0.4)(logits, targets).item() == pytest.approx(sum(kept) / 4, rel=1e-6)
    with pytest.raises(ValueError, match=r"loss.drop must be in \[0, 1\)"):
        truncated([1, 1], drop=1.0)


def test_class_weights_switch_off_to_uniform_and_back():
    miss = (torch.tensor([-2.0]), torch.tensor([1.0]))
    plain = math.log1p(math.exp(2.0))  # BCE of a positive at logit -2: 2.1269
    loss = weighted_bce([300, 100])
    assert loss(*miss).item() == pytest.approx(3 * plain, rel=1e-5)  # pos_weight 300/100
    loss.set_class_weighting(False)
    assert loss(*miss).item() == pytest.approx(plain, rel=1e-5)
    loss.set_class_weighting(True)
    assert loss(*miss).item() == pytest.approx(3 * plain, rel=1e-5)
    balanced = class_balanced([300, 100], beta=0.99)
    balanced.set_class_weighting(False)
    assert balanced(*miss).item() == pytest.approx(plain, rel=1e-5)
    focused = focal([1, 1], alpha=0.75, gamma=0.0)
    assert focused(*miss).item() == pytest.approx(0.75 * plain, rel=1e-5)
    focused.set_class_weighting(False)
    assert focused(*miss).item() == pytest.approx(plain, rel=1e-5)


def test_drw_callback_turns_the_weights_on_at_the_start_epoch():
    criterion = weighted_bce([300, 100])
    callback = DeferredReweighting(start_epoch=2)
    seen = []
    for epoch in range(4):
        callback.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), SimpleNamespace(criterion=criterion))
        seen.append(criterion.class_weighting)
    assert seen == [False, False, True, True]
    callback.on_train_epoch_start(SimpleNamespace(current_epoch=0), SimpleNamespace(criterion=bce([3, 1])))


LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1])


def test_deferred_sampler_shuffles_plainly_then_balances_with_a_fixed_epoch_length():
    under = deferred(undersample, start_epoch=1)(LABELS, 0)
    assert isinstance(under, DeferredSampler) and len(under) == 4  # 2 positives + 2 negatives
    under.set_epoch(0)
    before = list(under)
    assert len(before) == 4 and len(set(before)) == 4  # a uniform draw without replacement
    under.set_epoch(1)
    reference = undersample(LABELS, 0)
    reference.set_epoch(1)
    assert list(under) == list(reference)  # from the start epoch: the balancing sampler's own draw
    assert LABELS[list(under)].sum() == 2
    over = deferred(oversample, start_epoch=1)(LABELS, 0)
    assert len(over) == 12  # 6 + 6
    over.set_epoch(0)
    rows = list(over)
    assert len(rows) == 12 and sorted(rows[:8]) == list(range(8))  # every patch once, then 4 more
    assert deferred(undersample, None) is undersample
    assert deferred(no_sampler, 1)(LABELS, 0) is None  # nothing to defer: the loader shuffles


def test_lr_factor_hand_values():
    # 3 warm-up steps of 6: 1/3, 2/3, 1, then cosine over the last 3 steps: 1, 0.75, 0.25, (0 at the end)
    cosine = [lr_factor(step, "cosine", 3, 6) for step in range(7)]
    assert cosine == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 0.75, 0.25, 0.0])
    assert [lr_factor(step, "none", 2, 6) for step in range(4)] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert not scheduled({"schedule": "none", "warmup_epochs": 0}) and scheduled({"warmup_epochs": 1})
    assert isinstance(make_scheduler(optimizer, {"schedule": "onecycle"}, 2, 6), torch.optim.lr_scheduler.OneCycleLR)


def test_ema_averages_swaps_in_for_validation_and_saves_the_average():
    module = SimpleNamespace(model=nn.Linear(1, 1, bias=False))
    weight = module.model.weight
    with torch.no_grad():
        weight.fill_(0.0)
    ema = EMA(decay=0.5)
    ema.on_fit_start(None, module)
    for value in (1.0, 2.0):
        with torch.no_grad():
            weight.fill_(value)
        ema.on_train_batch_end(None, module, None, None, 0)
    # update 0: decay min(0.5, 1/10) = 0.1 -> 0.1 * 0 + 0.9 * 1 = 0.9
    # update 1: decay min(0.5, 2/11) = 2/11 -> 2/11 * 0.9 + 9/11 * 2 = 1.8
    assert ema.average["weight"].item() == pytest.approx(1.8)
    ema.on_validation_start(None, module)
    assert weight.item() == pytest.approx(1.8)
    ema.on_validation_end(None, module)
    assert weight.item() == 2.0
    checkpoint = {"state_dict": {"model.weight": weight.detach().clone()}}
    ema.on_save_checkpoint(None, module, checkpoint)
    assert checkpoint["state_dict"]["model.weight"].item() == pytest.approx(1.8)
    assert checkpoint[TRAINING_WEIGHTS]["weight"].item() == 2.0
    resumed, fresh = EMA(decay=0.5), SimpleNamespace(model=nn.Linear(1, 1, bias=False))
    fresh.model.load_state_dict({"weight": checkpoint["state_dict"]["model.weight"]})  # as Lightning restores
    resumed.on_load_checkpoint(None, fresh, checkpoint)
    resumed.on_fit_start(None, fresh)
    assert fresh.model.weight.item() == 2.0 and resumed.average["weight"].item() == pytest.approx(1.8)


def test_idcnet_widths_depth_and_residual_change_the_model():
    def parameters(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    def convs(model: nn.Module) -> int:
        return sum(isinstance(m, nn.Conv2d) for m in model.modules())

    small = IDCNet(widths=(8, 16), depth=1)
    deep = IDCNet(widths=(8, 16), depth=3)
    wide = IDCNet(widths=(16, 32, 64), depth=1)
    assert (convs(small), convs(deep), convs(wide)) == (2, 6, 3)
    # 3x3 convs without bias + batch norm (2 per channel) + linear head
    assert parameters(small) == 27 * 8 + 16 + 72 * 16 + 32 + 17
    assert parameters(deep) == parameters(small) + 2 * (64 * 9 + 16) + 2 * (256 * 9 + 32)
    assert wide.head[-1].in_features == 64
    plain = registry.build("model", {"name": "idcnet", "widths": [8, 16], "depth": 2, "residual": False})
    residual = registry.build("model", {"name": "idcnet", "widths": [8, 16], "depth": 2, "residual": True})
    assert sum(isinstance(m, Residual) for m in residual.modules()) == 2
    assert parameters(plain) == parameters(residual)  # identity shortcuts add no parameter
    plain.load_state_dict(dict(zip(plain.state_dict(), residual.state_dict().values(), strict=True)))
    x = torch.randn(4, 3, 50, 50)
    assert not torch.allclose(plain.eval()(x), residual.eval()(x))


@pytest.mark.parametrize("name", ["idcnet", "cnn", "ann", "janowczyk", "resnet18"])
def test_logits_stay_float32_under_bf16_autocast(name):
    """bf16 logits keep about 3 significant digits: thresholds tuned on their probabilities would tie patches."""
    torch.manual_seed(0)
    model = registry.build("model", {"name": name}).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(64, 3, 50, 50))
    assert logits.dtype == torch.float32
    assert not torch.equal(logits, logits.bfloat16().float())  # finer than bf16's steps


@pytest.mark.parametrize(("device", "channels_last"), [("cuda", True), ("cpu", False)])
def test_weights_go_channels_last_at_setup_on_cuda_only(device, channels_last):
    """At `setup`, before the strategy wraps the model in DDP (whose gradient buckets keep the strides they saw)."""
    config = {"model": {"name": "idcnet"}, "loss": {"name": "bce"}, "optim": {"lr": 1e-3, "weight_decay": 0.0}}
    classifier = build_classifier(config, [30, 10], [0.5] * 3, [0.2] * 3)
    classifier._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    classifier.setup("fit")
    weight = classifier.model.features[0][0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_a_non_finite_loss_is_caught_at_once_on_the_cpu_and_by_the_next_check_on_a_device():
    config = {"model": {"name": "idcnet"}, "loss": {"name": "bce"}, "optim": {"lr": 1e-3, "weight_decay": 0.0}}
    classifier = build_classifier(config, [30, 10], [0.5] * 3, [0.2] * 3)
    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 0"):
        classifier.check_loss(torch.tensor(float("nan")))

    class DeviceLoss(torch.Tensor):  # a CPU tensor that says it lives on an accelerator (no GPU here)
        @property
        def device(self) -> torch.device:
            return torch.device("meta")

    classifier._trainer = SimpleNamespace(global_step=0, current_epoch=0)
    classifier.finite_check_steps = 3
    classifier.check_loss(torch.tensor(float("inf")).as_subclass(DeviceLoss))  # step 0: not read yet
    classifier._trainer.global_step = 1
    classifier.check_loss(torch.tensor(1.0).as_subclass(DeviceLoss))
    classifier._trainer.global_step = 2
    with pytest.raises(NonFiniteLossError, match="NaN or infinite by epoch 0, step 2"):
        classifier.check_loss(torch.tensor(1.0).as_subclass(DeviceLoss))  # the third step's check reads them all
    for hook in (classifier.on_validation_start, classifier.raise_if_not_finite):
        classifier._all_finite = torch.tensor(False)  # a bad loss since the last check: found before validation
        with pytest.raises(NonFiniteLossError):  # (and checkpointing) and at the epoch's end
            hook()


def plan_of(cfg: DictConfig) -> FitPlan:
    return fit_plan(OmegaConf.to_container(cfg, resolve=True))


def test_training_callbacks_follow_the_config(make_cfg):
    assert training_callbacks(plan_of(make_cfg())) == []
    older = {"optim": {"lr": 1e-3}, "checkpoint": {"monitor": "val_auprc", "mode": "max"}}
    assert training_callbacks(replace(plan_of(make_cfg()), config=older)) == []  # saved before these keys existed
    callbacks = training_callbacks(plan_of(make_cfg("averaging=ema", "early_stopping.patience=3",
                                                    "drw.start_epoch=2")))
    ema, stopping, drw = callbacks
    assert isinstance(ema, EMA) and ema.decay == 0.999
    assert (stopping.monitor, stopping.mode, stopping.patience) == ("val_auprc", "max", 3)
    assert isinstance(drw, DeferredReweighting) and drw.start_epoch == 2
    (swa,) = training_callbacks(plan_of(make_cfg("averaging=swa", "optim.lr=0.01")))
    assert isinstance(swa, SWA) and swa._swa_lrs == 0.01  # null swa_lr: optim.lr


@pytest.mark.parametrize(("overrides", "message"), [
    ("optim.schedule=linear", "optim.schedule must be one of none, cosine, onecycle"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs must be a number >= 0"),
    ("optim.schedule=cosine trainer.max_epochs=-1", "optim.schedule=cosine needs trainer.max_epochs >= 1"),
    ("optim.schedule=onecycle optim.warmup_epochs=2", "optim.warmup_epochs (2) must be < trainer.max_epochs (2)"),
    ("optim.warmup_epochs=2", "optim.warmup_epochs (2) must be < trainer.max_epochs (2)"),
    ("optim.warmup_epochs=1 trainer.max_epochs=-1", "optim.warmup_epochs=1 needs trainer.max_epochs >= 1"),
    ("drw.start_epoch=-1", "drw.start_epoch must be null or an integer >= 0"),
    ("early_stopping.patience=0", "early_stopping.patience must be null or an integer >= 1"),
    ("mixup.alpha=-0.2", "mixup.alpha must be a number >= 0"),
    ("loss=logit_adjusted loss.tau=-1", "loss.tau must be a number >= 0"),
    ("loss=ranking loss.weight=-1", "loss.weight must be a number >= 0"),
    ("loss=truncated loss.drop=1", "loss.drop must be a number in [0, 1)"),
    ("model.depth=0", "model.depth must be an integer >= 1"),
    ("model.widths=[]", "model.widths must be a non-empty list of integers >= 1"),
    ("stain=macenko stain.sample=0", "stain.sample must be an integer >= 1"),
    ("stain=macenko stain.alpha=60", "stain.alpha must be a percentile in [0, 50)"),
    ("averaging=ema averaging.decay=1", "averaging.decay must be a number in (0, 1)"),
    ("averaging=swa averaging.epoch_start=0", "averaging.epoch_start must be a fraction in (0, 1]"),
    ("averaging=swa early_stopping.patience=2", "averaging=swa averages the last epochs"),
    ("stain.name=vahadane", "stain.name='vahadane' is not an option"),
])
def test_impossible_recipe_values_are_named(make_cfg, overrides, message):
    with pytest.raises((ConfigError, registry.OptionError), match=re.escape(message)):
        validate_train_config(make_cfg(*overrides.split()))


class Recorder(pl.Callback):
    """Per training batch: the learning rate and whether the loss weights the classes."""

    def __init__(self):
        self.lrs: list[float] = []
        self.weighting: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.weighting.append(getattr(pl_module.criterion, "class_weighting", None))


def fit(make_cfg, *overrides: str, ckpt_path: str | None = None):
    """A tiny fit through the training code (no MLflow): (trainer, classifier, best-checkpoint callback, recorder)."""
    from idclab.data.datamodule import prepare_data
    from idclab.training.fit import make_model_and_data
    from idclab.training.trainer import make_trainer

    cfg = make_cfg(*overrides)
    validate_train_config(cfg)
    pl.seed_everything(cfg.seed)
    plan = plan_of(cfg)
    datamodule, classifier = make_model_and_data(plan, prepare_data(cfg.data, cfg.split))
    trainer, checkpoint = make_trainer(plan, Path(cfg.paths.output_dir), logger=False)
    recorder = Recorder()
    trainer.callbacks.append(recorder)
    trainer.fit(classifier, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, classifier, checkpoint, recorder


@pytest.mark.slow
def test_schedules_step_per_optimizer_step(make_cfg):
    _, _, _, cosine = fit(make_cfg, "optim.schedule=cosine", "optim.warmup_epochs=1")
    expected = [lr_factor(step, "cosine", 3, 6) * 1e-3 for step in range(6)]  # 2 epochs of 3 batches
    assert cosine.lrs == pytest.approx(expected)
    _, _, _, onecycle = fit(make_cfg, "optim.schedule=onecycle", "optim.warmup_epochs=1")
    assert int(np.argmax(onecycle.lrs)) == 2 and max(onecycle.lrs) == pytest.approx(1e-3)
    assert onecycle.lrs[0] == pytest.approx(1e-3 / 25)  # torch's div_factor


@pytest.mark.slow
def test_drw_defers_the_loss_weights_and_the_sampler_in_a_real_fit(make_cfg):
    trainer, _, _, recorder = fit(make_cfg, "loss=weighted", "sampler=undersample", "drw.start_epoch=1")
    assert recorder.weighting == [False] * 3 + [True] * 3
    sampler = trainer.train_dataloader.sampler.sampler
    assert isinstance(sampler, DeferredSampler) and sampler.balancing()


@pytest.mark.slow
def test_ema_checkpoints_hold_the_average_and_resume_from_the_training_weights(make_cfg):
    trainer, classifier, checkpoint, _ = fit(make_cfg, "averaging=ema")
    (ema,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
    last = torch.load(Path(checkpoint.dirpath) / "last.ckpt", weights_only=True)
    for key, value in ema.average.items():
        assert torch.equal(last["state_dict"][f"model.{key}"], value), key
        assert torch.equal(last[TRAINING_WEIGHTS][key], classifier.model.state_dict()[key]), key
    assert not torch.equal(ema.average["head.3.weight"], classifier.model.head[3].weight)
    from idclab.config.build import load_classifier

    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    averaged = saved["state_dict"]["model.head.3.weight"]
    assert not torch.equal(averaged, saved[TRAINING_WEIGHTS]["head.3.weight"])
    assert torch.equal(load_classifier(checkpoint.best_model_path).model.head[3].weight, averaged)  # evaluated
    resumed, classifier, _, _ = fit(make_cfg, "averaging=ema", "trainer.max_epochs=3",
                                    ckpt_path=str(Path(checkpoint.dirpath) / "last.ckpt"))
    assert resumed.current_epoch == 3 and [c for c in resumed.callbacks if isinstance(c, EMA)][0].updates == 9


@pytest.mark.slow
def test_swa_model_is_the_best_checkpoint(make_cfg):
    trainer, classifier, checkpoint, _ = fit(make_cfg, "averaging=swa", "trainer.max_epochs=3")
    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    assert saved["epoch"] == 3  # the extra batch-norm epoch after the 3 training epochs, validated
    for key, value in classifier.state_dict().items():
        assert torch.equal(saved["state_dict"][key], value), key
    assert checkpoint.best_model_score == trainer.callback_metrics["val_auprc"]
    assert SWA.pl_module_contains_batch_norm(nn.Linear(1, 1))  # models without batch norm get the epoch too


@pytest.mark.slow
def test_mixup_changes_what_a_real_fit_learns_and_only_in_training(make_cfg):
    _, plain, _, _ = fit(make_cfg, "model=ann", "augment=none")
    _, mixed, _, _ = fit(make_cfg, "model=ann", "augment=none", "mixup.alpha=0.4")
    assert mixed.mixup_alpha == 0.4 and plain.mixup_alpha == 0.0
    weights = [dict(m.model.named_parameters())["net.1.weight"] for m in (plain, mixed)]
    assert not torch.equal(*weights)  # same seed, same batches, no random augmentation: only the blends differ
    assert plain.trainer.callback_metrics["train_loss"] != mixed.trainer.callback_metrics["train_loss"]


@pytest.mark.slow
def test_early_stopping_stops_when_the_monitor_stalls(make_cfg):
    # the ANN has no batch norm and lr 1e-12 moves no float32 weight: val_auprc stays the same every epoch
    trainer, _, _, _ = fit(make_cfg, "model=ann", "optim.lr=1e-12", "early_stopping.patience=1",
                           "trainer.max_epochs=6")
    (stopping,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert stopping.stopped_epoch == 1 and trainer.current_epoch == 2


@pytest.mark.slow
def test_a_run_with_every_recipe_option_finishes(make_cfg):
    from test_train import runs_of

    from idclab.training.pipeline import train

    cfg = make_cfg("loss=logit_adjusted", "sampler=oversample", "drw.start_epoch=1", "averaging=ema",
                   "optim.schedule=onecycle", "model.residual=true", "mixup.alpha=0.2",
                   "report.bootstrap_resamples=10")
    train(cfg)
    (run,) = runs_of(cfg)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["loss"], params["averaging"], params["optim.schedule"]) == ("logit_adjusted", "ema", "onecycle")
    assert params["mixup.alpha"] == "0.2"  # logged with the run, as every option
    assert "test_auprc" in run.data.metrics
