"""Configs that cannot work fail before any work, with one line naming the key."""

from __future__ import annotations

import pytest

from idclab.config.validation import ConfigError, config_warnings, validate_evaluate_config, validate_train_config
from idclab.training.pipeline import train

BAD = [
    ("optim.lr=-0.001", "optim.lr must be a number > 0"),
    ("optim.lr=abc", "optim.lr must be a number > 0, got 'abc'"),
    ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
    ("data.batch_size=1.5", "data.batch_size must be an integer >= 1"),
    ("split.train=0.8", "split.train + split.val + split.test must sum to 1, got 1.1"),
    ("split.val=-0.1", "split.val must be a fraction"),
    ("loss=focal loss.alpha=1.5", "loss.alpha must be a number in [0, 1]"),
    ("loss=focal loss.gamma=-1", "loss.gamma must be a number >= 0"),
    ("loss=weighted loss.pos_weight=0", "loss.pos_weight must be null or a number > 0"),
    ("model.dropout=1.0", "model.dropout must be a number in [0, 1)"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1"),
    ("data.synthetic.min_grid=9 data.synthetic.max_grid=4", "data.synthetic.min_grid (9) must be <= max_grid (4)"),
    ("checkpoint.mode=best", "checkpoint.mode must be min or max"),
    ("report.heatmap_patients=-1", "report.heatmap_patients must be an integer >= 0 or a list of patient ids"),
    ("report.heatmap_patients=[8975,[1]]", "report.heatmap_patients must be an integer >= 0 or a list of patient"),
    ("split=external", "split.root must name the second site's data root"),
    ("data.strict=maybe", "data.strict must be true or false"),
    ("data.root=/tmp", "data.root is read with data=idc; data=synthetic generates its patches"),
    ("trainer.fast_dev_run=true ensemble.members=2", "trainer.fast_dev_run saves no checkpoint: ensemble.members=2"),
    ("trainer.fast_dev_run=true cv.folds=3", "trainer.fast_dev_run saves no checkpoint: cv.folds=3"),
    ("cv.folds=1", "cv.folds must be null or an integer >= 2"),
    ("cv.val=1.5", "cv.val must be a fraction in (0, 1) or next_fold"),
    ("cv.val=0", "cv.val must be a fraction in (0, 1) or next_fold"),
    ("cv.val=previous", "cv.val must be a fraction in (0, 1) or next_fold"),
    ("cv.seed=x", "cv.seed must be an integer"),
    ("cv.folds=2 cv.val=next_fold", "cv.val=next_fold needs cv.folds >= 3"),
    ("cv.folds=5 cv.train_patients=0", "cv.train_patients must be a fraction in (0, 1]"),
    ("cv.folds=5 cv.train_patients=1.5", "cv.train_patients must be a fraction in (0, 1]"),
    ("cv.folds=5 cv.train_patches=0", "cv.train_patches must be a fraction in (0, 1]"),
    ("cv.train_patients=0.5", "cv.train_patients=0.5 thins each fold's training data: set cv.folds"),
    ("cv.train_patches=0.5", "cv.train_patches=0.5 thins each fold's training data: set cv.folds"),
    ("threshold=sensitivity threshold.target_sensitivity=1.5", "threshold.target_sensitivity must be a number in"),
    ("threshold=sensitivity threshold.target_sensitivity=0", "threshold.target_sensitivity must be a number in"),
    ("threshold.name=magic", "threshold.name must be one of fixed, max_f1, youden, sensitivity"),
    ("threshold=fixed threshold.value=1.5", "threshold.value must be a number in [0, 1]"),
    ("context=neighbours context.weight=1", "context.weight must be null (tuned) or a number in [0, 1)"),
    ("context=neighbours context.radius=0", "context.radius must be an integer from 1 to 5"),
    ("context=neighbours context.radius=6", "context.radius must be an integer from 1 to 5"),
    ("context.name=blur", "context.name must be none or neighbours"),
    ("logger.system_metrics_interval=0", "logger.system_metrics_interval must be null or a number of seconds > 0"),
    ("trainer.precision=bf16-true", "trainer.precision must be one of 32-true, 32, 16-mixed, 16, bf16-mixed, bf16"),
    ("trainer.precision=64-true", "trainer.precision must be one of 32-true"),
    ("data.neighbourhood=4", "data.neighbourhood must be an integer from 0 to 3"),
    ("data.neighbourhood=-1", "data.neighbourhood must be an integer from 0 to 3"),
    ("data.neighbourhood=[1,1]", "data.neighbourhood must be an integer from 0 to 3"),
    ("data.neighbourhood=[1,4]", "data.neighbourhood must be an integer from 0 to 3"),
    ("data.neighbourhood=1 augment=stain", "augment=stain jitters the colours of one 3-channel patch"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_impossible_values_are_named(make_cfg, overrides, message, tmp_path):
    cfg = make_cfg(*overrides.split())
    with pytest.raises(ConfigError) as error:
        validate_train_config(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError):
        train(cfg)  # train validates first: no data generated, no run created
    assert not (tmp_path / "mlflow.db").exists()


def test_defaults_are_valid(make_cfg):
    validate_train_config(make_cfg(tiny=False))
    validate_evaluate_config(make_cfg(config_name="evaluate"))


def test_evaluate_values_are_checked(make_cfg):
    with pytest.raises(ConfigError, match="select.mode must be min or max"):
        validate_evaluate_config(make_cfg("select.mode=highest", config_name="evaluate"))
    with pytest.raises(ConfigError, match="trainer.precision must be one of 32-true"):
        validate_evaluate_config(make_cfg("trainer.precision=16-true", config_name="evaluate"))
    with pytest.raises(ConfigError, match="report.heatmap_patients must be an integer >= 0"):
        validate_evaluate_config(make_cfg("report.heatmap_patients=-2", config_name="evaluate"))
    validate_evaluate_config(make_cfg("report.heatmap_patients=[8975,'9036']", config_name="evaluate"))


@pytest.mark.parametrize("metric", ["test_auroc", "oof_auroc", "cv_test_f1_mean", "train_loss"])
def test_evaluate_selects_only_on_validation_metrics(make_cfg, metric):
    """The best run is chosen on validation; a test or out-of-fold metric would select on the reported patients."""
    with pytest.raises(ConfigError, match="select.metric must be a validation metric") as error:
        validate_evaluate_config(make_cfg(f"select.metric={metric}", config_name="evaluate"))
    assert "\n" not in str(error.value)
    for metric in ("best_val_auprc", "cv_val_pooled_auroc"):
        validate_evaluate_config(make_cfg(f"select.metric={metric}", config_name="evaluate"))
    validate_evaluate_config(make_cfg("select.metric=val_loss", "select.mode=min", config_name="evaluate"))


@pytest.mark.parametrize(("overrides", "message"), [
    ("tta=no", "tta must be true or false, got 'no'"),
    ("verbose=1", "verbose must be true or false, got 1"),
    ("register.name=bad/name:x", "register.name must be null or a model name without '/' or ':'"),
    ("register.name=''", "register.name must be null or a model name"),
    ("register.name=idc register.alias=latest", "register.alias must be an alias other than 'latest' or 'v<N>'"),
    ("register.name=idc register.alias=v3", "register.alias must be an alias other than 'latest' or 'v<N>'"),
    ("register.name=idc tta=true", "register.name registers the training run's model, without TTA"),
    ("select.metric=val_loss", "select.metric=val_loss is better when lower: add select.mode=min"),
    ("select.metric=val_fp", "select.metric=val_fp is better when lower: add select.mode=min"),
    ("select.mode=min", "select.metric=best_val_auprc is better when higher: drop select.mode=min"),
    ("ckpt_path=a.ckpt model_uri=runs:/x/model", "ckpt_path and model_uri both name a model: keep one"),
    ("+trainer.foo=1", "trainer.foo is not an option of Lightning's Trainer"),
])
def test_evaluate_options_that_cannot_mean_what_they_say_are_refused(make_cfg, overrides, message):
    """Each would otherwise be read differently than written (`tta=no` as on, a loss maximised), or fail after
    the model was registered or its evaluation run opened."""
    with pytest.raises(ConfigError) as error:
        validate_evaluate_config(make_cfg(*overrides.split(), config_name="evaluate"))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("overrides", "message"), [
    ("checkpoint.monitor=val_loss", "checkpoint.monitor=val_loss is better when lower: add checkpoint.mode=min"),
    ("+trainer.foo=1", "trainer.foo is not an option of Lightning's Trainer"),
    ("+trainer.strategy=ddq", "trainer.accelerator=auto, trainer.strategy=ddq: "),
    ("checkpoint.monitor=val_aurpc", "checkpoint.monitor=val_aurpc is not a metric a run logs on its validation "
                                     "patients each epoch: one of val_accuracy, "),
    ("checkpoint.monitor=test_auprc", "checkpoint.monitor=test_auprc is not a metric a run logs on its validation"),
    ("checkpoint.monitor=train_auprc", "checkpoint.monitor=train_auprc is not a metric a run logs on its validation"),
    ("+trainer.logger=false", "trainer.logger is set by idclab"),
    ("+trainer.callbacks=[]", "trainer.callbacks is set by idclab"),
    ("+trainer.default_root_dir=/tmp/x", "trainer.default_root_dir is set by idclab"),
    ("+trainer.enable_checkpointing=false", "trainer.enable_checkpointing is set by idclab"),
    ("drw.start_epoch=2", "drw.start_epoch=2 defers the class weights of the loss or a balancing sampler: loss=bce "
                          "has none and sampler=none"),
    ("drw.start_epoch=3 loss=weighted", "drw.start_epoch (3) must be < trainer.max_epochs (2)"),
])
def test_train_options_lightning_or_the_metric_would_refuse_are_refused_first(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_train_config(make_cfg(*overrides.split()))
    assert message in str(error.value) and "\n" not in str(error.value)
    validate_train_config(make_cfg("checkpoint.monitor=val_loss", "checkpoint.mode=min"))
    validate_train_config(make_cfg("checkpoint.monitor=val_balanced_accuracy", "drw.start_epoch=1", "loss=focal"))
    validate_train_config(make_cfg("drw.start_epoch=1", "sampler=weighted"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is there")
def test_a_gpu_trainer_without_a_gpu_is_refused_in_one_line(make_cfg):
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu: ") as error:
        validate_train_config(make_cfg("trainer=gpu"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("devices", ["trainer.devices=2", "+trainer.num_nodes=2", "trainer.devices=auto"])
def test_evaluate_runs_on_one_device(make_cfg, devices):
    """Under DDP every process would run all of evaluate.py (two evaluation runs, a TTA threshold tuned on part of
    the validation patients): one line, before any work. devices=auto is refused unless the accelerator is the CPU."""
    with pytest.raises(ConfigError, match="evaluate.py runs on one device") as error:
        validate_evaluate_config(make_cfg(devices, config_name="evaluate"))
    assert "\n" not in str(error.value)
    validate_evaluate_config(make_cfg("trainer.devices=auto", "trainer.accelerator=cpu", config_name="evaluate"))


def test_a_leaky_split_with_a_neighbourhood_view_is_flagged(make_cfg):
    """split=patches puts one slide's patches in train and test; a neighbourhood view then also shows each training
    patch the pixels of test patches around it."""
    (warning,) = config_warnings(make_cfg("split=patches", "data.neighbourhood=1"))
    assert "split=patches" in warning and "data.neighbourhood=1" in warning
    assert config_warnings(make_cfg("split=patches")) == []
    assert config_warnings(make_cfg("data.neighbourhood=1")) == []
    assert len(config_warnings(make_cfg("sampler=oversample", "loss=weighted"))) == 1  # double correction too
