"""Studies as configuration: the study is checked before any run, its jobs are strategy x seed, finished pairs are
skipped on a rerun, and the verdict lands on the parent run. A stand-in task replaces training (fast)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import CONF
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import HydraContext, RunMode
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from test_study_verdict import FLAT, PERFECT

from idclab.scoring.verdict import Rule
from idclab.tracking.compare import main as compare
from idclab.tracking.inputs import STRATEGY_TAG, STUDY_TAG
from idclab.tracking.runs import KIND_TAG, PARENT_TAG
from idclab.tracking.study import Study, StudyError, StudySweeper, check_arguments, check_unchanged, read_study
from idclab.tracking.sweep import read_parent

SMOKE = OmegaConf.to_container(OmegaConf.load(CONF / "study" / "smoke.yaml"))["study"]


def study_config(**changes: object) -> DictConfig:
    """The smoke study's node with `changes` (dotted keys) applied."""
    config = OmegaConf.create({"study": json.loads(json.dumps(SMOKE))})
    for key, value in changes.items():
        OmegaConf.update(config, f"study.{key}", value, merge=False)
    return config


@pytest.mark.parametrize(("changes", "message"), [
    ({"baseline": "ranking"}, "study.baseline: 'ranking' is not one of the strategies (bce, focal)"),
    ({"strategies": {"bce": []}}, "study.strategies: must map at least two strategy names"),
    ({"strategies": {"bce": [], "focal loss": ["loss=focal"]}}, "study.strategies: strategy names must be letters"),
    ({"strategies.focal": "loss=focal"}, "study.strategies.focal: must be a list of overrides"),
    ({"metric": "test_auroc"}, "study.metric: 'test_auroc' is not a validation metric"),
    ({"metric": "best_val_auprc"}, "study.metric: best_val_auprc cannot be recomputed from the runs' validation"),
    ({"metric": "val_model_auroc"}, "study.metric: val_model_auroc is measured on one split; with study.folds use"),
    ({"folds": None}, "study.metric: cv_val_pooled_auroc needs cross-validation (study.folds)"),
    ({"folds": 1}, "study.folds: must be null (one split) or an integer >= 2"),
    ({"seeds": [1, 1]}, "study.seeds: must be a list of distinct integers"),
    ({"rule.confidence": 95}, "study.rule.confidence: must be a number between 0 and 1"),
    ({"rule.margin": -0.01}, "study.rule.margin: must be a number >= 0"),
    ({"only": ["ranking"]}, "study.only: must be null or a list of the strategies"),
    ({"strategy": "focal"}, "study.strategy: is set per job by the study sweeper"),
])
def test_a_bad_study_names_its_key(changes, message):
    with pytest.raises(StudyError) as error:
        read_study(study_config(**changes))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(("arguments", "message"), [
    (["loss=focal,weighted"], "study.strategies: the command line sweeps loss"),
    (["seed=3"], "study.seeds: seed is set by the study"),
    (["loss=weighted"], "study.strategies.focal: loss is set by the study"),
    (["trainer.max_epochs=3"], "study.common: trainer.max_epochs is set by the study"),
])
def test_the_command_line_may_not_redo_what_the_study_fixes(arguments, message):
    with pytest.raises(StudyError, match=message):
        check_arguments(read_study(study_config()), arguments)
    check_arguments(read_study(study_config()), ["data.synthetic.n_patients=8", "study.only=[focal]"])


class ParamsClient:
    """Stands in for MlflowClient: one run with `params`."""

    def __init__(self, params: dict[str, str]):
        self.params = params

    def get_run(self, run_id: str) -> SimpleNamespace:
        return SimpleNamespace(data=SimpleNamespace(params=self.params))


def test_a_reopened_study_compares_its_command_line_as_a_set_of_settings():
    client = ParamsClient({"study.arguments": "data=idc data.root=/pool cv.seed=0", "study.metric": "m"})
    check_unchanged(client, "p", {"study.arguments": "cv.seed=0 data.root=/pool data=idc", "study.metric": "m"})
    with pytest.raises(StudyError, match="study.arguments: the rule is fixed once a study has runs"):
        check_unchanged(client, "p", {"study.arguments": "data=idc data.root=/elsewhere cv.seed=0"})
    check_unchanged(ParamsClient({"study.metric": "m"}), "p", {"study.arguments": "x=1", "study.metric": "m"})  # older


