"""idclab-compare: groups of runs that differ only in their seeds, ranked on validation, never creating a store."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from conftest import PROJECT
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from PIL import Image

from idclab.tracking.compare import (
    CompareError,
    answer,
    axis_limits,
    check_metric,
    main,
    markdown,
    project_tracking_uri,
    statistic_columns,
    summarise,
    summarise_sweep,
    varying_params,
)
from idclab.tracking.runs import KIND_TAG, PARENT_TAG

# (loss, seed): (best_val_auprc, test_f1). Validation ranks focal > bce > weighted; test F1 alone would not.
RESULTS = {("focal", 1): (0.90, 0.70), ("focal", 2): (0.92, 0.72), ("bce", 1): (0.85, 0.95),
           ("bce", 2): (0.87, 0.93), ("weighted", 1): (0.80, 0.80)}


def squeeze(text: str) -> str:
    """Markdown with the column padding collapsed."""
    return re.sub(r" +", " ", text)


def child(client: MlflowClient, experiment_id: str, parent: str, folder: str, loss: str, seed: int,
          status: str = "FINISHED") -> str:
    """A finished training run of a sweep, with params as train.py logs them."""
    run = client.create_run(experiment_id, run_name=f"loss={loss},seed={seed}",
                            tags={KIND_TAG: "train", PARENT_TAG: parent, "sweep": folder})
    params = {"model": "idcnet", "loss": loss, "sampler": "none", "seed": str(seed), "split.seed": "0",
              "trainer.max_epochs": "2", "paths.output_dir": f"{folder}/{loss}-{seed}"}
    if loss == "focal":
        params |= {"loss.alpha": "0.75", "loss.gamma": "2.0"}
    val, f1 = RESULTS.get((loss, seed), (0.5, 0.5))
    metrics = {"best_val_auprc": val, "test_f1": f1, "test_auprc": val - 0.05}
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def sweep(client: MlflowClient, experiment_id: str, folder: str) -> str:
    """A sweep's parent run."""
    run = client.create_run(experiment_id, run_name="sweep", tags={KIND_TAG: "sweep", "sweep": folder})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_store):
    """A project folder whose mlflow.db holds an old sweep and a newer one (with a failed child)."""
    tmp_path = tmp_path_factory.mktemp("project")
    uri = new_store(tmp_path)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("idc")
    old_folder = str(tmp_path / "multirun" / "old")
    old = sweep(client, experiment_id, old_folder)
    child(client, experiment_id, old, old_folder, "bce", 7)
    folder = str(tmp_path / "multirun" / "new")
    parent = sweep(client, experiment_id, folder)
    for loss, seed in RESULTS:
        child(client, experiment_id, parent, folder, loss, seed)
    child(client, experiment_id, parent, folder, "bce", 3, status="FAILED")
    return {"uri": uri, "client": client, "experiment_id": experiment_id, "parent": parent, "old": old,
            "root": tmp_path}


@pytest.mark.slow
def test_a_sweep_is_grouped_by_the_params_that_differ_and_ranked_on_validation(store):
    table, figure, best = summarise_sweep(store["client"], store["experiment_id"], store["parent"])
    assert list(table["loss"]) == ["focal", "bce", "weighted"]  # by best_val_auprc, not by test_f1
    assert [c for c in table.columns if not c.endswith(("_mean", "_std"))] == ["loss", "runs", "seeds"]
    assert list(table["runs"]) == [2, 2, 1] and table["seeds"].iloc[1] == "1 2"  # the failed run is left out
    assert table["best_val_auprc_mean"].iloc[0] == pytest.approx(0.91)
    assert table["best_val_auprc_std"].iloc[0] == pytest.approx(0.0141421, abs=1e-6)
    assert math.isnan(table["best_val_auprc_std"].iloc[2])
    assert best.run_name == "loss=focal,seed=2" and best.score == pytest.approx(0.92)
    assert isinstance(figure, Figure)


def test_runs_are_told_apart_by_their_options_not_by_their_data_records():
    """Cache keys and content digests are records of the data (absent from runs made before digests were)."""
    runs = pd.DataFrame({"params.loss": ["bce", "bce", "focal"], "params.seed": ["1", "2", "1"],
                         "params.data.cache_key": ["k1", "k2", "k2"], "params.data.content": [None, "c", "c"]})
    assert varying_params(runs) == ["loss"]


def test_markdown_shows_n_a_for_a_group_of_one(store):
    table, _, _ = summarise_sweep(store["client"], store["experiment_id"], store["parent"])
    text = squeeze(markdown(table))
    assert "| weighted | 1 | 1 | 0.800 ± n/a |" in text
    assert "| focal | 2 | 1 2 | 0.910 ± 0.014 |" in text
    assert "± 0.000" not in text and "ranked by best_val_auprc" in text