@pytest.mark.parametrize(("changes", "message"), [
    ({"common": ["cv.folds=5"]}, "study.common: cv.folds is set per job by the study (study.folds)"),
    ({"strategies.focal": ["loss=focal", "seed=7"]}, "study.strategies.focal: seed is set per job by the study "
                                                     "(study.seeds)"),
])
def test_a_study_file_may_not_set_what_the_study_sets_per_job(changes, message):
    """The study appends its own seed and folds to each job's overrides: the file's would be silently overridden."""
    with pytest.raises(StudyError, match=re.escape(message)):
        check_arguments(read_study(study_config(**changes)), [])


def test_jobs_are_strategies_times_seeds_with_the_study_overrides_last():
    study = Study("s", "bce", {"bce": [], "focal": ["loss=focal"]}, [1, 2], 2, ["trainer.max_epochs=1"],
                  "cv_val_pooled_auroc", Rule(), only=["focal"])
    assert study.jobs() == [("focal", 1), ("focal", 2)]
    assert study.overrides(["data=idc"], "focal", 2) == ["data=idc", "trainer.max_epochs=1", "loss=focal",
                                                         "study.strategy=focal", "seed=2", "cv.folds=2"]
    assert Study(**{**study.__dict__, "only": None, "folds": None}).overrides([], "bce", 1)[-1] == "cv.folds=null"
    fixed = study.fixed(["study=s", "study.only=[focal]", "data=idc"])
    assert fixed["study.arguments"] == "data=idc" and fixed["study.rule.margin"] == "0.0"  # `only` may change


# -- the sweeper, in process: a stand-in task logs what a training run would, without training ------------------

STOP_AT: set[tuple[str, int]] = set()  # (strategy, seed) jobs the stand-in stops at, as Ctrl-C would
DATA: dict[tuple[str, int], str] = {}  # the data content digest a job logs, if not "same"


def stand_in(cfg: DictConfig) -> float:
    """A study job's MLflow record: a finished training run under the sweep's parent, tagged with its strategy,
    with validation predictions (focal ranks perfectly, bce not at all) and the decision metric."""
    strategy, seed = cfg.study.strategy, cfg.seed
    if (strategy, seed) in STOP_AT:
        raise KeyboardInterrupt
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id
    tags = {KIND_TAG: "train", PARENT_TAG: read_parent(HydraConfig.get().sweep.dir), STUDY_TAG: cfg.study.name,
            STRATEGY_TAG: strategy}
    run = client.create_run(experiment, run_name=f"{strategy} {seed}", tags=tags).info.run_id
    predictions = PERFECT if strategy == "focal" else FLAT
    client.log_text(run, predictions.to_csv(index=False), "cv/val_predictions.csv")
    client.log_batch(run, metrics=[Metric("cv_val_pooled_auroc", 1.0 if strategy == "focal" else 0.5, 0, 0)],
                     params=[Param("seed", str(seed)), Param("study.strategy", strategy), Param("loss", strategy),
                             Param("data.content", DATA.get((strategy, seed), "same"))])
    client.set_terminated(run, "FINISHED")
    return 0.0


def multirun(root: Path, *overrides: str) -> None:
    """`python train.py -m study=smoke ...` in this process, into `root`, with the stand-in task."""
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=create_config_search_path(str(CONF)))
    try:
        hydra.multirun(config_name="train", task_function=stand_in, with_log_configuration=False,
                       overrides=["study=smoke", f"paths.root={root}", f"logger.tracking_uri=sqlite:///{root}/db",
                                  "hydra/job_logging=none", "hydra/hydra_logging=none", *overrides])
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # other tests see no Hydra run


def study_runs(root: Path) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(f"sqlite:///{root}/db")
    runs = client.search_runs([client.get_experiment_by_name("study-smoke").experiment_id])
    return (client, [r for r in runs if r.data.tags[KIND_TAG] == "sweep"],
            [r for r in runs if r.data.tags[KIND_TAG] == "train"])


@pytest.fixture
def root(tmp_path, new_store):
    new_store(tmp_path)
    (tmp_path / "mlflow.db").rename(tmp_path / "db")
    STOP_AT.clear()
    DATA.clear()
    return tmp_path


@pytest.mark.parametrize(("override", "message"), [
    ("study.strategies.focal=['loss=nope']", "error: study.strategies.focal: In 'train': Could not find 'loss/nope'; "
                                             "Available options in 'loss': bce, class_balanced, focal,"),
    ("study.strategies.focal=['trainer.max_epoch=1']", "error: study.strategies.focal: Could not override "
                                                     "'trainer.max_epoch'"),
    ("study.strategies.focal=['loss=bce']", "error: study.strategies.focal: composes to the same config as strategy "
                                          "bce"),
    ("study.strategies.focal=['optim.lr=-1']", "error: study.strategies.focal: optim.lr must be a number > 0"),
    ("study.metric=oof_auroc", "error: study.metric: 'oof_auroc' is not a validation metric"),
])
def test_a_bad_study_exits_2_with_one_line_before_any_run(root, capsys, override, message):
    with pytest.raises(SystemExit) as stop:
        multirun(root, override)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(message), line
    client = MlflowClient(f"sqlite:///{root}/db")
    assert client.get_experiment_by_name("study-smoke") is None  # no experiment, no parent run, no job


def test_a_study_runs_its_jobs_skips_finished_pairs_and_logs_its_verdict(root, capsys, monkeypatch):
    STOP_AT.add(("focal", 2))  # the study is stopped in its last job
    with pytest.raises(KeyboardInterrupt):
        multirun(root)
    client, (parent,), runs = study_runs(root)
    assert parent.info.status == "KILLED" and parent.data.params["study.baseline"] == "bce"
    assert sorted((r.data.tags[STRATEGY_TAG], r.data.params["seed"]) for r in runs) == [
        ("bce", "1"), ("bce", "2"), ("focal", "1")]
    assert parent.data.tags["study.verdict.focal"] == "incomplete"

    STOP_AT.clear()
    capsys.readouterr()
    multirun(root)  # the same command again: only the missing job runs, under the same parent
    printed = capsys.readouterr().out
    assert "3 job(s) already finished, skipped: bce seed 1, bce seed 2, focal seed 1" in printed
    assert "1 job(s) to run" in printed and "**focal better than bce.**" in printed
    assert "idclab-compare --experiment study-smoke" in printed
    client, (parent,), runs = study_runs(root)
    assert len(runs) == 4 and parent.info.status == "FINISHED"
    assert parent.data.tags["study.verdict.focal"] == "better"
    assert parent.data.tags["mlflow.note.content"].startswith("# Study smoke: focal better than bce")
    verdict = client.download_artifacts(parent.info.run_id, "study/verdict.csv", str(root))
    assert Path(verdict).read_text().splitlines()[1].startswith("focal,cv_val_pooled_auroc,0.5,0.5,0.5,0.5,0.5,better")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/db")
    compare(["--experiment", "study-smoke", "--out", str(root / "cmp")])  # idclab-compare shows the verdict
    assert "**focal better than bce.**" in capsys.readouterr().out
    assert "| focal " in (root / "cmp" / "comparison.md").read_text()

    with pytest.raises(SystemExit) as stop:  # the rule is fixed once the study has runs
        multirun(root, "study.rule.margin=0.01")
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: study.rule.margin: the rule is fixed once a study has runs (parent run {parent.info.run_id}: "
        "'0.0', now '0.01'); give the changed study a new study.name")


def test_a_study_whose_data_changed_between_its_jobs_gives_no_verdict(root, capsys):
    """The data under a study's data.root was replaced between two sessions: the verdict would pool runs of two data
    sets, so there is none, and the parent run and the printed result say why."""
    STOP_AT.add(("focal", 2))
    with pytest.raises(KeyboardInterrupt):
        multirun(root)
    STOP_AT.clear()
    DATA[("focal", 2)] = "0123456789abcdef"
    capsys.readouterr()
    multirun(root)
    printed = capsys.readouterr().out
    assert ("No verdict: the study's runs trained on different data (data.content same for bce seed 1, bce seed 2, "
            "focal seed 1; 0123456789ab for focal seed 2)") in printed
    _, (parent,), _ = study_runs(root)
    assert parent.data.tags["study.verdict.focal"] == "no verdict (different data)"
    assert "different data" in parent.data.tags["mlflow.note.content"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(path.stem for path in (CONF / "study").glob("*.yaml")))
def test_every_study_in_conf_checks_out(name, tmp_path):
    """Every strategy of every declared study composes and validates (on the synthetic default, which needs no data
    root), and no two compose alike."""
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=create_config_search_path(str(CONF)))
    try:
        config = hydra.compose_config("train", [f"study={name}", f"paths.root={tmp_path}"], run_mode=RunMode.MULTIRUN)
        sweeper = StudySweeper()
        sweeper.config, sweeper.hydra_context = config, HydraContext(config_loader=hydra.config_loader, callbacks=None)
        HydraConfig.instance().set_config(config)
        study, arguments = read_study(config), list(config.hydra.overrides.task)
        check_arguments(study, arguments)
        sweeper.check_configs(study, arguments)
        assert config.logger.experiment_name == f"study-{name}" and study.baseline in study.strategies
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