@pytest.mark.parametrize("metric", ["test_f1", "oof_auroc", "cv_test_auroc_mean"])
def test_groups_are_never_ranked_on_the_patients_they_report(metric):
    """Test and out-of-fold metrics are measured on the reported patients: ranking on them would select on test."""
    runs = pd.DataFrame({f"metrics.{metric}": [0.9], "metrics.best_val_auprc": [0.8]})
    with pytest.raises(CompareError, match=f"{metric} is not a validation metric"):
        check_metric(runs, metric)
    check_metric(runs, "best_val_auprc")


def test_axis_never_magnifies_differences_below_the_seed_spread():
    low, high = axis_limits(pd.Series([0.900, 0.902]), pd.Series([0.01, 0.01]))
    assert high - low >= 0.1 and low <= 0.89 and high >= 0.912
    low, high = axis_limits(pd.Series([0.5, 0.6]), pd.Series([0.2, 0.1]))
    assert 0.0 <= low <= 0.3 and 0.8 <= high <= 1.0 and high - low > 0.9


def test_tracking_uri_is_the_projects_store_whatever_the_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("IDCLAB_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_tracking_uri() == f"sqlite:///{PROJECT / 'mlflow.db'}"
    monkeypatch.setenv("IDCLAB_ROOT", str(tmp_path))
    assert project_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://host:5000")
    assert project_tracking_uri() == "http://host:5000"


def test_command_line_defaults_to_the_latest_sweep_and_writes_three_files(store, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    out = store["root"] / "cmp"
    main(["--out", str(out)])
    printed = squeeze(capsys.readouterr().out)
    assert "| focal |" in printed and "weighted" in printed and "best run" in printed
    frame = pd.read_csv(out / "comparison.csv")
    assert list(frame["loss"]) == ["focal", "bce", "weighted"] and math.isnan(frame["best_val_auprc_std"].iloc[2])
    assert "± n/a" in (out / "comparison.md").read_text()
    with Image.open(out / "comparison.png") as image:
        assert image.size[0] > 500


def test_sweep_by_relative_folder_or_parent_run_id(store, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(store["root"])
    main(["--sweep", "multirun/old", "--out", "a"])
    assert "| all runs | 1 | 7 | 0.500 ± n/a |" in squeeze(capsys.readouterr().out)  # one run: nothing differs
    main(["--sweep", store["old"], "--out", "b"])
    assert pd.read_csv(store["root"] / "b" / "comparison.csv")["seeds"].tolist() == [7]


def test_pooling_refuses_runs_that_differ_in_more_than_the_seed(store, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    with pytest.raises(SystemExit) as stop:
        main(["--pool", "--out", str(store["root"] / "x")])
    assert stop.value.code == 2
    assert "differ in more than the seed: loss" in capsys.readouterr().err
    main(["--pool", "--sweep", store["old"], "--out", str(store["root"] / "y")])
    assert "| all runs | 1 | 7 |" in squeeze(capsys.readouterr().out)


def test_a_missing_store_or_experiment_is_one_line_and_creates_nothing(store, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    missing_store = f"error: no MLflow store at sqlite:///{tmp_path / 'mlflow.db'}; train first (python train.py)"
    for root, args, message in [(tmp_path, [], missing_store),
                                (store["root"], ["--experiment", "nope"], "error: no MLflow experiment named 'nope'")]:
        monkeypatch.setenv("IDCLAB_ROOT", str(root))
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(message)
    assert "(experiments: Default, idc)" in line and store["client"].get_experiment_by_name("nope") is None
    assert list(tmp_path.iterdir()) == []


def runs_frame(rows: list[tuple[str, int, float]], key: str = "loss") -> pd.DataFrame:
    """MLflow's DataFrame of finished runs: (option, seed, best_val_auprc) each."""
    return pd.DataFrame({f"params.{key}": [r[0] for r in rows], "params.seed": [str(r[1]) for r in rows],
                         "metrics.best_val_auprc": [r[2] for r in rows], "run_id": [f"r{i}" for i in range(len(rows))]})


def test_a_sweep_answer_ranks_names_the_winner_and_says_one_seed_establishes_nothing():
    text = answer(summarise(runs_frame([("focal", 1, 0.9008), ("weighted", 1, 0.9000)])))
    assert text.splitlines()[:3] == ["Ranking by best_val_auprc (validation):", "  1. loss=focal: 0.901 ± n/a (1 run)",
                                     "  2. loss=weighted: 0.900 ± n/a (1 run)"]
    assert "Winner: loss=focal, ahead of loss=weighted by 0.0008." in text
    assert "Not established: one run per option" in text and "seed=1,2,3" in text and "study=NAME" in text


@pytest.mark.parametrize(("focal", "verdict"), [((0.90, 0.92), "Not separated: the gap (0.0100) is within the seeds' "
                                                 "spread (std up to 0.0141 over 2+ seeds)"),
                                                ((0.95, 0.96), "A lead, not a test: the gap (0.0550) exceeds")])
def test_with_seeds_the_gap_is_weighed_against_their_spread(focal, verdict):
    table = summarise(runs_frame([("focal", 1, focal[0]), ("focal", 2, focal[1]), ("bce", 1, 0.90),
                                  ("bce", 2, 0.90)]))
    assert verdict in answer(table) and answer(table) in markdown(table)


def test_a_single_configuration_has_nothing_to_rank():
    assert answer(summarise(runs_frame([("bce", 1, 0.9), ("bce", 2, 0.8)]))).endswith("One configuration: nothing "
                                                                                      "to rank.")


def test_a_studys_runs_are_grouped_by_strategy_and_its_verdict_decides():
    runs = runs_frame([("focal", 1, 0.9), ("focal", 2, 0.91), ("bce", 1, 0.8)], key="study.strategy")
    runs["params.loss"] = runs["params.study.strategy"]
    table = summarise(runs)
    assert list(table.columns[:3]) == ["study.strategy", "runs", "seeds"]
    assert answer(table).endswith("A study: its verdict (paired by seed, with a patient-bootstrap interval, by the "
                                  "rule fixed before its runs) decides, not this ranking.")


def test_a_cross_validated_study_reports_its_out_of_fold_figures_and_minutes_never_ranked_on_them():
    runs = runs_frame([("resnet18", 1, 0.91), ("resnet18", 2, 0.93), ("idcnet", 1, 0.91)], key="study.strategy")
    runs["metrics.oof_auroc"] = [0.95, 0.93, 0.80]  # would rank idcnet last, were it ranked on
    runs["metrics.oof_f1"] = [0.70, 0.72, 0.60]
    runs["metrics.test_f1"] = float("nan")  # no held-out test patients
    runs["start_time"] = pd.to_datetime(["2026-12-06 10:00", "2026-12-06 11:00", "2026-12-06 12:00"], utc=True)
    runs["end_time"] = runs["start_time"] + pd.to_timedelta([30, 40, 12], unit="min")
    table = summarise(runs, "best_val_auprc")
    assert list(table["study.strategy"]) == ["resnet18", "idcnet"]  # by validation
    assert statistic_columns(table) == ["best_val_auprc", "oof_auroc", "oof_f1", "minutes"]  # no empty test column
    assert table["oof_auroc_mean"].tolist() == pytest.approx([0.94, 0.80])
    text = squeeze(markdown(table))
    assert "| resnet18 | 2 | 1 2 | 0.920 ± 0.014 | 0.940 ± 0.014 | 0.710 ± 0.014 | 35.0 ± 7.1 |" in text
    assert "out-of-fold" in text and "train_minutes" not in text  # no such column: not explained


def test_the_training_minutes_of_resumed_runs_are_reported_beside_their_wall_clock():
    runs = runs_frame([("resnet18", 1, 0.91), ("idcnet", 1, 0.90)], key="study.strategy")
    runs["metrics.train_minutes"] = [50.0, 20.0]  # resnet18 resumed the next day: its wall clock holds the pause
    runs["start_time"] = pd.to_datetime(["2026-12-06 10:00", "2026-12-06 11:00"], utc=True)
    runs["end_time"] = runs["start_time"] + pd.to_timedelta([1500, 22], unit="min")
    table = summarise(runs, "best_val_auprc")
    assert statistic_columns(table) == ["best_val_auprc", "train_minutes", "minutes"]
    text = squeeze(markdown(table))
    assert "| resnet18 | 1 | 1 | 0.910 ± n/a | 50.0 ± n/a | 1500.0 ± n/a |" in text
    assert "train_minutes: the epochs' time" in text


def test_a_metric_is_ranked_in_its_own_direction():
    """Ranking a loss with --mode max would put the worst group first and call it the winner."""
    runs = pd.DataFrame({"params.loss": ["bce", "focal"], "params.seed": ["1", "1"],
                         "metrics.val_loss": [0.3, 0.5], "metrics.best_val_auprc": [0.8, 0.7]})
    with pytest.raises(CompareError, match="val_loss is better when lower: pass --mode min"):
        summarise(runs, "val_loss", "max")
    with pytest.raises(CompareError, match="best_val_auprc is better when higher: pass --mode max"):
        summarise(runs, "best_val_auprc", "min")
    assert list(summarise(runs, "val_loss", "min")["loss"]) == ["bce", "focal"]


def test_all_runs_or_one_sweep_not_both(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--all", "--sweep", "x"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_patch_split_winner_is_called_inflated_not_better():
    """In a comparison of splits the leaky one ranks first on validation: the answer says why."""
    runs = pd.DataFrame({"params.split": ["patches", "stratified"], "params.seed": ["1", "1"],
                         "metrics.best_val_auprc": [0.9, 0.8]})
    text = answer(summarise(runs))
    assert "Winner: split=patches" in text and "validates on patients it also trained on" in text
